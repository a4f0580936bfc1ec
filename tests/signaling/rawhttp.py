"""Raw HTTP on loopback for tests that need what a client library hides: requests
written in pieces, hostile paths sent as they are, sockets that stall.

Also `cloud_server`: `rtc-agent serve` (the real composition, `serve.running`)
with a Realtime URL that nobody answers, so no offline backend is started;
calls are still answered (their upstream just keeps reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.agent.test_call import server_config
from tests.ports import loopback_port


@contextlib.asynccontextmanager
async def cloud_server(**overrides: Any) -> AsyncIterator[SignalingServer]:
    cfg = server_config(realtime_url=f"ws://127.0.0.1:{loopback_port()}/v1/realtime",
                        **overrides)
    async with running(cfg) as server:
        yield server


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Reply(status, headers, body)


async def connect(port: int, source: str | None = None, tls: ssl.SSLContext | None = None,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None, ssl=tls,
        server_hostname="localhost" if tls else None)


async def read_reply(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> Reply:
    """One response on a connection the server closes after it (Connection: close)."""
    async with asyncio.timeout(timeout_s):
        data = await reader.read(-1)
    return parse_reply(data)


async def request(port: int, *parts: bytes, pause_s: float = 0.0, source: str | None = None,
                  tls: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> Reply:
    """Write `parts` (pausing between them), then read the reply to the end."""
    reader, writer = await connect(port, source, tls)
    try:
        for i, part in enumerate(parts):
            if i and pause_s:
                await asyncio.sleep(pause_s)
            writer.write(part)
            await writer.drain()
        return await read_reply(reader, timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def head(method: str, path: str, body_length: int | None = None, host: str = "127.0.0.1",
         **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if body_length is not None:
        lines.append(f"Content-Length: {body_length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server ends the connection (EOF or reset) within `within_s`."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return True
