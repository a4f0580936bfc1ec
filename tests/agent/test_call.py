"""Whole calls: a scripted aiortc caller against `rtc-agent serve` on the offline backend.

Real components throughout: the server (run in this process so the test can
look at what it sent upstream), its offline Realtime backend as a child
process over a real WebSocket, aiortc on both ends, piper-spoken prompts, and
pocketsphinx listening to the reply audio the caller received.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtc_agent import config
from rtc_agent.datachannel import CALLER_MESSAGES_BURST, CALLER_MESSAGES_PER_S
from rtc_agent.loadtest.caller import ScriptedCaller
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.speech import hears, speak_wav

pytestmark = pytest.mark.slow


def server_config(**overrides: Any) -> config.ServeConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    cfg = config.from_args(parser.parse_args(["--port", "0", "--ice-address", "127.0.0.1"]))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[SignalingServer]:
    (tmp_path / "turn.md").write_text(
        "coturn is a TURN relay server. It checks short-lived credentials with "
        "use-auth-secret.\n")
    cfg = server_config(search_dir=tmp_path)
    async with running(cfg) as server:
        yield server


def url(server: SignalingServer) -> str:
    return f"http://127.0.0.1:{server.config.port}"


def is_done(role: str) -> Any:
    return lambda e: e["type"] == "transcript.done" and e["role"] == role


async def test_spoken_question_gets_spoken_answer(agent: SignalingServer) -> None:
    prompt = Prompt.from_wav(speak_wav("what is twelve times seven"))
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        ready = next(e for e in caller.events if e["type"] == "session.ready")
        assert ready["backend"] == "offline" and ready["call_id"] == caller.call_id
        n = len(caller.events)
        spoken_end = await caller.speak(prompt)
        user = await caller.wait_event(is_done("user"), 30, start=n)
        assert "twelve" in user["text"] and "seven" in user["text"]
        reply = await caller.wait_event(is_done("assistant"), 40, start=n)
        assert "eighty" in reply["text"] and reply["interrupted"] is False
        await caller.wait_event(lambda e: e.get("state") == "listening", 10,
                                after=reply["_t"] - 0.001)
        states = [e["state"] for e in caller.events[n:] if e["type"] == "state"]
        assert states[-4:] == ["user_speaking", "thinking", "speaking", "listening"], states
        first_audio = caller.first_audible_after(spoken_end)
        assert first_audio is not None
        await asyncio.sleep(0.3)
        pcm = caller.received_audio()
        assert hears(pcm, 48000, "eighty")
        assert agent.calls[caller.call_id].caller_errors == 0


async def test_typed_message_and_tool_turn(agent: SignalingServer) -> None:
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        n = len(caller.events)
        caller.send({"type": "text", "text": "what is two plus three"})
        reply = await caller.wait_event(is_done("assistant"), 30, start=n)
        assert "five" in reply["text"]
        n = len(caller.events)
        caller.send({"type": "text", "text": "search for coturn"})
        started = await caller.wait_event(lambda e: e["type"] == "tool.started", 30, start=n)
        assert started["name"] == "search" and "coturn" in started["arguments"]["query"]
        finished = await caller.wait_event(lambda e: e["type"] == "tool.finished", 30, start=n)
        assert finished["ok"] is True and finished["call_id"] == started["call_id"]
        reply = await caller.wait_event(is_done("assistant"), 40, start=n)
        assert "relay" in reply["text"].lower()


async def test_bad_data_channel_messages_get_errors_and_the_call_goes_on(
    agent: SignalingServer,
) -> None:
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        n = len(caller.events)
        caller._channel.send("{not json")
        caller._channel.send('{"type": "explode"}')
        caller._channel.send('{"type": "text", "text": "' + "x" * 17000 + '"}')
        errors = []
        for _ in range(3):
            errors.append(await caller.wait_event(
                lambda e: e["type"] == "error" and e not in errors, 10, start=n))
        assert [e["code"] for e in errors] == ["invalid_json", "unknown_type",
                                              "message_too_large"]
        caller.send({"type": "ping", "t": 42})
        pong = await caller.wait_event(lambda e: e["type"] == "pong", 10, start=n)
        assert pong["t"] == 42
        n = len(caller.events)
        for i in range(8):  # a flood of typed messages: a burst passes, the rest is refused
            caller.send({"type": "text", "text": f"what is {i} plus one"})
        limited = await caller.wait_event(lambda e: e.get("code") == "rate_limited", 10,
                                          start=n)
        assert limited["type"] == "error"
        reply = await caller.wait_event(is_done("assistant"), 30, start=n)
        assert reply["text"]


async def test_a_flood_of_messages_is_dropped_and_the_call_stays_responsive(
    agent: SignalingServer,
) -> None:
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        call = agent.calls[caller.call_id]
        n = len(caller.events)
        flood_started = time.monotonic()
        for i in range(10_000):
            caller._channel.send(f'{{"type":"ping","t":{i}}}')
        caller._channel.send('{"type":"ping","t":NaN}')  # not JSON: refused, not echoed
        # aiortc's SCTP carries ~1,000 small messages a second: the flood takes a while.
        for _ in range(600):
            if call.caller_dropped + call.caller_errors >= 10_000 - 100:
                break
            await asyncio.sleep(0.05)
        flood_s = time.monotonic() - flood_started
        await asyncio.sleep(1.5)  # let the buckets refill
        t0 = time.monotonic()
        caller.send({"type": "ping", "t": -1})
        pong = await caller.wait_event(lambda e: e.get("t") == -1, 5, start=n)
        print(f"pong {1000 * (pong['_t'] - t0):.0f} ms after a flood of 10,000 pings; "
              f"{call.caller_dropped} dropped")
        pongs = [e for e in caller.events[n:] if e["type"] == "pong"]
        refusals = [e for e in caller.events[n:] if e["type"] == "error"]
        assert call.caller_dropped > 9_000
        # what the bucket lets through in as long as the flood lasted (a loaded machine
        # stretches it), plus the one after it; refusals are themselves rate-limited
        allowed = CALLER_MESSAGES_BURST + CALLER_MESSAGES_PER_S * (flood_s + 1.5) + 1
        assert len(pongs) <= allowed, (len(pongs), allowed, flood_s)
        assert len(refusals) <= 5 + flood_s + 1.5, (len(refusals), flood_s)
        assert all(e.get("t") is None or isinstance(e["t"], int) for e in pongs)
        n = len(caller.events)
        caller.send({"type": "text", "text": "what is two plus two"})
        reply = await caller.wait_event(is_done("assistant"), 30, start=n)
        assert "four" in reply["text"]


async def test_hangup_frees_the_call(agent: SignalingServer) -> None:
    caller = ScriptedCaller(url(agent))
    await caller.connect(timeout=20)
    call = agent.calls[caller.call_id]
    from rtc_agent.media.inbound import InOrderPackets, _LoopDecoder

    (transceiver,) = call.pc.getTransceivers()
    assert isinstance(transceiver.receiver._RTCRtpReceiver__decoder_queue, _LoopDecoder)
    assert isinstance(transceiver.receiver._RTCRtpReceiver__jitter_buffer, InOrderPackets)
    await caller.hangup()
    for _ in range(50):
        if not agent.calls:
            break
        await asyncio.sleep(0.1)
    assert agent.calls == {}
    assert call.closed and call.pc.connectionState == "closed"
    assert call.playout.readyState == "ended"
    assert not call.client.connected
    assert all(t.done() for t in call._tasks)


async def test_server_side_hangup_closes_the_server_peer(
    agent: SignalingServer,
) -> None:
    import aiohttp

    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        call = agent.calls[caller.call_id]
        (transceiver,) = call.pc.getTransceivers()
        dtls = transceiver.receiver.transport
        async with aiohttp.ClientSession() as http, http.delete(
            f"{url(agent)}/calls/{caller.call_id}"
        ) as r:
            assert r.status == 200
        # The server closed its side itself (the caller only learns of it after).
        assert call.closed and agent.calls == {}
        assert call.pc.connectionState == "closed"
        assert dtls.state == "closed" and dtls.transport.state == "closed"
        assert call.client._ws is None


async def test_barge_in_silences_playback_and_truncates_within_what_was_played(
    agent: SignalingServer,
) -> None:
    story = Prompt.from_wav(speak_wav("tell me a story"))
    interruption = Prompt.from_wav(speak_wav("stop please"))
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        call = agent.calls[caller.call_id]
        upstream_events: list[dict[str, Any]] = []
        on_event = call.client._on_event

        def tap(event: dict[str, Any]) -> None:
            # Server and caller share this process, hence one monotonic clock.
            upstream_events.append({**event, "_t": time.monotonic()})
            on_event(event)

        call.client._on_event = tap
        sent_upstream: list[dict[str, Any]] = []
        send = call.client.send

        def tap_send(event: dict[str, Any]) -> None:
            sent_upstream.append(event)
            send(event)

        call.client.send = tap_send  # type: ignore[method-assign]
        caller.send({"type": "playout", "delay_ms": 40})
        spoken_end = await caller.speak(story)
        reply_start = await caller.wait_audible(spoken_end, 30)
        assert reply_start is not None, "the story never started playing"
        await asyncio.sleep(2.0)  # let it talk for a while
        n = len(caller.events)
        talk_over = caller.start_speaking(interruption)
        await caller.wait_event(
            lambda e: e["type"] == "state" and e["state"] == "user_speaking", 15, start=n)
        speech_started = [e["_t"] for e in upstream_events
                          if e["type"] == "input_audio_buffer.speech_started"][-1]
        silent = await caller.wait_silent(speech_started, 5)
        assert silent is not None
        stop_ms = (silent - speech_started) * 1000
        # Stopping is the property; how fast is a benchmark's business. The caller's
        # own jitter buffer holds ~80 ms, so a tight bound only measures the machine's
        # load (103 ms seen once on a busy run); without the flush the reply would
        # play on for seconds.
        assert stop_ms <= 300, f"reply audio went on {stop_ms:.0f} ms after speech_started"
        await talk_over
        interrupted = await caller.wait_event(
            lambda e: e["type"] == "transcript.done" and e["role"] == "assistant"
            and e["interrupted"], 10, start=0)
        (truncate,) = [e for e in sent_upstream if e["type"] == "conversation.item.truncate"]
        assert truncate["item_id"] == interrupted["item_id"]
        # What the caller heard of that reply: from its first audible frame to silence.
        heard_ms = (silent - reply_start) * 1000
        assert 0 < truncate["audio_end_ms"] <= interrupted["audio_ms"]
        assert abs(truncate["audio_end_ms"] - heard_ms) < 250, (truncate, heard_ms)
        print(f"barge-in: silent {stop_ms:.0f} ms after speech_started; truncate at "
              f"{truncate['audio_end_ms']} ms of {interrupted['audio_ms']} ms received; "
              f"caller heard {heard_ms:.0f} ms")
        for _ in range(100):
            if any(e["type"] == "conversation.item.truncated" for e in upstream_events):
                break
            await asyncio.sleep(0.05)
        confirmed = [e for e in upstream_events if e["type"] == "conversation.item.truncated"]
        assert confirmed and confirmed[0]["audio_end_ms"] == truncate["audio_end_ms"]
        assert np.asarray(caller.received_audio()).size > 0


async def test_calls_leave_no_tasks_sockets_or_threads_behind(agent: SignalingServer) -> None:
    import gc
    import os

    async def one_call() -> None:
        async with ScriptedCaller(url(agent)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "what is one plus one"})
            await caller.wait_event(is_done("assistant"), 30, start=n)

    def counts() -> tuple[int, int, int]:
        # OS threads, not threading's: FFmpeg's codec threads are native.
        return (len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd")),
                len(os.listdir("/proc/self/task")))

    await one_call()  # warm up: imports, codec tables, the aiohttp session pool
    await asyncio.sleep(1)
    gc.collect()
    before = counts()
    # Without the cycle collector: what a call holds must be freed when it ends,
    # not whenever the garbage collector next runs.
    gc.disable()
    try:
        for _ in range(5):
            await one_call()
        after = counts()
        for _ in range(50):
            if agent.calls == {} and all(a <= b for a, b in zip(after, before, strict=True)):
                break
            await asyncio.sleep(0.1)
            after = counts()
    finally:
        gc.enable()
    assert agent.calls == {}
    assert after[0] <= before[0], f"asyncio tasks {before[0]} -> {after[0]}"
    assert after[1] <= before[1], f"open file descriptors {before[1]} -> {after[1]}"
    assert after[2] <= before[2], f"threads {before[2]} -> {after[2]}"


async def test_caller_audio_still_arrives_when_aiortc_internals_differ(
    agent: SignalingServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """If decode_on_loop cannot patch a receiver, aiortc's own decoder thread is used."""
    import rtc_agent.call as call_module
    from rtc_agent.media.inbound import _LoopDecoder

    monkeypatch.setattr(call_module, "decode_on_loop", lambda receiver: False)
    prompt = Prompt.from_wav(speak_wav("what is twelve times seven"))
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        call = agent.calls[caller.call_id]
        (transceiver,) = call.pc.getTransceivers()
        assert not isinstance(transceiver.receiver._RTCRtpReceiver__decoder_queue, _LoopDecoder)
        assert "decoding caller audio on a thread" in caplog.text
        n = len(caller.events)
        await caller.speak(prompt)
        user = await caller.wait_event(is_done("user"), 30, start=n)
        assert "twelve" in user["text"] and "seven" in user["text"]


async def test_a_caller_that_stops_reading_cannot_grow_the_server_queue() -> None:
    from types import SimpleNamespace

    from rtc_agent.call import MAX_CALLER_BACKLOG_BYTES, Call
    from rtc_agent.datachannel import state_changed
    from rtc_agent.protocol import Dialect
    from rtc_agent.realtime.service import RealtimeService
    from rtc_agent.realtime.settings import SessionSettings
    from rtc_agent.tools.registry import ToolRegistry

    call = Call("c1", service=RealtimeService("custom", "ws://127.0.0.1:9/", Dialect.GA),
                settings=SessionSettings(), tools=ToolRegistry())
    sent: list[str] = []
    channel = SimpleNamespace(readyState="open", bufferedAmount=0, send=sent.append)
    call._channel = channel  # type: ignore[assignment]
    try:
        call._to_caller(state_changed(call.session.state))
        channel.bufferedAmount = MAX_CALLER_BACKLOG_BYTES + 1  # the caller's window is shut
        for _ in range(100):
            call._to_caller(state_changed(call.session.state))
        assert len(sent) == 1 and call.caller_backlog_dropped == 100
    finally:
        await call.close()


async def test_usage_follows_each_response_with_its_estimated_cost() -> None:
    prices = {"input_text": 4.0, "output_text": 16.0, "input_audio": 32.0,
              "output_audio": 64.0}
    async with running(server_config(pricing=prices)) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            call = server.calls[caller.call_id]
            totals = []
            for question in ("what is two plus two", "what is three plus three"):
                n = len(caller.events)
                caller.send({"type": "text", "text": question})
                totals.append(await caller.wait_event(lambda e: e["type"] == "usage", 30,
                                                      start=n))
            first, second = totals
            # totals so far, by kind, growing with each response
            assert set(first["tokens"]) == {"input_text", "input_audio", "output_text",
                                            "output_audio", "cached"}
            assert first["tokens"]["output_audio"] > 0 and first["tokens"]["output_text"] > 0
            assert all(second["tokens"][k] >= first["tokens"][k] for k in first["tokens"])
            assert second["tokens"]["output_audio"] > first["tokens"]["output_audio"]
            t = second["tokens"]
            expected = (t["input_text"] * 4 + t["output_text"] * 16 + t["input_audio"] * 32
                        + t["output_audio"] * 64) / 1e6
            assert second["cost_usd"] == pytest.approx(expected, abs=1e-6)
            assert call.record.summary()["cost_usd"] == pytest.approx(expected, abs=1e-6)
