"""One client cannot swamp the offline server, and odd frames never end a session.

A real server on 127.0.0.1:0 with fake engines (a synthesiser that costs 20 ms a
sentence, a responder that talks at length), so the tests measure the server's own
scheduling, not the speech models.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from rtc_agent.offline.driver import MAX_PENDING_RECOGNITIONS, Engines, Limits, SessionDriver
from rtc_agent.offline.responses import ResponderInput
from rtc_agent.offline.server import OfflineServerConfig, RealtimeServer, random_id
from rtc_agent.offline.vad import EnergyDetector
from rtc_agent.protocol import BYTES_PER_MS, Dialect

pytestmark = pytest.mark.timeout(60)


class SlowSynthesizer:
    def synthesize(self, text: str) -> bytes:
        time.sleep(0.02)  # in the default executor, like piper
        return bytes(100 * BYTES_PER_MS)


class SlowRecognizer:
    def transcribe(self, pcm: bytes, rate: int) -> str:
        time.sleep(0.5)
        return "hello"


class TalkativeResponder:
    async def reply(self, request: ResponderInput) -> AsyncIterator[str]:
        for i in range(200):
            yield f"This is sentence number {i}. "


def engines() -> Engines:
    return Engines(synthesizer=SlowSynthesizer(), recognizer=SlowRecognizer(),
                   responder=TalkativeResponder(), detector_factory=EnergyDetector)


async def recv_until(ws: Any, kind: str, wait_s: float = 30) -> list[dict[str, Any]]:
    got = []
    async with asyncio.timeout(wait_s):
        while True:
            event = json.loads(await ws.recv())
            got.append(event)
            if event["type"] == kind:
                return got


async def test_a_flood_of_out_of_band_responses_does_not_delay_another_session() -> None:
    config = OfflineServerConfig(host="127.0.0.1", port=0,
                                 limits=Limits(audio_lead_ms=0))  # unpaced: all at once
    async with RealtimeServer(config, engines()) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, max_size=None) as flood, \
                websockets.connect(url, max_size=None) as victim:
            await flood.recv()
            await victim.recv()
            for i in range(100):
                await flood.send(json.dumps({"type": "response.create", "event_id": f"e{i}",
                                             "response": {"conversation": "none"}}))
            errors = 0
            async with asyncio.timeout(20):  # the 100 are answered (created or refused)
                answered = 0
                while answered < 100:
                    event = json.loads(await flood.recv())
                    if event["type"] == "error":
                        assert event["error"]["code"] == "too_many_active_responses"
                        errors += 1
                    answered += event["type"] in ("error", "response.created")
            assert errors == 96

            async def drain() -> None:  # keep reading, as a client does
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for _ in flood:
                        pass

            reader = asyncio.create_task(drain())
            try:
                t0 = time.monotonic()
                await victim.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "hello"}]}}))
                await victim.send(json.dumps({"type": "response.create"}))
                await recv_until(victim, "response.output_audio.delta")
                first_audio_s = time.monotonic() - t0
            finally:
                reader.cancel()
            # 4 flooding replies x 2 sentences of lookahead queue ahead, not 100 x 200.
            assert first_audio_s < 1.5, first_audio_s


async def test_recognition_backlog_is_bounded_per_session() -> None:
    """Client audio items beyond the backlog fail recognition at once (heard as nothing)
    instead of queueing on the recognition threads every session shares."""
    config = OfflineServerConfig(host="127.0.0.1", port=0)
    async with RealtimeServer(config, engines()) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, max_size=None) as ws:
            await ws.recv()
            audio = base64.b64encode(bytes(200 * BYTES_PER_MS)).decode()
            n = MAX_PENDING_RECOGNITIONS + 6
            for _ in range(n):
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_audio", "audio": audio}]}}))
            for _ in range(n):
                await recv_until(ws, "conversation.item.done", 3)
            [session] = server.sessions
            await asyncio.sleep(0.1)  # long before the first recognition (0.5 s) is done
            assert len(session._heard) == MAX_PENDING_RECOGNITIONS
            heard = [item.heard for item in session.conv.items]
            assert heard == [None] * MAX_PENDING_RECOGNITIONS + [""] * 6


async def driver() -> tuple[SessionDriver, list[dict[str, Any]]]:
    from rtc_agent.offline.conversation import Conversation

    sent: list[dict[str, Any]] = []

    async def send(events: list[dict[str, Any]]) -> None:
        sent.extend(events)

    conv = Conversation(Dialect.GA, new_id=random_id, clock=time.time)
    return SessionDriver(conv, engines(), send), sent


@pytest.mark.parametrize("frame", [
    '{"type": "session.update", "session": {"type": "realtime", "tracing": NaN}}',
    '{"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, '
    '"audio_end_ms": Infinity}',
    '{"type": "response.create", "response": {"metadata": {"a": -Infinity}}}',
])
async def test_nan_and_infinity_are_not_json(frame: str) -> None:
    session, sent = await driver()
    await session.handle_frame(frame)
    [event] = sent
    assert event["type"] == "error" and event["error"]["code"] == "invalid_json"


async def test_an_unexpected_failure_in_the_core_is_a_server_error_not_a_closed_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    session, sent = await driver()

    def broken(event: object) -> list[Any]:
        raise KeyError("a bug")

    monkeypatch.setattr(session.conv, "handle", broken)
    await session.handle_frame('{"type": "input_audio_buffer.clear", "event_id": "ev9"}')
    [event] = sent
    assert event["type"] == "error"
    assert event["error"]["type"] == "server_error" and event["error"]["event_id"] == "ev9"
    monkeypatch.undo()
    await session.handle_frame('{"type": "input_audio_buffer.clear"}')
    assert sent[-1]["type"] == "input_audio_buffer.cleared"
