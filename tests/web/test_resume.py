"""The page brings a call back on a new connection when its network changes.

Real Chromium in its own namespace calls `rtc-agent serve` in another, joined by
two links (tests/web/roaming.py). Mid-call the browser's address is deleted and
another given on the other link (as a phone leaving Wi-Fi for the cellular
network), or a second link comes up before the first goes: the page must notice,
post a resume with a new offer, and carry the same call on, conversation and
all, within 3 s of the new path existing; and give up clearly when the server
no longer holds the call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import artifact_path, csp_violations, watch_csp
from tests.web.roaming import Roaming
from tests.web.test_call import QUESTION_WORDS, dial, final
from tests.web.test_page import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
RECONNECT_BUDGET_MS = 3000  # the issue's: reconnected within 3 s of the new path existing


def open_call(stack: Roaming, browser_factory: Any, audio: Path, query: str = "?raw=1") -> Any:
    browser = browser_factory(stack, audio=audio, args=stack.browser_args())
    return dial(watch_csp(browser.new_page(viewport=DESKTOP)), stack, query)


def now_ms(page: Any) -> float:
    return float(page.evaluate("performance.now()"))


def wait_resumed(page: Any, stack: Roaming, n: int, timeout_s: float = 15) -> dict:
    """The page's n-th finished resume (1-based), which must have succeeded."""
    try:
        wait_for(page, f"rtcAgent.resumes.length >= {n}", timeout_s, f"resume {n}")
    except AssertionError:
        print("resume in progress:", page.evaluate("rtcAgent.resume"))
        print(stack.server_log()[-4000:])
        raise
    record = page.evaluate(f"rtcAgent.resumes[{n - 1}]")
    assert record["outcome"] == "resumed", record
    return record


def chat_items(page: Any) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#chat > li.msg')].map(li => "
                         "li.dataset.role + ': ' + li.querySelector('.text').textContent)")


def test_a_call_follows_the_browser_to_a_new_network(
    roaming_factory: Any, browser_factory: Any, question_wav: Path
) -> None:
    stack = roaming_factory()
    page = open_call(stack, browser_factory, question_wav)
    call_id = page.evaluate("rtcAgent.callId")
    wait_for(page, final("assistant"), 60, "the first answer")
    before = chat_items(page)
    page.evaluate("window.__playback = document.querySelector('#remote').srcObject")

    # 1. Wi-Fi gone, then the cellular network: the address goes, the page
    # notices, and a new address on another subnet brings the call back.
    lost = now_ms(page)
    stack.leave()
    wait_for(page, "rtcAgent.state === 'resuming'", 5, "the page to notice")
    noticed = page.evaluate("rtcAgent.resume.noticedAt") - lost
    assert page.inner_text("#state") == "Reconnecting…"
    assert "reconnecting" in page.inner_text("#agent-label").lower()
    assert page.is_disabled("#text")
    page.screenshot(path=str(artifact_path("desktop-1280x800-reconnecting.png")))
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(artifact_path("phone-390x844-reconnecting.png")))
    page.set_viewport_size(DESKTOP)
    assert page.evaluate("rtcAgent.state") == "resuming"  # still: no path yet
    stack.join("b")
    new_path = now_ms(page)
    first = wait_resumed(page, stack, 1)
    took = first["resumedAt"] - new_path
    print(f"switch 1 (break, then make): noticed {noticed:.0f} ms after the loss ({first['why']}); "
          f"resumed {took:.0f} ms and audio {first['audioAt'] - new_path:.0f} ms after the new "
          f"path; attempts {first['attempts']}")
    assert took < RECONNECT_BUDGET_MS, first
    assert first["audioAt"] - new_path < RECONNECT_BUDGET_MS, first

    # the same call, the same conversation, the server's state on the pill again
    assert page.evaluate("rtcAgent.callId") == call_id
    health = stack.healthz()
    assert health["calls"] == 1 and health["calls_total"] == 1, health
    assert chat_items(page)[: len(before)] == before
    wait_for(page, "rtcAgent.state !== 'resuming' && rtcAgent.state !== 'connection_lost'", 5)
    assert page.inner_text("#state") != "Reconnecting…"
    wait_for(page, "!document.querySelector('#text').disabled", 5, "the text input again")
    assert page.locator("#chat .note").last.inner_text().startswith("Reconnected after")
    stats = page.evaluate("rtcAgent.stats()")
    assert stats["localAddress"].startswith(stack.browser_ip("b")), stats

    # 2. The route switched to a second link that was already up: nothing tells
    # the page but the silence, and the call moves over.
    stack.join("a")
    time.sleep(2)  # Chromium lists a new network ~1.5 s after it appears
    lost = now_ms(page)
    stack.leave("b")
    second = wait_resumed(page, stack, 2)
    took = second["resumedAt"] - lost
    print(f"switch 2 (make, then break): noticed {second['noticedAt'] - lost:.0f} ms after the "
          f"loss ({second['why']}); resumed {took:.0f} ms after it, "
          f"{second['resumedAt'] - second['noticedAt']:.0f} ms after noticing")
    assert took < RECONNECT_BUDGET_MS, second
    assert page.evaluate("rtcAgent.callId") == call_id
    assert chat_items(page)[: len(before)] == before

    # the microphone was not asked for again, and the agent plays in the same
    # <audio> element and stream as before (no new tap needed on iOS)
    assert page.evaluate("document.querySelector('#remote').srcObject === window.__playback")
    assert page.evaluate("!document.querySelector('#remote').paused")

    # 3. The next spoken question is answered, and heard.
    users = page.evaluate(final("user"))
    answers = page.evaluate(final("assistant"))
    page.evaluate("rtcAgent.remotePeak = 0")
    try:
        wait_for(page, f"{final('user')} > {users}", 45, "the next spoken question")
        wait_for(page, f"{final('assistant')} > {answers}", 45, "its answer")
        wait_for(page, "rtcAgent.remotePeak > 0.02", 20, "the answer's audio")
    except AssertionError:
        print(stack.server_log()[-4000:])
        raise
    question = page.evaluate(
        "rtcAgent.transcripts.filter(t => t.role === 'user' && t.final).at(-1)")
    assert any(w in question["text"].lower() for w in QUESTION_WORDS), question
    health = stack.healthz()
    assert health["calls"] == 1 and health["calls_total"] == 1, health
    assert csp_violations(page) == []
    page.click("#call")
    wait_for(page, "rtcAgent.state === 'ended'", 5)
    deadline = time.monotonic() + 10
    while stack.healthz()["calls"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.healthz()["calls"] == 0


def test_a_relay_only_call_resumes_through_coturn(
    roaming_factory: Any, browser_factory: Any, question_wav: Path
) -> None:
    stack = roaming_factory(turn=True)
    page = open_call(stack, browser_factory, question_wav, "?raw=1&relay=1")
    stats = page.evaluate("rtcAgent.stats()")
    assert stats["localCandidateType"] == "relay", stats
    assert stats["localAddress"].startswith(stack.turn_ip), stats
    call_id = page.evaluate("rtcAgent.callId")
    wait_for(page, final("assistant"), 60, "the first answer")
    before = chat_items(page)

    stack.leave()
    wait_for(page, "rtcAgent.state === 'resuming'", 5, "the page to notice")
    stack.join("b")
    new_path = now_ms(page)
    record = wait_resumed(page, stack, 1)
    took = record["resumedAt"] - new_path
    print(f"relay: resumed {took:.0f} ms after the new path; attempts {record['attempts']}")
    assert took < RECONNECT_BUDGET_MS, record
    # a new allocation, from the new address, still relay-only
    stats = page.evaluate("rtcAgent.stats()")
    assert stats["localCandidateType"] == "relay", stats
    assert stats["localAddress"].startswith(stack.turn_ip), stats
    assert page.evaluate("rtcAgent.callId") == call_id
    assert chat_items(page)[: len(before)] == before

    answers = page.evaluate(final("assistant"))
    page.evaluate("rtcAgent.remotePeak = 0")
    try:
        wait_for(page, f"{final('assistant')} > {answers}", 45, "the next question's answer")
        wait_for(page, "rtcAgent.remotePeak > 0.02", 20, "its audio over the new relay")
    except AssertionError:
        print(stack.server_log()[-4000:])
        raise
    assert stack.healthz()["calls_total"] == 1
    page.click("#call")


def test_past_the_window_the_page_gives_up_clearly(
    roaming_factory: Any, browser_factory: Any, silence_wav: Path
) -> None:
    """With a 2 s resume window: a network that does not come back ends the call on
    the page at the window's end; one that comes back after the server ended the
    call gets its 404, whose message the page shows. The chat stays both times."""
    stack = roaming_factory(args=["--resume-window-s", "2"])
    assert stack.server_ns.get_json(f"http://127.0.0.1:{stack.port}/config")["resumeWindowS"] == 2
    page = open_call(stack, browser_factory, silence_wav)
    wait_for(page, "!document.querySelector('#text').disabled", 10, "the text input")
    page.fill("#text", "what is six times seven")
    page.press("#text", "Enter")
    wait_for(page, final("assistant"), 30, "the typed question's answer")
    before = chat_items(page)
    # the server's `usage` after the response, shown in the diagnostics
    usage = wait_for(page, "rtcAgent.usage", 10, "a usage message")
    assert usage["tokens"]["output_text"] > 0, usage
    wait_for(page, "/^in \\d[\\d,]* · out \\d[\\d,]* tokens/.test("
                   "document.querySelector('[data-k=usage]').textContent)", 5, "the usage row")
    # the page pings every second and the server answers
    assert page.evaluate("rtcAgent.pongs") >= 1
    assert 0 <= page.evaluate("rtcAgent.channelRttMs") < 1000
    assert not any(m["type"] == "ping" for m in page.evaluate("rtcAgent.sent"))

    # 1. The network does not come back: the page stops at the window's end.
    lost = now_ms(page)
    stack.leave()
    wait_for(page, "rtcAgent.state === 'resuming'", 5, "the page to notice")
    wait_for(page, "rtcAgent.state === 'ended'", 20, "the page to give up")
    gave_up = page.evaluate("rtcAgent.resumes.at(-1)")
    print(f"gave up {gave_up['gaveUp'] - lost:.0f} ms after the loss; attempts "
          f"{gave_up['attempts']}")
    assert gave_up["outcome"] == "gave up" and gave_up["notice"] == "resume-failed", gave_up
    # the server's window (2 s) from its notice (2 s), and the page's grace (5 s)
    assert 8500 < gave_up["gaveUp"] - lost < 11000, gave_up
    notice = page.inner_text("#notice")
    assert page.get_attribute("#notice", "data-kind") == "resume-failed"
    assert notice.startswith("Could not reconnect") and "within the 2 s" in notice, notice
    assert page.inner_text("#state") == "Call ended"
    assert page.inner_text("#call") == "Call"
    assert chat_items(page)[: len(before)] == before  # the conversation stays
    page.screenshot(path=str(artifact_path("desktop-1280x800-resume-gave-up.png")))
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(artifact_path("phone-390x844-resume-gave-up.png")))
    page.set_viewport_size(DESKTOP)

    # 2. A new call; its network comes back only after the server gave the call
    # up: the resume is answered 404 and the page says the call has ended.
    stack.join("a")
    time.sleep(2)  # Chromium lists the network again
    page.click("#call")
    wait_for(page, "rtcAgent.events.filter(e => e.type === 'session.ready').length === 2", 30,
             "the second call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", 10)
    stack.leave()
    wait_for(page, "rtcAgent.state === 'resuming'", 5, "the page to notice")
    deadline = time.monotonic() + 10
    while stack.healthz()["calls"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.healthz()["calls"] == 0, "the server did not end the call"
    assert "did not come back" in stack.server_log()
    stack.join("b")
    wait_for(page, "rtcAgent.state === 'ended'", 10, "the page to give up")
    refused = page.evaluate("rtcAgent.resumes.at(-1)")
    print("refused:", refused)
    assert refused["outcome"] == "gave up", refused
    assert any(a.get("error") == "HTTP 404 call_ended" for a in refused["attempts"]), refused
    notice = page.inner_text("#notice")
    assert page.get_attribute("#notice", "data-kind") == "resume-failed"
    assert "already ended" in notice and "This call has ended; start a new one." in notice, notice
    assert chat_items(page)[: len(before)] == before
    # (the second call said nothing, so it leaves no divider behind)
    assert page.locator("#chat .divider").count() == 1
    page.screenshot(path=str(artifact_path("desktop-1280x800-resume-refused.png")))
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(artifact_path("phone-390x844-resume-refused.png")))
    assert csp_violations(page) == []
