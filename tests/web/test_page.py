"""The page's own behaviour.

Where only a scripted sequence can show it (tool rows, an interrupted reply,
playout reports, an exact Retry-After), the scripted contract peer
(contract_server.py) plays the server; everything else runs against the real
`rtc-agent serve`.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.web.conftest import artifact_path
from tests.web.netns import crash

pytestmark = [pytest.mark.browser]


def wait_for(page, expr: str, timeout_s: float = 20.0, what: str = ""):  # type: ignore[no-untyped-def]
    """Poll a JS expression until truthy; fail with the page's state otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(expr)
        if value:
            return value
        time.sleep(0.1)
    state = page.evaluate(
        "JSON.stringify({state: rtcAgent.state, conn: rtcAgent.connectionState,"
        " notice: rtcAgent.notice, events: rtcAgent.events.slice(-10)})"
    )
    raise AssertionError(f"timed out waiting for {what or expr}: {state}")


def wait_ready(page, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for the page's set-up to finish; on a timeout, say how far it got."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector("body[data-ready='1']", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        state = page.evaluate(
            "JSON.stringify({readyState: document.readyState, hook: typeof window.rtcAgent,"
            " notice: document.querySelector('#notice')?.innerText,"
            " resources: performance.getEntriesByType('resource').map("
            "r => [r.name, Math.round(r.duration), r.responseStatus])})"
        )
        raise AssertionError(f"page set-up did not finish in {timeout_s:g} s: {state}") from None


def test_call_renders_script_and_reports_playout(stack_factory, browser_factory) -> None:
    stack = stack_factory("contract")
    page = browser_factory(stack).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    assert page.is_enabled("#call")
    page.click("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", what="connected")
    wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", what="session.ready")
    assert page.inner_text("#state") == "Listening"
    assert stack.healthz()["calls"] == 1

    # The contract peer echoes the fake microphone: the AnalyserNode hears it.
    wait_for(page, "rtcAgent.remotePeak > 0.01", what="remote audio")
    assert page.evaluate("rtcAgent.micLevel") > 0

    page.fill("#text", "what time is it")
    page.press("#text", "Enter")
    assert page.input_value("#text") == ""
    # the tool row shows while the tool runs, then its result
    page.wait_for_selector(".msg.tool.running", timeout=5000)
    page.wait_for_selector(".msg.tool.ok", timeout=5000)
    wait_for(page, "rtcAgent.transcripts.some(t => t.role === 'assistant' && t.final)")
    transcripts = page.evaluate("rtcAgent.transcripts")
    assert [(t["role"], t["text"]) for t in transcripts] == [
        ("user", "what time is it"),
        ("assistant", "You said: what time is it"),
    ]
    bubbles = page.locator("#chat .msg").all_inner_texts()
    assert "what time is it" in bubbles[0]
    assert "lookup done in 600 ms" in bubbles[1]
    assert "You said: what time is it" in bubbles[2]
    assert page.evaluate("rtcAgent.tools[0].ok") is True

    # an interrupted reply is marked as such
    page.fill("#text", "please interrupt")
    page.click("#send")
    page.wait_for_selector(".msg.assistant.interrupted .tag", timeout=5000)
    last = page.evaluate("rtcAgent.transcripts.at(-1)")
    assert last["interrupted"] is True and last["text"] == "You said: "

    # playout reports arrive about every 500 ms, within the schema's range
    time.sleep(1.2)
    health = stack.healthz()
    assert len(health["playout"]) >= 2
    assert all(0 <= d <= 5000 for d in health["playout"])
    # a receiving jitter buffer always holds some audio: the delay is not 0
    assert max(health["playout"]) > 0
    assert [m["type"] for m in health["received"]] == ["text", "text"]

    # diagnostics: a direct path between host candidates, Opus, RTT measured
    page.click("#diagnostics summary")
    stats = page.evaluate("rtcAgent.stats()")
    assert stats["localCandidateType"] == "host"
    assert stats["remoteCandidateType"] == "host"
    assert stats["remoteAddress"].startswith(stack.ns.server_ip)
    assert stats["codec"].lower().startswith("opus")
    time.sleep(1.1)
    assert "host" in page.inner_text("[data-k='candidates']")
    assert page.inner_text("[data-k='codec']").lower().startswith("opus")

    # mute silences the meter
    page.click("#mute")
    assert page.get_attribute("#mute", "aria-pressed") == "true"
    time.sleep(0.2)
    assert page.evaluate("rtcAgent.micLevel") == 0

    page.click("#call")  # hang up
    assert page.inner_text("#call") == "Call"
    deadline = time.monotonic() + 5
    while stack.healthz()["calls"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.healthz()["calls"] == 0


def test_capacity_message(stack_factory, browser_factory) -> None:
    stack = stack_factory("contract", max_calls=0)
    page = browser_factory(stack).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    page.click("#call")
    page.wait_for_selector("#notice[data-kind='capacity']", timeout=15000)
    text = page.inner_text("#notice")
    assert "busy" in text and "7 s" in text  # Retry-After shown
    assert page.inner_text("#call") == "Call"
    assert page.evaluate("rtcAgent.connectionState") == "closed"
    # a call refused before it began leaves no divider in the chat
    assert page.locator("#chat > li").count() == 0


def test_insecure_origin_message(stack_factory, browser_factory) -> None:
    """Plain http on a non-localhost address: no navigator.mediaDevices."""
    stack = stack_factory("rtc-agent")
    page = browser_factory(stack).new_page()
    page.goto(stack.url("/", host=stack.ns.server_ip))
    wait_ready(page)
    assert page.evaluate("window.isSecureContext") is False
    assert page.get_attribute("#notice", "data-kind") == "insecure"
    assert "HTTPS" in page.inner_text("#notice")
    assert page.is_disabled("#call")


def test_relay_only_call_through_coturn(stack_factory, browser_factory) -> None:
    """?relay=1 sets iceTransportPolicy 'relay': the selected local candidate is coturn's."""
    stack = stack_factory("contract", turn=True)
    config = stack.ns.get_json(stack.url("/config"))
    turn = [s for s in config["iceServers"] if s.get("username")]
    assert turn and turn[0]["urls"] == [stack.turn_url]
    page = browser_factory(stack).new_page()
    page.goto(stack.url("/?relay=1"))
    wait_ready(page)
    page.click("#call")
    wait_for(page, "rtcAgent.connectionState === 'connected'", timeout_s=30, what="connected")
    stats = page.evaluate("rtcAgent.stats()")
    print("selected pair:", stats)
    assert stats["localCandidateType"] == "relay", stats
    assert stats["localAddress"].startswith(stack.ns.peer_ip)  # coturn's relay address
    wait_for(page, "rtcAgent.remotePeak > 0.01", what="remote audio over the relay")
    page.click("#call")
    log = stack.turn_log.read_text(errors="replace") if stack.turn_log else ""
    assert "allocation" in log.lower() or "ALLOCATE" in log, log[-2000:]


def test_denied_microphone_message(stack_factory, browser_factory) -> None:
    """Without the fake-UI flag nobody grants the permission prompt: getUserMedia is refused."""
    stack = stack_factory("rtc-agent")
    page = browser_factory(stack, fake_ui=False).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    page.click("#call")
    page.wait_for_selector("#notice[data-kind='mic-denied']", timeout=15000)
    assert "denied" in page.inner_text("#notice")
    assert page.inner_text("#call") == "Call"
    assert page.evaluate("rtcAgent.connectionState") == "new"  # no peer connection made
    assert stack.healthz()["calls"] == 0


def test_no_microphone_message(stack_factory, browser_factory) -> None:
    """A machine with no audio input (no fake device here, and none on this host)."""
    stack = stack_factory("rtc-agent")
    page = browser_factory(stack, fake_device=False).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    has_input = page.evaluate(
        "navigator.mediaDevices.enumerateDevices()"
        ".then(ds => ds.some(d => d.kind === 'audioinput'))"
    )
    if has_input:
        pytest.skip("this machine has a real microphone")
    page.click("#call")
    page.wait_for_selector("#notice[data-kind='no-mic']", timeout=15000)
    assert "No microphone" in page.inner_text("#notice")


def test_typed_echoes_and_spoken_transcripts_stay_apart(stack_factory, browser_factory) -> None:
    """The server echoes typed text with an empty item_id; each echo must merge
    into its own typed bubble, and later speech must get a bubble of its own."""
    stack = stack_factory("contract")
    page = browser_factory(stack).new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    page.click("#call")
    wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", what="ready")
    for text in ("first question", "second question"):
        page.fill("#text", text)
        page.press("#text", "Enter")
        wait_for(page, f"rtcAgent.transcripts.some(t => t.text === 'You said: {text}')")
    page.fill("#text", "/spoken hello there")
    page.press("#text", "Enter")
    wait_for(page, "rtcAgent.transcripts.some(t => t.text === 'hello there')", what="speech")
    users = [
        (t["text"], t["typed"])
        for t in page.evaluate("rtcAgent.transcripts")
        if t["role"] == "user"
    ]
    assert users == [
        ("first question", True),
        ("second question", True),
        ("/spoken hello there", True),
        ("hello there", False),
    ]
    assert page.locator("#chat .msg.user").count() == 4
    assert page.locator("#chat .msg.user.partial").count() == 0
    page.click("#call")


# ---- call endings, lost connections, what was heard, dividers, diagnostics ----------


def open_call(stack, browser_factory, viewport=None):  # type: ignore[no-untyped-def]
    """A page in a call with the contract peer, its channel open."""
    browser = browser_factory(stack)
    page = browser.new_page(viewport=viewport) if viewport else browser.new_page()
    page.goto(stack.url("/"))
    wait_ready(page)
    page.click("#call")
    wait_for(page, "rtcAgent.events.some(e => e.type === 'session.ready')", what="session.ready")
    wait_for(page, "!document.querySelector('#text').disabled", what="the text input")
    return page


def command(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#text", text)
    page.press("#text", "Enter")


def diagnostics(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#diag dd')]"
        ".map(dd => [dd.dataset.k, dd.textContent]))"
    )


def test_call_ended_shows_its_reason(stack_factory, browser_factory) -> None:
    """call.ended: the notice names the reason and the server's message, the call ends
    on the page at once, and no connection notice replaces it later."""
    stack = stack_factory("contract")
    page = open_call(stack, browser_factory)
    command(page, "/end upstream_failed")
    page.wait_for_selector("#notice[data-kind='call-ended'][data-reason='upstream_failed']",
                           timeout=5000)
    text = page.inner_text("#notice")
    assert "speech service failed" in text and "Scripted ending (upstream_failed)." in text, text
    assert page.inner_text("#state") == "Call ended"
    assert page.inner_text("#call") == "Call"
    assert page.evaluate("rtcAgent.ended") == {"reason": "upstream_failed",
                                               "message": "Scripted ending (upstream_failed)."}
    # the peer closing afterwards must not turn this into a network notice
    time.sleep(3)
    assert page.get_attribute("#notice", "data-reason") == "upstream_failed"
    assert "TURN" not in page.inner_text("#notice")
    assert stack.healthz()["calls"] == 0


def test_lost_connection_is_shown_at_once(stack_factory, browser_factory) -> None:
    """The server dies without closing anything (SIGKILL): within about a second the
    pill says the call was interrupted and the reply being streamed is marked cut
    off; when Chromium gives the connection up, the call ends on the page with a
    notice that does not blame the network path."""
    stack = stack_factory("contract")
    page = open_call(stack, browser_factory, viewport={"width": 1280, "height": 800})
    command(page, "/slow")
    wait_for(page, "rtcAgent.transcripts.some(t => t.role === 'assistant' && "
                   "t.text.includes('word1 '))", 5, "the reply streaming")
    assert page.locator("#chat .msg.assistant.partial").count() == 1
    crash(stack.server)
    killed = time.monotonic()
    wait_for(page, "rtcAgent.state === 'connection_lost'", 5, "the interruption")
    took = time.monotonic() - killed
    assert took < 2.5, f"the page needed {took:.1f} s to notice"
    assert page.inner_text("#state") == "Call interrupted"
    bubble = page.locator("#chat .msg.assistant").last
    assert "cut off" in bubble.locator(".tag.cut").inner_text()
    # no "…" after the text of a reply that will not go on
    after = page.evaluate("getComputedStyle(document.querySelector("
                          "'#chat .msg.assistant .text'), '::after').content")
    assert after in ("none", "normal"), after
    assert page.evaluate("rtcAgent.interrupted") == "audio"
    page.screenshot(path=str(artifact_path("desktop-1280x800-connection-lost.png")))
    # Chromium declares the connection failed after ~17 s: the call ends here
    wait_for(page, "rtcAgent.connectionState === 'closed'", 40, "the call to end")
    assert page.inner_text("#call") == "Call"
    assert page.inner_text("#state") == "Call interrupted"
    assert page.get_attribute("#notice", "data-kind") == "connection-lost"
    assert "cut off" in page.inner_text("#agent-label")
    assert "TURN" not in page.inner_text("#notice")
    reply = page.evaluate("rtcAgent.transcripts.find(t => t.role === 'assistant')")
    assert reply["final"] is True and reply["cut_off"] is True, reply
    assert page.locator("#chat .msg.assistant.partial").count() == 0


def test_a_stalled_connection_recovers(stack_factory, browser_factory) -> None:
    """The server freezes for 2 s (SIGSTOP) and goes on: the pill says interrupted
    while no audio comes, then shows the server's state again; the reply marked cut
    off loses the mark as it goes on, and ends whole."""
    from tests.web.contract_server import SLOW_WORDS

    stack = stack_factory("contract")
    page = open_call(stack, browser_factory)
    command(page, "/slow")
    wait_for(page, "rtcAgent.state === 'speaking' && rtcAgent.transcripts.some("
                   "t => t.role === 'assistant' && t.text.includes('word1 '))", 5,
             "the reply streaming")
    os.killpg(stack.server.pid, signal.SIGSTOP)
    try:
        wait_for(page, "rtcAgent.state === 'connection_lost'", 3, "the interruption")
        assert page.locator("#chat .msg.assistant .tag.cut").count() == 1
        assert page.evaluate("rtcAgent.connectionState") == "connected"  # ICE has not noticed
    finally:
        os.killpg(stack.server.pid, signal.SIGCONT)
    wait_for(page, "rtcAgent.interrupted === null", 5, "the recovery")
    assert page.inner_text("#state") == "Agent speaking"  # the server's state, again
    wait_for(page, "rtcAgent.transcripts.some(t => t.role === 'assistant' && t.final)", 10,
             "the reply's end")
    reply = page.evaluate("rtcAgent.transcripts.find(t => t.role === 'assistant')")
    assert reply["cut_off"] is False and reply["text"].count("word") == SLOW_WORDS, reply
    assert page.locator("#chat .msg.assistant .tag.cut").count() == 0
    page.click("#call")


def test_interrupted_reply_shows_the_heard_part(stack_factory, browser_factory) -> None:
    """An interrupted reply: the heard part as it is, the rest struck through after a
    "not heard" label; from heard_text, else split by heard_ms / audio_ms."""
    from tests.web.contract_server import HEARD_MS_TEXT, HEARD_TEXT, UNHEARD_TEXT

    stack = stack_factory("contract")
    page = open_call(stack, browser_factory, viewport={"width": 1280, "height": 800})
    command(page, "/heard")
    page.wait_for_selector(".msg.assistant.interrupted .unheard", timeout=5000)
    bubble = page.locator("#chat .msg.assistant").last
    # the space between the parts is left out of both (not struck through)
    assert bubble.locator(".heard").inner_text() == HEARD_TEXT.strip()
    assert bubble.locator(".unheard").inner_text() == UNHEARD_TEXT
    assert bubble.locator(".unheard-label").inner_text() == "not heard"
    assert "line-through" in page.evaluate(
        "getComputedStyle(document.querySelector('#chat .msg.assistant .unheard'))"
        ".textDecorationLine")
    entry = page.evaluate("rtcAgent.transcripts.at(-1)")
    assert entry["interrupted"] and entry["text"] == HEARD_TEXT + UNHEARD_TEXT
    assert (entry["heard_text"], entry["unheard_text"]) == (HEARD_TEXT, UNHEARD_TEXT)

    # without heard_text: half the audio was heard, so about half the words
    command(page, "/heard-ms")
    wait_for(page, f"rtcAgent.transcripts.at(-1).text === '{HEARD_MS_TEXT}' && "
                   "rtcAgent.transcripts.at(-1).final", 5, "the second reply")
    entry = page.evaluate("rtcAgent.transcripts.at(-1)")
    assert entry["heard_text"] == "one two three four "
    assert entry["unheard_text"] == "five six seven eight"
    bubble = page.locator("#chat .msg.assistant").last
    assert bubble.locator(".heard").inner_text() == "one two three four"
    assert bubble.locator(".unheard").inner_text() == "five six seven eight"
    page.locator("#chat").screenshot(path=str(artifact_path("desktop-chat-heard-part.png")))
    page.click("#call")


def test_each_call_has_a_divider_and_fresh_diagnostics(stack_factory, browser_factory) -> None:
    """Calls are separated by dividers with their time, the chat keeps the earlier
    calls, the diagnostics panel empties on hang-up, and "Last turn" measures a
    known gap (the contract peer starts a tone 800 ms after the end of speech)."""
    stack = stack_factory("contract")
    page = open_call(stack, browser_factory, viewport={"width": 1280, "height": 800})
    page.click("#diagnostics summary")
    assert page.locator("#chat .divider").count() == 1
    assert "Call ·" in page.inner_text("#chat .divider")
    command(page, "first call")
    wait_for(page, "rtcAgent.transcripts.some(t => t.text === 'You said: first call' && t.final)")

    # (the typed message above was a turn too, answered by the echo: this one's
    # figure is the one after its `speaking`)
    n = page.evaluate("rtcAgent.events.length")
    command(page, "/turn 800")
    wait_for(page, f"rtcAgent.events.slice({n}).some(e => e.state === 'speaking')", 10,
             "the scripted reply")
    time.sleep(0.6)
    turn_ms = page.evaluate("rtcAgent.lastTurnMs")
    # 800 ms on the server, plus the caller's jitter buffer and the trip
    assert 780 <= turn_ms <= 1400, turn_ms
    wait_for(page, "document.querySelector('[data-k=turn]').textContent !== '–'")
    assert page.inner_text("[data-k='turn']") == f"{round(turn_ms)} ms"
    wait_for(page, "document.querySelector('[data-k=codec]').textContent !== '–'")
    during = diagnostics(page)
    assert during["connection"] == "connected" and during["call"] != "–", during

    page.click("#call")  # hang up
    after = diagnostics(page)
    assert set(after.values()) == {"–"}, after
    assert page.evaluate("[rtcAgent.lastStats, rtcAgent.lastTurnMs, rtcAgent.lastPlayoutMs]") \
        == [None, None, None]

    page.click("#call")  # a second call on the same page
    wait_for(page, "rtcAgent.calls === 2 && rtcAgent.events.filter("
                   "e => e.type === 'session.ready').length === 2", what="the second call")
    wait_for(page, "!document.querySelector('#text').disabled", what="the text input")
    command(page, "second call")
    wait_for(page, "rtcAgent.transcripts.some(t => t.text === 'You said: second call' && t.final)")
    items = page.evaluate(
        "[...document.querySelectorAll('#chat > li')].map(li => li.classList.contains('divider')"
        " ? 'divider' : li.querySelector('.text').textContent)"
    )
    # the first call's history stays, under its own divider
    assert items.count("divider") == 2, items
    second = items.index("divider", 1)
    assert "first call" in items[1:second] and "You said: first call" in items[1:second], items
    assert items[second + 1] == "second call" and items[-1] == "You said: second call", items
    calls = {t["text"]: t["call"] for t in page.evaluate("rtcAgent.transcripts")}
    assert calls["first call"] == 1 and calls["second call"] == 2, calls
    # the emptied panel fills again for the second call
    wait_for(page, "document.querySelector('[data-k=codec]').textContent !== '–'", 5,
             "the second call's diagnostics")
    assert diagnostics(page)["connection"] == "connected"
    page.screenshot(path=str(artifact_path("desktop-1280x800-call.png")))
    page.click("#call")
