"""The server as a whole: the CLI, routing and auth, limits, barge-in and manual turns."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from rtc_agent.offline.driver import Limits
from rtc_agent.offline.server import RealtimeServer
from tests.offline.conftest import audio_of, connect, speech, start_server, types
from tests.speech import hears

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def test_cli_prints_url_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtc_agent.offline.command", "--port", "0", "--tts", "espeak"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("REALTIME_URL ws://127.0.0.1:") and line.endswith("/v1/realtime")
        url = line.split()[1]

        async def talk() -> dict:
            async with websockets.connect(url + "?model=gpt-realtime",
                                          additional_headers={"Authorization": "Bearer x"}) as ws:
                return __import__("json").loads(await ws.recv())

        assert asyncio.run(talk())["type"] == "session.created"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_api_key_required_when_configured(engines) -> None:
    srv = await start_server(engines, api_key="sekret")
    try:
        url = f"ws://127.0.0.1:{srv.port}/v1/realtime?model=gpt-realtime"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as exc:
                await websockets.connect(url, additional_headers=headers)
            assert exc.value.response.status_code == 401
        # Every documented way to pass the key works.
        ways = [
            {"additional_headers": {"Authorization": "Bearer sekret"}},
            {"additional_headers": {"api-key": "sekret"}},
            {"subprotocols": ["realtime", "openai-insecure-api-key.sekret"]},
        ]
        for kwargs in ways:
            client = await connect(srv, **kwargs)
            await client.close()
        client = await connect(srv, "/openai/v1/realtime?model=m&api-key=sekret")
        await client.close()
    finally:
        await srv.stop()


async def test_unknown_path_is_404(server: RealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as exc:
        await websockets.connect(f"ws://127.0.0.1:{server.port}/v2/whatever")
    assert exc.value.response.status_code == 404


async def test_subprotocol_selection_never_echoes_the_key(server: RealtimeServer) -> None:
    client = await connect(server, subprotocols=["realtime", "openai-insecure-api-key.abc"])
    assert client.ws.subprotocol == "realtime"
    assert client.events[0]["session"]["type"] == "realtime"  # GA without the beta entry
    await client.close()


async def test_session_expiry_sends_error_then_closes(engines) -> None:
    srv = await start_server(engines, max_session_s=0.5)
    try:
        client = await connect(srv)
        created = client.events[0]["session"]
        assert created["expires_at"] - time.time() < 2
        err = (await client.until("error", wait_s=5))[-1]["error"]
        assert err["code"] == "session_expired"
        assert err["message"] == "Your session hit the maximum duration of 0.5 seconds."
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv(wait_s=5)
        assert client.ws.close_reason == "invalid_request_error.session_expired"
    finally:
        await srv.stop()


async def test_idle_timeout_closes(engines) -> None:
    srv = await start_server(engines, idle_timeout_s=0.3)
    try:
        client = await connect(srv)
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv(wait_s=5)
    finally:
        await srv.stop()


async def test_barge_in_cancels_a_long_reply_and_truncate_follows(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "tell me a story"}]}})
    await client.send({"type": "response.create"})
    t0 = time.monotonic()
    first = await client.until("response.output_audio.delta")
    item_id = first[-1]["item_id"]
    # Talk over the reply while it is still streaming (it is paced near real time).
    await client.append_pcm(speech("stop please"))
    events = await client.until("response.done", wait_s=30)
    assert time.monotonic() - t0 < 8  # cancelled long before the story's end
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    names = types(events)
    assert names.index("input_audio_buffer.speech_started") < names.index("response.done")
    received_ms = len(audio_of(first + events, "response.output_audio.delta")) // 48
    await client.send({"type": "conversation.item.truncate", "item_id": item_id,
                       "content_index": 0, "audio_end_ms": 700})
    truncated = (await client.until("conversation.item.truncated"))[-1]
    assert truncated["audio_end_ms"] == min(700, received_ms)
    # The user's turn still completes and gets its own response.
    events = await client.until("response.done", wait_s=30)
    assert "input_audio_buffer.committed" in types(client.events)
    assert events[-1]["response"]["status"] == "completed"
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert item["content"][0]["transcript"] == ""
    assert len(base64.b64decode(item["content"][0]["audio"])) == min(700, received_ms) * 48
    await client.close()


async def test_long_reply_lasts_over_eight_seconds(engines) -> None:
    srv = await start_server(engines, limits=Limits(audio_lead_ms=0))
    try:
        client = await connect(srv)
        for prompt in ("tell me a story", "count to twenty"):
            await client.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": prompt}]}})
            await client.send({"type": "response.create"})
            events = await client.until("response.done", wait_s=60)
            seconds = len(audio_of(events, "response.output_audio.delta")) / 48000
            assert seconds >= 8, (prompt, seconds)
    finally:
        await srv.stop()


async def test_manual_turn_with_transcription(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}}}})
    session = (await client.until("session.updated"))[-1]["session"]
    assert session["audio"]["input"]["turn_detection"] is None
    await client.append_pcm(speech("what is seven minus three"))
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.until("conversation.item.input_audio_transcription.completed")
    assert types(events)[:3] == ["input_audio_buffer.committed", "conversation.item.added",
                                 "conversation.item.done"]
    assert "response.created" not in types(events)  # manual mode: no automatic response
    assert events[-1]["transcript"] == "what is seven minus three"
    await client.send({"type": "response.create"})
    events = await client.until("response.done", wait_s=30)
    audio = audio_of(events, "response.output_audio.delta")
    assert hears(audio, 24000, "four")
    await client.close()


async def test_recognition_without_transcription_events(server: RealtimeServer) -> None:
    """Transcription off: no transcription events, yet the responder understood the audio."""
    sessions = []
    server.on_session = sessions.append
    client = await connect(server)
    await client.append_pcm(speech("what is fifteen plus twenty seven"))
    events = await client.until("response.done", wait_s=30)
    await asyncio.sleep(0.3)
    assert not any(t.startswith("conversation.item.input_audio_transcription")
                   for t in types(events))
    transcript = next(e for e in events
                  if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript == "Fifteen plus twenty-seven is forty-two."
    assert hears(audio_of(events, "response.output_audio.delta"), 24000, "forty")
    # Recognition had started during the trailing silence, before the commit.
    assert sessions[0].stats.speculative_hits == 1
    await client.close()


async def test_espeak_engine(engines) -> None:
    from dataclasses import replace

    from rtc_agent.offline.tts import get_synthesizer

    srv = await start_server(replace(engines, synthesizer=get_synthesizer("espeak")))
    try:
        client = await connect(srv)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "good morning"}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert len(audio_of(events, "response.output_audio.delta")) > 48000 // 2
        transcript = next(e for e in events
                      if e["type"] == "response.output_audio_transcript.done")
        assert transcript["transcript"] == "Hello! How can I help you today?"
    finally:
        await srv.stop()


@pytest.mark.skipif(os.environ.get("RTC_AGENT_SKIP_SLOW") == "1", reason="slow disabled")
async def test_parallel_sessions(server: RealtimeServer) -> None:
    """Several sessions at once each get their own correct answer."""
    prompts = {"what is two plus two": "Two plus two is four.",
               "what is ten times ten": "Ten times ten is one hundred.",
               "what is eight minus five": "Eight minus five is three."}

    async def one(prompt: str) -> str:
        client = await connect(server)
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}})
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": prompt}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        await client.close()
        return next(e for e in events if e["type"] == "response.output_text.done")["text"]

    answers = await asyncio.gather(*(one(p) for p in prompts))
    assert answers == list(prompts.values())


async def test_reply_audio_is_faster_than_real_time_but_paced(engines) -> None:
    srv = await start_server(engines, limits=Limits(audio_lead_ms=500, audio_speed=8.0))
    try:
        client = await connect(srv)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "count to twenty"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        t0 = time.monotonic()
        events = await client.until("response.done", wait_s=60)
        wall = time.monotonic() - t0
        audio_s = len(audio_of(client.events, "response.output_audio.delta")) / 48000
        assert audio_s > 8
        assert wall < audio_s / 2  # faster than real time
        assert wall > 0.6 * (audio_s - 0.5) / 8  # but paced, not one burst
        assert events[-1]["response"]["status"] == "completed"
    finally:
        await srv.stop()
