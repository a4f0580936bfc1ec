"""Which local addresses and ports ICE offers, what it announces, and ICE server lists.

Process-wide switches over aioice/aiortc, set once at start-up by `serve`:

- `restrict_host_addresses`: aioice gathers host candidates from every
  interface except 127.0.0.1. A server with several interfaces, or a test that
  must keep its packets on loopback, needs to choose.
- `restrict_udp_ports` (`--udp-ports`): aioice binds host candidates on port 0
  (any port); a firewall or a NAT forwarding a fixed range needs them inside it.
- `announce_public_address` (`--public-address`): behind 1:1 NAT (a cloud VM)
  the local address is not the one callers can reach; the SDP must name the
  public one.
- `answer_checks_at_once`: a peer's check on a pair whose own check is still
  in progress makes aioice resend that check now, not at its next
  retransmission (half a second later), as RFC 8445 7.3.1.4 wants.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import aioice.ice
import aioice.turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceGatherer, RTCIceServer

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
_original_get_local_candidates = RTCIceGatherer.getLocalCandidates
_original_check_incoming = aioice.ice.Connection.check_incoming


def restrict_host_addresses(addresses: Iterable[str] | None) -> None:
    """Offer only `addresses` as host candidates (None restores aioice's default)."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    chosen = [a for a in addresses if a]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


# ------------------------------------------------------------ triggered checks


def answer_checks_at_once(on: bool = True) -> None:
    """Resend our in-flight check on a pair the moment the peer's check arrives on it.

    The common case behind TURN: our first check to the caller's relayed address
    reaches the TURN server before the caller has made a permission for us and is
    dropped; then the caller's own check arrives through the relay, which proves
    the path is open. RFC 8445 7.3.1.4 answers an incoming check on an
    in-progress pair with a new (triggered) check at once; aioice leaves it to
    its retransmission timer, 0.5 s after the first try. Resending the same
    request now (the same transaction, so aioice's books stay as they are: its
    response completes the pending check) saves that half second on every
    relayed call set-up and resume. Once per transaction; if aioice's internals
    are not as expected, nothing is resent.
    """
    aioice.ice.Connection.check_incoming = (  # type: ignore[method-assign]
        _check_incoming if on else _original_check_incoming)


def _check_incoming(self: aioice.ice.Connection, message: Any, addr: tuple[str, int],
                    protocol: Any) -> None:
    _original_check_incoming(self, message, addr, protocol)
    try:
        in_progress = any(pair.protocol is protocol and pair.remote_addr == addr
                          and pair.state == aioice.ice.CandidatePair.State.IN_PROGRESS
                          for pair in self._check_list)
        if not in_progress:
            return
        for transaction in list(getattr(protocol, "transactions", {}).values()):
            request = getattr(transaction, "_Transaction__request", None)
            if (getattr(transaction, "_Transaction__addr", None) != addr or request is None
                    or getattr(transaction, "_rtc_agent_resent", False)):
                continue
            transaction._rtc_agent_resent = True
            protocol.send_stun(request, addr)
    except Exception:  # an aioice that changed: the retransmission timer still works
        log.debug("could not resend an in-progress ICE check", exc_info=True)


# ------------------------------------------------------------ UDP port range


class PortRangeExhausted(RuntimeError):
    """No port of the `--udp-ports` range is free: the call cannot have media.

    Not an OSError on purpose: aioice reads an OSError while binding as "skip
    this address", which would answer the call with no candidate instead of
    refusing it.
    """


_PORT_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})")
_udp_ports: tuple[int, int] | None = None
_next_port = 0  # where the next bind starts looking, so a just-freed port rests


def _checked_range(low: int, high: int, what: str) -> tuple[int, int]:
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValueError(f"{what}: ports must be within 1-65535")
    if low > high:
        raise ValueError(f"{what}: the first port must not exceed the last")
    return low, high


def parse_port_range(text: str) -> tuple[int, int]:
    """'40000-40009' -> (40000, 40009), both ends included; ValueError for anything else."""
    match = _PORT_RANGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"UDP port range {text!r}: expected LOW-HIGH, e.g. 40000-40999")
    return _checked_range(int(match[1]), int(match[2]), f"UDP port range {text!r}")


def split_port_range(ports: tuple[int, int], workers: int, index: int) -> tuple[int, int]:
    """Worker `index`'s share of `ports` among `workers` processes.

    Each process binds in its own share, so workers never compete for a port.
    Shares are contiguous and disjoint and cover the range; when it does not
    divide, the first shares are one port larger.
    """
    low, high = _checked_range(*ports, f"UDP port range {ports[0]}-{ports[1]}")
    size = high - low + 1
    if not 0 <= index < workers:
        raise ValueError(f"worker {index} does not exist among {workers}")
    if workers > size:
        raise ValueError(f"{size} UDP ports cannot be split between {workers} workers")
    base, extra = divmod(size, workers)
    start = low + index * base + min(index, extra)
    return start, start + base - 1 + (1 if index < extra else 0)


def restrict_udp_ports(ports: tuple[int, int] | None) -> None:
    """Bind host candidates only to ports in [low, high] (None restores aioice's port 0).

    A port is free again as soon as its peer connection closes (aiortc closes
    its ICE connection, which closes the socket). When every port is taken,
    gathering raises PortRangeExhausted out of `setLocalDescription`.
    """
    global _udp_ports, _next_port
    if ports is None:
        _udp_ports = None
        aioice.ice.Connection.get_component_candidates = (  # type: ignore[method-assign]
            _original_get_component_candidates)
        return
    _udp_ports = _checked_range(*ports, f"UDP port range {ports[0]}-{ports[1]}")
    _next_port = _udp_ports[0]
    aioice.ice.Connection.get_component_candidates = (  # type: ignore[method-assign]
        _get_component_candidates)


def _bind_in_range(address: str) -> socket.socket:
    """A non-blocking UDP socket on `address` and the first free port after the last one used.

    Each port is tried at most once; only "in use" moves on to the next one, as
    any other error (address not local, ...) would repeat for every port.
    """
    global _next_port
    assert _udp_ports is not None
    low, high = _udp_ports
    size = high - low + 1
    start = _next_port if low <= _next_port <= high else low
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                         socket.SOCK_DGRAM)
    try:
        for i in range(size):
            port = low + (start - low + i) % size
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            _next_port = port + 1 if port < high else low
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                            aioice.turn.UDP_SOCKET_BUFFER_SIZE)
            return sock
    except BaseException:
        sock.close()
        raise
    sock.close()
    raise PortRangeExhausted(f"no free UDP port in {low}-{high} (--udp-ports) on {address}")


# Why this exists: aioice has no option for the local port of host candidates
# (its open PR #112 proposes `Connection(port_range=...)`); it binds port 0 in
# `Connection.get_component_candidates`, which also starts the STUN queries
# for those sockets and the TURN allocation. This stands in for that method
# while a range is set: host sockets are bound here, in the range, with the
# candidates aioice would make; STUN is asked through aioice's own
# `server_reflexive_candidate`; TURN is left to the original method, called
# with no address so that it binds no host socket itself. The guard tests in
# tests/agent/test_ice_addressing.py check what this relies on. Drop it once
# aioice can take a range.
async def _get_component_candidates(
    self: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: int = 5,  # noqa: ASYNC109 (aioice's signature, which this stands in for)
) -> list[Candidate]:
    loop = asyncio.get_running_loop()
    hosts: list[aioice.ice.StunProtocol] = []
    try:
        for address in addresses:
            try:
                sock = _bind_in_range(address)
            except OSError as exc:  # as aioice does: an address that cannot be bound is skipped
                log.info("ICE: could not bind to %s: %s", address, exc)
                continue
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), sock=sock)
            except BaseException:
                sock.close()
                raise
            hosts.append(protocol)
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
    except BaseException:  # PortRangeExhausted included: nothing stays bound
        for protocol in hosts:
            protocol.transport.close()
        raise
    if self._closing:  # closed while binding: close() has already run, so close ours
        for protocol in hosts:
            protocol.transport.close()
        return []
    self._protocols += hosts  # close() closes them from now on

    async def reflexive() -> list[Candidate]:
        stun_server = self.stun_server
        if stun_server is None:
            return []
        tasks = [
            asyncio.create_task(aioice.ice.server_reflexive_candidate(p, stun_server))
            for p in hosts
            if ipaddress.ip_address(p.local_candidate.host).version == 4
        ]
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        return [t.result()[0] for t in done if t.exception() is None]

    found, relayed = await asyncio.gather(
        reflexive(), _original_get_component_candidates(self, component, [], timeout))
    return [p.local_candidate for p in hosts] + found + relayed


# ------------------------------------------------------------ public address

_public_address: str | None = None


def announce_public_address(address: str | None) -> None:
    """Advertise host candidates as `address` (same ports); None advertises the local ones.

    For a node behind 1:1 NAT, like mediasoup's announced address. Host
    candidates of the other IP family keep their own address, and a
    server-reflexive candidate's related address names `address` too, so the
    SDP carries no private address of that family.
    """
    global _public_address
    if address is None:
        _public_address = None
        RTCIceGatherer.getLocalCandidates = _original_get_local_candidates  # type: ignore[method-assign]
        return
    _public_address = str(ipaddress.ip_address(address.strip()))  # ValueError: not an address
    RTCIceGatherer.getLocalCandidates = _announced_local_candidates  # type: ignore[method-assign]


# Why here, and not in aioice's candidates: aioice sends and receives through
# the socket bound to the local address and never uses a local candidate's
# `host` after gathering except in log lines (it pairs candidates by
# `_network_host`, which it keeps apart from `host` for mDNS). So checks work
# whatever is advertised: the NAT maps PUBLIC:port to LOCAL:port, answers leave
# from LOCAL:port and are mapped back to PUBLIC:port, which is the address the
# caller checked. Binding to the public address is what would fail (it is not
# local). aiortc builds each m-line's `a=candidate` lines and its `c=` line from
# `RTCIceGatherer.getLocalCandidates()`, converted afresh on every call, so
# rewriting its result changes only what is signalled and leaves aioice's own
# view (the real address) intact.
def _announced_local_candidates(self: RTCIceGatherer) -> list[RTCIceCandidate]:
    candidates = _original_get_local_candidates(self)
    public = _public_address
    if public is None:
        return candidates
    version = ipaddress.ip_address(public).version
    local = {c.ip for c in candidates
             if c.type == "host" and ipaddress.ip_address(c.ip).version == version}
    for c in candidates:
        if c.type == "host" and c.ip in local:
            c.ip = public
        if c.relatedAddress in local:
            c.relatedAddress = public
    return candidates


def rtc_configuration(ice_servers: Sequence[dict] = ()) -> RTCConfiguration:
    """An RTCConfiguration from browser-style dicts; empty means no STUN at all.

    aiortc falls back to a public STUN server when given no configuration, which
    only stalls gathering on a machine without internet; an explicit empty list
    avoids that.
    """
    servers = [
        RTCIceServer(
            urls=s["urls"], username=s.get("username"), credential=s.get("credential")
        )
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
