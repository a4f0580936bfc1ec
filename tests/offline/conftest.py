"""Fixtures for the offline backend tests: a real server on 127.0.0.1:0 and a raw client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection

from rtc_agent.offline.driver import Engines, Limits
from rtc_agent.offline.server import OfflineServerConfig, RealtimeServer, build_engines
from tests.offline.sdk_types import GA_EVENTS, validate
from tests.speech import speak_pcm

EVENT_TIMEOUT_S = 20.0


@pytest.fixture(scope="session")
def engines() -> Engines:
    """The real engines (piper, pocketsphinx, silero, rules), loaded once per run."""
    return build_engines("piper", tts_cache=256)


@pytest.fixture
async def server(engines: Engines) -> AsyncIterator[RealtimeServer]:
    async with RealtimeServer(OfflineServerConfig(host="127.0.0.1", port=0), engines) as srv:
        yield srv


async def start_server(engines: Engines, **config: Any) -> RealtimeServer:
    limits = config.pop("limits", Limits())
    cfg = OfflineServerConfig(host="127.0.0.1", port=0, limits=limits, **config)
    srv = RealtimeServer(cfg, engines)
    await srv.start()
    return srv


class RawClient:
    """A plain websockets client that keeps every server event it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict] = []

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, wait_s: float = EVENT_TIMEOUT_S) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), wait_s))
        self.events.append(event)
        return event

    async def until(self, type_: str, wait_s: float = EVENT_TIMEOUT_S) -> list[dict]:
        """Events received up to and including the first of type_."""
        got = []
        async with asyncio.timeout(wait_s):
            while True:
                event = await self.recv()
                got.append(event)
                if event["type"] == type_:
                    return got

    async def error(self) -> dict:
        return (await self.until("error"))[-1]["error"]

    async def append_pcm(self, pcm: np.ndarray | bytes, chunk_ms: int = 20) -> None:
        data = pcm.tobytes() if isinstance(pcm, np.ndarray) else pcm
        step = chunk_ms * 48
        for i in range(0, len(data), step):
            audio = base64.b64encode(data[i : i + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})

    async def close(self) -> None:
        await self.ws.close()


async def connect(srv: RealtimeServer, path: str = "/v1/realtime?model=gpt-realtime",
                  beta: bool = False, **kwargs: Any) -> RawClient:
    headers = dict(kwargs.pop("additional_headers", {}))
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    ws = await websockets.connect(f"ws://127.0.0.1:{srv.port}{path}",
                                  additional_headers=headers, max_size=None, **kwargs)
    client = RawClient(ws)
    first = await client.recv()
    assert first["type"] == "session.created"
    return client


def speech(text: str) -> np.ndarray:
    """Piper speech at 24 kHz with leading/trailing silence (cached)."""
    return speak_pcm(text, 24000)


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict], delta_type: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == delta_type)


def sdk_client(srv: RealtimeServer) -> AsyncOpenAI:
    """The openai SDK's client, its GA Realtime WebSocket pointed at srv."""
    return AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{srv.port}/v1")


async def sdk_append(conn: Any, pcm: bytes) -> None:
    """pcm through the SDK in 20 ms appends, as a caller's microphone sends it."""
    for i in range(0, len(pcm), 960):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 960]).decode())


def check_sdk_event(event: Any) -> None:
    """The SDK built the typed model for the event's type (not a fallback model), and the
    event validates field by field against that model."""
    assert type(event) is GA_EVENTS[event.type], type(event)
    validate(event.to_dict())


async def collect(conn: Any, until: str = "response.done", wait_s: float = 30.0) -> list[Any]:
    """Typed SDK events up to and including the first of type `until`, each checked."""
    got = []
    async with asyncio.timeout(wait_s):
        async for event in conn:
            check_sdk_event(event)
            got.append(event)
            if event.type == until:
                return got
    raise AssertionError("connection ended early")
