"""Slow and greedy clients: the head/idle deadline, connection caps in all and per
address (TLS handshakes included), the offer rate limit and the cap on calls still
connecting, all with a bounded number of sockets on loopback.

Loopback is exempt from the per-address limits by default (--limit-exempt), so
these servers clear the exemption; a second client address is 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtc_agent.signaling.limits import RateLimiter, address_key, exempt, parse_networks
from tests.signaling.rawhttp import (
    closed_by_server,
    cloud_server,
    connect,
    head,
    parse_reply,
    request,
)
from tests.signaling.test_app import offer_sdp

OTHER = "127.0.0.2"  # another client address on loopback


@contextlib.asynccontextmanager
async def sockets(port: int, n: int, source: str | None = None,
                  ) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    opened = [await connect(port, source) for _ in range(n)]
    try:
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def wait_until(predicate, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def keep_alive_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         path: str) -> int:
    """One request on a kept-alive connection; returns the status."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    reply = parse_reply(head_bytes)
    await reader.readexactly(int(reply.headers["content-length"]))
    return reply.status


# ---------------------------------------------------------------- pure parts


def test_rate_limiter_bursts_then_refills() -> None:
    now = [1000.0]
    limiter = RateLimiter(per_minute=6, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    wait = limiter.take("a")
    assert 9.9 < wait <= 10.0  # one token every 10 s
    assert limiter.take("b") == 0.0  # another address has its own bucket
    now[0] += 10.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    now[0] += 3600
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6  # refills to the burst only
    assert limiter.take("a") > 0
    assert RateLimiter(per_minute=0).take("a") == 0.0  # 0: off


def test_rate_limiter_forgets_the_oldest_keys_past_its_bound() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=100)
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100


def test_address_keys_and_exemptions() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    # one host's /64: rotating addresses inside it does not escape the limits
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key(None) == "?"
    loopback = parse_networks(["127.0.0.0/8", "::1/128"])
    assert exempt("127.0.0.2", loopback) and exempt("::1", loopback)
    assert exempt("::ffff:127.0.0.1", loopback)
    assert not exempt("192.0.2.7", loopback) and not exempt("2001:db8::1", loopback)
    assert not exempt("garbage", loopback) and not exempt(None, loopback)


# ---------------------------------------------------------------- the head/idle deadline


async def test_silent_trickling_and_idle_connections_are_closed_at_the_deadline() -> None:
    async with cloud_server(header_timeout_s=0.5) as server:
        port = server.config.port
        async with sockets(port, 3) as [(silent, _), (trickle_r, trickle_w), (idle_r, idle_w)]:
            started = time.monotonic()
            assert await keep_alive_get(idle_r, idle_w, "/healthz") == 200

            async def trickle() -> None:
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                    if trickle_w.is_closing():
                        return
                    trickle_w.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            task = asyncio.create_task(trickle())
            results = await asyncio.gather(closed_by_server(silent, 3),
                                           closed_by_server(trickle_r, 3),
                                           closed_by_server(idle_r, 3))
            elapsed = time.monotonic() - started
            task.cancel()
            assert results == [True, True, True]  # bytes kept arriving: closed all the same
            assert elapsed < 2.5, elapsed
        await wait_until(lambda: server.limits.total == 0)


async def test_the_deadline_never_cuts_a_request_being_handled() -> None:
    """A body read slower than the head deadline (but within the body timeout) is
    answered: the deadline waits while a request is in hand."""
    async with cloud_server(header_timeout_s=0.3, body_timeout_s=5) as server:
        body = b"[" + b" " * 20 + b"]"
        reply = await request(server.config.port, head("POST", "/offer", len(body)),
                              *[bytes([b]) for b in body], pause_s=0.05)  # ~1.1 s of body
        assert (reply.status, reply.json()["error"]["code"]) == (400, "invalid_offer")


# ---------------------------------------------------------------- connection caps


async def test_connections_per_address_are_capped_and_others_get_in() -> None:
    async with cloud_server(max_connections_per_address=3, limit_exempt=[]) as server:
        port = server.config.port
        async with sockets(port, 3) as held:
            await wait_until(lambda: server.limits.count("127.0.0.1") == 3)
            reader, writer = await connect(port)
            reply = parse_reply(await asyncio.wait_for(reader.read(-1), 3))
            writer.close()
            assert (reply.status, json.loads(reply.body)["error"]["code"]) == (
                429, "too_many_connections")
            assert int(reply.headers["retry-after"]) > 0
            # another address is not held back
            assert (await request(port, head("GET", "/healthz"), source=OTHER)).status == 200
            # a slot freed is a slot to use
            held[0][1].close()
            await wait_until(lambda: server.limits.count("127.0.0.1") == 2)
            assert (await request(port, head("GET", "/healthz"))).status == 200
        assert server.limits.refused == 1


async def test_connections_in_all_are_capped_and_loopback_is_exempt_per_address() -> None:
    async with cloud_server(max_connections=3, max_connections_per_address=1) as server:
        port = server.config.port
        # loopback is exempt from the per-address cap (1) by default: three get in
        async with sockets(port, 3):
            await wait_until(lambda: server.limits.total == 3)
            reader, writer = await connect(port)
            reply = parse_reply(await asyncio.wait_for(reader.read(-1), 3))
            writer.close()
            assert (reply.status, json.loads(reply.body)["error"]["code"]) == (
                503, "too_many_connections")
        await wait_until(lambda: server.limits.total == 0)
        assert (await request(port, head("GET", "/healthz"))).status == 200


async def test_a_slowloris_crowd_is_bounded_and_other_callers_are_served() -> None:
    """60 sockets trickling heads from one address: 8 are held (briefly), the rest are
    refused at once, and a caller from another address is answered meanwhile."""
    async with cloud_server(header_timeout_s=1.0, max_connections_per_address=8,
                            limit_exempt=[]) as server:
        port = server.config.port
        async with sockets(port, 60) as crowd:
            for _, writer in crowd:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            await asyncio.sleep(0.1)
            assert server.limits.count("127.0.0.1") <= 8
            started = time.monotonic()
            reply = await request(port, head("GET", "/healthz"), source=OTHER)
            assert reply.status == 200 and time.monotonic() - started < 0.5
            closed = await asyncio.gather(*(closed_by_server(r, 3) for r, _ in crowd))
            assert all(closed)
        await wait_until(lambda: server.limits.total == 0)
        assert server.limits.refused >= 52


def tls_client(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))


async def stalled_tls_handshakes_are_counted_and_timed(tmp_path: Path) -> None:
    async with cloud_server(https=True, cert_dir=tmp_path, header_timeout_s=1.0,
                            max_connections_per_address=2, limit_exempt=[]) as server:
        port = server.config.port
        started = time.monotonic()
        async with sockets(port, 2) as stalled:  # TCP only: no ClientHello ever
            await wait_until(lambda: server.limits.count("127.0.0.1") == 2)
            reader, writer = await connect(port)
            assert await closed_by_server(reader, 0.5)  # refused at once
            writer.close()
            # the stalled handshakes end at the deadline
            assert all(await asyncio.gather(*(closed_by_server(r, 3) for r, _ in stalled)))
            assert time.monotonic() - started < 2.5
        await wait_until(lambda: server.limits.total == 0)
        reply = await request(port, head("GET", "/healthz"), tls=tls_client(tmp_path))
        assert reply.status == 200
        # a client that completes the handshake but never sends a head is closed too
        reader, writer = await connect(port, tls=tls_client(tmp_path))
        assert await closed_by_server(reader, 3)
        writer.close()


async def test_stalled_tls_handshakes_are_counted_and_timed(tmp_path: Path) -> None:
    await stalled_tls_handshakes_are_counted_and_timed(tmp_path)


def test_the_guard_under_uvloop(tmp_path: Path) -> None:
    """`rtc-agent serve` runs on uvloop when it is installed: the same, there."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(stalled_tls_handshakes_are_counted_and_timed(tmp_path))
        runner.run(test_the_deadline_never_cuts_a_request_being_handled())


# ---------------------------------------------------------------- offers


async def test_offers_are_rate_limited_per_address() -> None:
    async with cloud_server(offers_per_minute=3, limit_exempt=[], token="t") as server:
        port = server.config.port
        junk = b"{nope"
        statuses = []
        for _ in range(4):
            # a wrong token spends a try too: guessing tokens is rate-limited
            reply = await request(port, head("POST", "/offer", len(junk),
                                             Authorization="Bearer wrong") + junk)
            statuses.append(reply.status)
        assert statuses == [401, 401, 401, 429]
        assert reply.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(reply.headers["retry-after"]) <= 20
        reply = await request(port, head("POST", "/offer", len(junk), Authorization="Bearer t")
                              + junk, source=OTHER)
        assert reply.status == 400  # another address: its own budget
    async with cloud_server(offers_per_minute=3) as server:  # loopback exempt by default
        for _ in range(5):
            reply = await request(server.config.port, head("POST", "/offer", len(junk)) + junk)
            assert reply.status == 400


async def test_calls_still_connecting_are_capped_per_address() -> None:
    """Offers whose ICE never completes: 20 of them held every slot for 30 s."""
    async with cloud_server(max_pending_per_address=2, limit_exempt=[]) as server:
        port = server.config.port
        peers = []
        try:
            statuses = []
            for source in (None, None, None, OTHER):
                pc, sdp = await offer_sdp()  # the answer is never applied: ICE never ends
                peers.append(pc)
                body = json.dumps({"type": "offer", "sdp": sdp}).encode()
                reply = await request(port, head("POST", "/offer", len(body)) + body,
                                      source=source)
                statuses.append((reply.status, reply.json().get("error", {}).get("code")))
            assert statuses == [(200, None), (200, None), (429, "too_many_pending"),
                                (200, None)]
            assert len(server.calls) == 3
        finally:
            for pc in peers:
                await pc.close()
