"""Abuse limits of the HTTP server where aiohttp has no knob.

- `ConnectionLimits` with `GuardedSite`: a cap on open connections in all and
  per client address, counted when the TCP connection is accepted (before any
  TLS handshake, so stalled handshakes count too), and a deadline per
  connection for the TLS handshake plus the request head. The same deadline
  closes a keep-alive connection left idle after a response. aiohttp bounds
  the head's size and, only in its latest releases, the wait for a first
  request (`keepalive_timeout`); it counts no connections at all.
- `RateLimiter`: a token bucket per client address (for `POST /offer`).
- `address_key`: IPv6 clients are keyed by their /64, which one host usually
  holds whole, so rotating addresses inside it gains nothing.

Request bodies are the handlers' business (`rtc_agent.signaling.offer`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
import time
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

ABORT_AFTER_CLOSE_S = 2.0  # a peer that never reads must not keep a closed socket open
MAX_EARLY_BYTES = 64 * 1024  # plaintext arriving as the TLS handshake ends, held for aiohttp
RETRY_AFTER_S = 5

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_key(host: str | None) -> str:
    """The key per-address limits count under: the IPv4 address, or the IPv6 /64."""
    ip = _ip(host)
    if ip is None:
        return host or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def parse_networks(networks: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def exempt(host: str | None, networks: Sequence[Network]) -> bool:
    """True when `host` is inside one of `networks` (the per-address limits skip it)."""
    ip = _ip(host)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


class RateLimiter:
    """A token bucket per key: `per_minute` events a minute, in bursts of up to as many.

    Holds at most `max_keys` buckets, forgetting the least recently used one
    (which can only favour that key), so a flood of addresses cannot grow it.
    """

    def __init__(self, per_minute: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, key: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionLimits:
    """Open connections in all and per address, and each connection's guard.

    `max_total` / `max_per_address` of 0 turn that cap off. Addresses inside
    `exempt_networks` are not capped per address (they still count in all), nor
    are trusted proxies (`proxy_networks`): at accept time only the proxy is
    visible, and it carries every caller behind it. Per-request limits count the
    client it forwards for (`rtc_agent.signaling.proxy`).
    """

    def __init__(self, *, max_total: int = 0, max_per_address: int = 0,
                 head_timeout_s: float = 10.0, exempt_networks: Iterable[str] = (),
                 proxy_networks: Iterable[str] = ()) -> None:
        if head_timeout_s <= 0:
            raise ValueError("head_timeout_s must be > 0")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.head_timeout_s = head_timeout_s
        self.exempt_networks = parse_networks(exempt_networks)
        self.proxy_networks = parse_networks(proxy_networks)
        self.total = 0
        self.refused = 0
        self._per_address: dict[str, int] = {}
        self._guards: set[ConnectionGuard] = set()
        self._by_protocol: dict[object, ConnectionGuard] = {}

    def count(self, host: str) -> int:
        return self._per_address.get(address_key(host), 0)

    def _admit(self, host: str | None) -> tuple[str | None, tuple[int, str, str] | None]:
        """(the key it is counted under, or None; a refusal, or None)."""
        if self.max_total and self.total >= self.max_total:
            return None, (503, "too_many_connections",
                          "the server has too many open connections; try again shortly")
        uncapped = exempt(host, self.exempt_networks) or exempt(host, self.proxy_networks)
        key = None if uncapped else address_key(host)
        if key is not None and self.max_per_address and \
                self._per_address.get(key, 0) >= self.max_per_address:
            return None, (429, "too_many_connections",
                          "too many open connections from your address")
        self.total += 1
        if key is not None:
            self._per_address[key] = self._per_address.get(key, 0) + 1
        return key, None

    def _release(self, key: str | None) -> None:
        self.total -= 1
        if key is not None:
            left = self._per_address.get(key, 0) - 1
            if left > 0:
                self._per_address[key] = left
            else:
                self._per_address.pop(key, None)

    def abort_handshakes(self) -> None:
        """Drop connections that aiohttp does not know yet (TLS handshakes), at shutdown."""
        for guard in list(self._guards):
            guard.abort_if_unserved()

    def middleware(self) -> Any:
        """Tell each connection's guard when a request is being handled, so its deadline
        (head and idle) never cuts a request or response short."""

        @web.middleware
        async def track_requests(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            guard = self._by_protocol.get(request.protocol)
            if guard is None:
                return await handler(request)
            guard.request_started()
            try:
                return await handler(request)
            finally:
                guard.request_finished()

        return track_requests


def _refusal_bytes(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


class ConnectionGuard(asyncio.Protocol):
    """Sits between one accepted socket and aiohttp's protocol for it.

    Counts the connection, refuses it past a cap, puts the TLS layer in itself
    (so the handshake is counted and timed), and closes the connection when its
    deadline passes while no request is being handled: a head (or a handshake)
    that has not arrived `head_timeout_s` after the connection opened or the
    last request ended. A response still draining to a slow reader gets more
    time while it makes progress.
    """

    def __init__(self, limits: ConnectionLimits, factory: Callable[[], asyncio.BaseProtocol],
                 ssl_context: ssl.SSLContext | None) -> None:
        self._limits = limits
        self._factory = factory
        self._ssl = ssl_context
        self._raw: asyncio.Transport | None = None
        self._transport: asyncio.Transport | None = None  # what aiohttp writes to
        self._inner: asyncio.Protocol | None = None
        self._counted = False
        self._key: str | None = None
        self._busy = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._abort: asyncio.TimerHandle | None = None
        self._draining = -1  # write buffer size at the last deadline
        self._early: list[bytes] = []  # plaintext before aiohttp's protocol exists
        self._early_eof = False

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        if self._raw is not None:  # the second call: the TLS layer, once its handshake is done
            self._serve(transport)
            return
        self._raw = transport
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        key, refusal = self._limits._admit(host)
        if refusal is not None:
            self._limits.refused += 1
            log.debug("refusing a connection from %s: %s", host, refusal[1])
            if self._ssl is None:
                transport.write(_refusal_bytes(*refusal))
                self._close()
            else:
                transport.abort()
            return
        self._counted, self._key = True, key
        self._limits._guards.add(self)
        self._arm()
        if self._ssl is None:
            self._serve(transport)
        else:
            self._start_tls(transport, self._ssl)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._raw is not None and not self._raw.is_closing():
            # Not expected (the TLS layer calls connection_made before it delivers
            # data), but if a layer ever does, keep the bytes, in order, and bounded.
            self._early.append(data)
            if sum(map(len, self._early)) > MAX_EARLY_BYTES:
                self._raw.abort()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        self._early_eof = True
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        inner, self._inner = self._inner, None
        if inner is not None:
            self._limits._by_protocol.pop(inner, None)
            inner.connection_lost(exc)

    # ------------------------------------------------------------ requests (middleware)

    def request_started(self) -> None:
        self._busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._counted:
            self._draining = -1
            self._arm()

    # ------------------------------------------------------------ internals

    def _serve(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        inner = cast(asyncio.Protocol, self._factory())
        self._inner = inner
        self._limits._by_protocol[inner] = self
        inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            inner.data_received(data)
        if self._early_eof and not inner.eof_received():
            transport.close()

    def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """Put asyncio's TLS layer between the socket and us, now.

        Not `loop.start_tls()`: it runs later, and uvloop starts reading right
        after `connection_made` even when it paused, so the ClientHello could
        reach us instead of the TLS layer. Installed here, nothing comes first.
        The layer calls `connection_made` again with its own transport once the
        handshake is done; the waiter tells of a handshake that failed.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(self._handshake_ended)
        timeout: Any = self._limits.head_timeout_s  # seconds, a float (typeshed says int)
        layer = sslproto.SSLProtocol(loop, self, context, waiter, server_side=True,
                                     ssl_handshake_timeout=timeout)
        raw.set_protocol(layer)
        layer.connection_made(raw)

    def _handshake_ended(self, waiter: asyncio.Future[None]) -> None:
        # A handshake that succeeded has called connection_made (so we serve) before
        # this runs; one cut short by a close ends without an error, so: not served,
        # not alive.
        failure = None if waiter.cancelled() else waiter.exception()
        if self._inner is None:
            log.debug("TLS handshake did not complete: %r", failure)
            if self._raw is not None:
                self._raw.abort()
            self._forget()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(
            self._limits.head_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._busy or self._raw is None or self._raw.is_closing():
            return
        pending = self._raw.get_write_buffer_size()
        if self._transport is not None and self._transport is not self._raw:
            pending += self._transport.get_write_buffer_size()
        if pending and pending != self._draining:
            self._draining = pending  # a response still going out, and moving: wait on
            self._arm()
            return
        self._close()

    def _close(self) -> None:
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        raw.close()
        self._abort = asyncio.get_running_loop().call_later(ABORT_AFTER_CLOSE_S, raw.abort)

    def abort_if_unserved(self) -> None:
        if self._inner is None and self._raw is not None:
            self._raw.abort()

    def _forget(self) -> None:
        """Stop counting this connection (once) and drop its timers."""
        self._disarm()
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None
        if self._counted:
            self._counted = False
            self._limits._release(self._key)
            self._limits._guards.discard(self)


class GuardedSite(web.BaseSite):
    """A TCP site (like `web.TCPSite`) whose connections go through `ConnectionGuard`.

    Given `sock` (a node's shared listening socket), it accepts from that instead of
    binding `host:port`."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 limits: ConnectionLimits, ssl_context: ssl.SSLContext | None = None,
                 backlog: int = 128, sock: socket.socket | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._sock = sock

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        assert factory is not None
        limits, ssl_context = self._limits, self._ssl_context
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                lambda: ConnectionGuard(limits, factory, ssl_context), sock=self._sock,
                backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                lambda: ConnectionGuard(limits, factory, ssl_context),
                self._host, self._port, backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        self._limits.abort_handshakes()
