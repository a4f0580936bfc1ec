"""The page's own behaviour.

Where only a scripted sequence can show it (tool rows, an interrupted reply,
playout reports, an exact Retry-After), the scripted contract peer
(contract_server.py) plays the server; everything else runs against the real
`rtc-agent serve`.
"""

from __future__ import annotations

import time

import pytest

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
