"""End to end: headless Chromium calls `rtc-agent serve` on the offline backend.

The fake microphone plays a piper-spoken question; the page must show both
sides' transcripts, receive audible reply audio (AnalyserNode), answer a typed
message, and free the server's slot on hang-up. The same call then goes through
coturn with a relay-only ICE policy.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.web.conftest import Stack, artifact_path, csp_violations, watch_csp
from tests.web.test_page import wait_for, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION_WORDS = ("twelve", "times", "seven", "what")


def wait_calls(stack: Stack, n: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    calls = stack.healthz()["calls"]
    while calls != n and time.monotonic() < deadline:
        time.sleep(0.2)
        calls = stack.healthz()["calls"]
    return calls


def final(role: str) -> str:
    return f"rtcAgent.transcripts.filter(t => t.role === '{role}' && t.final && t.text).length"


def place_call(stack: Stack, browser_factory, audio: Path, query: str = "?raw=1"):  # type: ignore[no-untyped-def]
    page = watch_csp(browser_factory(stack, audio=audio).new_page())
    page.on("console", lambda m: print("console:", m.text) if m.type == "error" else None)
    page.goto(stack.url("/" + query))
    wait_ready(page)
    page.click("#call")
    try:
        wait_for(page, "rtcAgent.connectionState === 'connected'", 30, "connected")
        wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", 30, "ready")
    except AssertionError:
        print(stack.server_log())
        raise
    return page


def test_spoken_and_typed_call(stack_factory, browser_factory, question_wav: Path) -> None:
    stack = stack_factory("rtc-agent")
    health = stack.healthz()
    assert health["backend"] == "offline" and health["calls"] == 0
    page = place_call(stack, browser_factory, question_wav)
    assert wait_calls(stack, 1) == 1
    try:
        # the spoken question comes back as the user's transcript, then a reply
        wait_for(page, final("user"), 60, "the user's transcript")
        wait_for(page, final("assistant"), 60, "the assistant's transcript")
        wait_for(page, "rtcAgent.remotePeak > 0.02", 30, "audible reply audio")
    except AssertionError:
        print(stack.server_log())
        raise
    transcripts = page.evaluate("rtcAgent.transcripts")
    user = next(t for t in transcripts if t["role"] == "user" and t["final"])
    assert any(w in user["text"].lower() for w in QUESTION_WORDS), user
    assert transcripts.index(user) < next(
        i for i, t in enumerate(transcripts) if t["role"] == "assistant"
    )
    states = {e["state"] for e in page.evaluate("rtcAgent.events") if e["type"] == "state"}
    assert {"user_speaking", "speaking"} <= states, states
    assert page.locator("#chat .msg.user").count() >= 1
    assert page.locator("#chat .msg.assistant").count() >= 1

    # a typed message gets its own answer
    before = page.evaluate(final("assistant"))
    page.fill("#text", "what is two plus two")
    page.press("#text", "Enter")
    wait_for(page, f"{final('assistant')} > {before}", 60, "an answer to the typed message")
    assert page.locator("#chat .msg.user.typed").count() == 1
    print("transcripts:", page.evaluate("rtcAgent.transcripts"))
    page.screenshot(path=str(artifact_path("call-offline-backend.png")), full_page=True)
    # the page did all of this within its Content-Security-Policy
    assert csp_violations(page) == []

    page.click("#call")  # hang up
    assert wait_calls(stack, 0) == 0


def test_relay_call_through_coturn(stack_factory, browser_factory, question_wav: Path) -> None:
    stack = stack_factory("rtc-agent", turn=True)
    config = stack.ns.get_json(stack.url("/config"))
    assert any(stack.turn_url in s["urls"] and s.get("credential") for s in config["iceServers"])
    page = place_call(stack, browser_factory, question_wav, "?raw=1&relay=1")
    stats = page.evaluate("rtcAgent.stats()")
    print("selected pair:", stats)
    assert stats["localCandidateType"] == "relay", stats
    assert stats["localAddress"].startswith(stack.ns.peer_ip)
    wait_for(page, "rtcAgent.remotePeak > 0.02", 60, "audible reply audio over the relay")
    page.click("#call")
    assert wait_calls(stack, 0) == 0


def test_server_at_capacity(stack_factory, browser_factory, question_wav: Path) -> None:
    stack = stack_factory("rtc-agent", max_calls=0)
    page = browser_factory(stack, audio=question_wav).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    page.click("#call")
    page.wait_for_selector("#notice[data-kind='capacity']", timeout=20000)
    assert "busy" in page.inner_text("#notice")
    assert stack.healthz()["calls"] == 0


def test_full_server_turns_the_second_caller_away(
    stack_factory, browser_factory, question_wav: Path
) -> None:
    stack = stack_factory("rtc-agent", max_calls=1)
    first = place_call(stack, browser_factory, question_wav)
    second = first.context.browser.new_page()
    second.goto(stack.url("/"))
    wait_ready(second)
    second.click("#call")
    second.wait_for_selector("#notice[data-kind='capacity']", timeout=20000)
    first.click("#call")
    assert wait_calls(stack, 0) == 0


def test_token_required(stack_factory, browser_factory, question_wav: Path) -> None:
    """--token: the page asks for it, a wrong one is refused, and TURN credentials go
    only to a valid one: the page fetches /config again with the token, so a relay-only
    call through coturn works once the caller types it in."""
    stack = stack_factory("rtc-agent", turn=True, args=["--token", "let-me-in"])
    config = stack.ns.get_json(stack.url("/config"))
    assert config == {"tokenRequired": True}  # no ICE servers, no TURN credentials
    assert stack.ns.http("GET", stack.url("/config"), headers=["Authorization: Bearer no"])[0] \
        == 401
    assert stack.ns.get_json(stack.url("/healthz")) == {"status": "ok"}  # details need it
    browser = browser_factory(stack, audio=question_wav)
    page = watch_csp(browser.new_page())
    page.goto(stack.url("/?raw=1&relay=1"))
    wait_ready(page)
    assert page.is_visible("#token")
    page.fill("#token", "wrong")
    page.click("#call")
    page.wait_for_selector("#notice[data-kind='auth']", timeout=20000)
    assert page.evaluate("rtcAgent.connectionState") == "new"  # refused before any peer
    assert stack.healthz()["calls"] == 0

    page.fill("#token", "let-me-in")
    page.click("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", 30, "connected over the relay")
    wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", 30, "ready")
    stats = page.evaluate("rtcAgent.stats()")
    assert stats["localCandidateType"] == "relay", stats
    turn = [s for s in page.evaluate("rtcAgent.config.iceServers") if s.get("username")]
    assert turn and int(turn[0]["username"].split(":")[0]) - time.time() <= 600
    assert wait_calls(stack, 1) == 1
    assert csp_violations(page) == []
    page.click("#call")
    assert wait_calls(stack, 0) == 0
    page.close()

    page = place_call(stack, browser_factory, question_wav, "?raw=1&token=let-me-in")
    assert page.is_hidden("#token")
    assert wait_calls(stack, 1) == 1
    page.click("#call")
    assert wait_calls(stack, 0) == 0


def test_https_from_a_lan_address(stack_factory, browser_factory, question_wav: Path) -> None:
    """The phone case: the page at https://<LAN address> is a secure context and calls.

    Python's ssl checks the chain and the IP name against the local CA; Chromium is told
    to accept the certificate (it has no access to a trust store we could edit).
    """
    stack = stack_factory("rtc-agent", https=True)
    lan = stack.url("/healthz", host=stack.ns.server_ip)
    status, body = stack.ns.http("GET", lan, cacert=stack.certs.ca_cert)
    assert status == 200 and '"ok": true' in body.replace('":true', '": true')
    other_ca = stack.certs.dir.parent / "other-ca.pem"
    from rtc_agent.signaling.certs import create_ca, serialization

    other_ca.write_bytes(create_ca("stranger")[0].public_bytes(serialization.Encoding.PEM))
    assert stack.ns.http("GET", lan, cacert=other_ca)[0] == 0  # untrusted chain refused

    browser = browser_factory(stack, audio=question_wav)
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.goto(stack.url("/?raw=1", host=stack.ns.server_ip))
    wait_ready(page)
    assert page.evaluate("window.isSecureContext") is True
    assert page.get_attribute("#notice", "hidden") is not None
    page.click("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", 30, "connected over https")
    wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", 30, "ready")
    page.click("#call")
    assert wait_calls(stack, 0) == 0


def test_a_recorded_call_says_so_on_the_page(stack_factory, browser_factory,
                                             question_wav: Path, tmp_path: Path) -> None:
    """--record-dir: the caller sees a Recorded badge for the whole call, and only then."""
    stack = stack_factory("rtc-agent", args=["--record-dir", str(tmp_path / "rec")])
    page = place_call(stack, browser_factory, question_wav)
    try:
        page.wait_for_selector("#recorded:not([hidden])", timeout=10000)
        assert page.locator("#recorded").is_visible()
        assert "Recorded" in page.locator("#recorded").inner_text()
    finally:
        page.click("#call")  # hang up
    page.wait_for_selector("#recorded", state="hidden", timeout=10000)
    assert wait_calls(stack, 0) == 0
    assert list((tmp_path / "rec").glob("*.ogg"))


def test_an_unrecorded_call_shows_no_badge(stack_factory, browser_factory,
                                           question_wav: Path) -> None:
    stack = stack_factory("rtc-agent")
    page = place_call(stack, browser_factory, question_wav)
    try:
        assert page.evaluate("rtcAgent.events.find(e => e.type === 'session.ready').recorded"
                             ) is False
        assert not page.locator("#recorded").is_visible()
    finally:
        page.click("#call")
