"""The Realtime WebSocket client against a scripted server that closes as OpenAI does.

OpenAI ends a session with an `error` event and then a close whose code says
why (3000 auth, 4000 request shape). The cloud is out of reach here, so a tiny
server on loopback replays those endings over a real WebSocket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from rtc_agent.protocol import Dialect
from rtc_agent.realtime.client import MAX_CONTROL_BACKLOG, RealtimeClient, UpstreamFailed
from rtc_agent.realtime.service import RealtimeService


def ending(code: str, close_code: int) -> Any:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "e1",
                                  "session": {"id": "sess_1"}}))
        await ws.send(json.dumps({"type": "error", "event_id": "e2", "error": {
            "type": "invalid_request_error", "code": code, "message": code}}))
        await ws.close(close_code, f"invalid_request_error.{code}")
    return handler


async def run_client(handler: Any, seconds: float) -> tuple[RealtimeClient, Exception | None,
                                                             list[str]]:
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        seen: list[str] = []
        client = RealtimeClient(
            RealtimeService("custom", f"ws://127.0.0.1:{port}/v1/realtime", Dialect.GA),
            on_event=lambda e: seen.append(e["type"]),
            on_connected=lambda again: None,
            on_disconnected=lambda reason: None,
            backoff_s=(0.05,),
        )
        task = asyncio.create_task(client.run())
        done, _ = await asyncio.wait({task}, timeout=seconds)
        error = task.exception() if done else None
        if not done:
            await client.close()
            task.cancel()
        return client, error, seen


async def test_auth_close_is_final() -> None:
    client, error, seen = await run_client(ending("invalid_api_key", 3000), 5)
    assert isinstance(error, UpstreamFailed) and "3000" in str(error)
    assert seen == ["session.created", "error"]
    assert client.reconnects == 0


@pytest.mark.parametrize("close_code", [4000, 1000])
async def test_session_expiry_is_crossed_whatever_the_close_code(close_code: int) -> None:
    client, error, seen = await run_client(ending("session_expired", close_code), 1.0)
    assert error is None
    assert client.reconnects >= 2
    assert seen.count("session.created") == client.reconnects + 1


async def test_a_full_control_queue_reconnects_instead_of_dropping_events() -> None:
    """A dropped cancel or truncate would leave the session out of step: resync instead."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(json.dumps({"type": "session.created", "event_id": f"e{connections}",
                                  "session": {"id": f"sess_{connections}"}}))
        async for _ in ws:
            pass

    connected: list[bool] = []
    reasons: list[str] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = RealtimeClient(
            RealtimeService("custom", f"ws://127.0.0.1:{port}/v1/realtime", Dialect.GA),
            on_event=lambda e: None, on_connected=connected.append,
            on_disconnected=reasons.append, backoff_s=(0.05,))
        task = asyncio.create_task(client.run())
        try:
            for _ in range(100):
                if client.connected:
                    break
                await asyncio.sleep(0.02)
            # A burst the writer cannot drain in between: one more than the queue holds.
            for i in range(MAX_CONTROL_BACKLOG + 1):
                client.send({"type": "conversation.item.create", "n": i})
            for _ in range(100):
                if connected == [False, True]:
                    break
                await asyncio.sleep(0.02)
        finally:
            await client.close()
            task.cancel()
    assert connected == [False, True]
    assert len(reasons) == 1 and "control backlog full" in reasons[0]
    assert client.reconnects == 1 and client.dropped_control_events == 1
    assert connections == 2


async def test_hostile_frames_from_the_service_are_skipped() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("[" * 100_000 + "]" * 100_000)  # deep nesting: a RecursionError
        await ws.send("{not json")
        await ws.send(json.dumps({"type": "session.created", "session": {"id": "s"}}))
        await asyncio.sleep(10)

    client, error, seen = await run_client(handler, 1.0)
    assert error is None and seen == ["session.created"] and client.reconnects == 0


async def test_a_close_during_the_connect_closes_the_socket_it_opens() -> None:
    """The call hung up while its socket was opening: the socket must not live on."""
    opened = asyncio.Event()
    released = asyncio.Event()
    closed_by_server: list[bool] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.wait_closed()
        finally:
            closed_by_server.append(True)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        from websockets.asyncio.client import connect

        async def slow_connect(*args: Any, **kwargs: Any) -> Any:
            ws = await connect(*args, **kwargs)
            opened.set()
            await released.wait()  # the hang-up happens here
            return ws

        served: list[str] = []
        client = RealtimeClient(
            RealtimeService("custom", f"ws://127.0.0.1:{port}/v1/realtime", Dialect.GA),
            on_event=lambda e: served.append(e["type"]),
            on_connected=lambda again: served.append("connected"),
            on_disconnected=lambda reason: None, connector=slow_connect)
        task = asyncio.create_task(client.run())
        await asyncio.wait_for(opened.wait(), 5)
        await client.close()
        released.set()
        await asyncio.wait_for(task, 5)  # returns at once, without serving
        assert served == []
        for _ in range(50):
            if closed_by_server:
                break
            await asyncio.sleep(0.05)
        assert closed_by_server == [True]


def test_a_refusal_is_read_for_the_services_words_defensively() -> None:
    from rtc_agent.realtime.client import MAX_DETAIL_CHARS, refusal_detail

    body = b'{"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}'
    assert refusal_detail(body) == "invalid_api_key: Incorrect API key provided."
    assert refusal_detail(b"Invalid or missing API key\nmore\n") == "Invalid or missing API key"
    assert refusal_detail(b'{"error": "quota exceeded"}') == "quota exceeded"
    assert refusal_detail(b"") == "" and refusal_detail(None) == ""
    assert refusal_detail(b'{"error": {"code": 3}}') == "3"
    assert refusal_detail(b'{"not": "an error"}') == ""  # JSON that says nothing useful
    # hostile: control characters, a huge body, deep nesting, bad UTF-8
    assert refusal_detail(b"evil\x1b[31m red\r\nline") == "evil [31m red"
    assert len(refusal_detail(b"x" * 10_000_000)) == MAX_DETAIL_CHARS
    assert refusal_detail(b"[" * 100_000) == "[" * MAX_DETAIL_CHARS  # read as text, bounded
    assert refusal_detail(b"\xff\xfe bad bytes") == "\ufffd\ufffd bad bytes"
