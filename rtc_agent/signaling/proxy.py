"""Reverse proxies the operator trusts (`--trusted-proxy`), and what they forward.

Behind a proxy that terminates TLS, the TCP peer is the proxy, the scheme is
`http` and the Host may be the proxy's upstream name. When, and only when, the
TCP peer is inside one of the trusted networks, the request is taken to be:

- scheme: the last `X-Forwarded-Proto` value, if it is `http` or `https`;
- host: the last `X-Forwarded-Host` value, if it is a plausible `host[:port]`;
- client address: walking `X-Forwarded-For` from the right, the first address
  that is not itself a trusted proxy (every proxy appends the peer it saw, so
  entries left of that one were written by the client and prove nothing). If
  all of them are trusted, the left-most; an entry that is not an address stops
  the walk at the last good one.

From any other peer these headers are ignored. RFC 7239 `Forwarded` is always
ignored: proxies commonly pass a client's copy through untouched, so honouring
it as well would let a client speak for the proxy. `middleware` hands handlers
a clone of the request with that scheme, host and `remote`; the view is also
kept on the original request under `FORWARDED` (aiohttp prepares responses
with the original, so response hooks read it from there).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from rtc_agent.signaling.limits import Network, exempt

# A host as a Host header carries it: a DNS name or IPv4 address, or a bracketed
# IPv6 literal, with an optional port. Anything else is not taken from a proxy.
HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


@dataclass(frozen=True)
class Forwarded:
    """The request as the client made it: scheme, host and address."""

    scheme: str
    host: str
    remote: str | None


FORWARDED = web.RequestKey("forwarded", Forwarded)


def _values(headers: MultiMapping[str], name: str) -> list[str]:
    """Every comma-separated value of a header, across repeated fields, in order."""
    return [part.strip() for field in headers.getall(name, ()) for part in field.split(",")
            if part.strip()]


def parse_address(entry: str) -> str | None:
    """An X-Forwarded-For entry as a plain address: `a.b.c.d`, `a.b.c.d:port`,
    `v6`, `[v6]` or `[v6]:port`; None when it is none of these."""
    text = entry.strip()
    if text.startswith("["):
        text, sep, _ = text[1:].partition("]")
        if not sep:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   trusted: Sequence[Network]) -> str | None:
    """The right-most address of the chain `forwarded_for + [peer]` that is not a
    trusted proxy (the left-most if all are); `peer` itself when it is not trusted."""
    client = peer
    if not exempt(peer, trusted):
        return client
    for entry in reversed(list(forwarded_for)):
        address = parse_address(entry)
        if address is None:  # not written by a proxy we trust: stop at the last good hop
            break
        client = address
        if not exempt(address, trusted):
            break
    return client


def resolve(peer: str | None, scheme: str, host: str, headers: MultiMapping[str],
            trusted: Sequence[Network]) -> Forwarded:
    """The request's scheme, host and client address, honouring X-Forwarded-Proto,
    -Host and -For only when `peer` (the TCP peer) is a trusted proxy."""
    if not trusted or not exempt(peer, trusted):
        return Forwarded(scheme, host, peer)
    protos = _values(headers, "X-Forwarded-Proto")
    if protos and protos[-1].lower() in ("http", "https"):
        scheme = protos[-1].lower()
    hosts = _values(headers, "X-Forwarded-Host")
    if hosts and len(hosts[-1]) <= 261 and HOST.fullmatch(hosts[-1]):
        host = hosts[-1]
    return Forwarded(scheme, host, client_address(peer, _values(headers, "X-Forwarded-For"),
                                                  trusted))


def view(request: web.BaseRequest) -> Forwarded:
    """What `middleware` derived for this request, or the connection's own view."""
    found = request.get(FORWARDED)
    return found if found is not None else Forwarded(request.scheme, request.host,
                                                     request.remote)


def middleware(trusted: Sequence[Network]) -> Any:
    """Give handlers the request as the client made it when a trusted proxy sent it."""

    @web.middleware
    async def from_trusted_proxy(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not trusted:
            return await handler(request)
        seen = resolve(request.remote, request.scheme, request.host, request.headers, trusted)
        request[FORWARDED] = seen
        if seen == Forwarded(request.scheme, request.host, request.remote) or seen.remote is None:
            return await handler(request)
        return await handler(request.clone(scheme=seen.scheme, host=seen.host,
                                           remote=seen.remote))

    return from_trusted_proxy
