"""`--udp-ports` and `--public-address`: the two adaptations of aioice in rtc_agent.ice.

Real aiortc peers on 127.0.0.1 for the port range (and the announced address in
the SDP); a real 1:1 NAT (nftables DNAT/SNAT between two network namespaces)
for a call that can only connect through the announced public address. Guard
tests fail when aioice changes what the adaptations rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aioice.ice
import aioice.stun
import pytest
from aioice.candidate import Candidate
from aiortc import RTCIceGatherer, RTCPeerConnection, RTCSessionDescription

from rtc_agent import ice
from rtc_agent.ice import (
    PortRangeExhausted,
    announce_public_address,
    parse_port_range,
    restrict_host_addresses,
    restrict_udp_ports,
    rtc_configuration,
    split_port_range,
)
from tests.web.netns import REPO, NetNS, split_netns

PUBLIC = "203.0.113.7"  # TEST-NET-3: documentation only, never routed
CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ (\S+)", re.M)


@pytest.fixture(autouse=True)
def ice_switches() -> Iterator[None]:
    """Every switch back as it was: the rest of the suite shares this process."""
    saved_hosts = aioice.ice.get_host_addresses
    restrict_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        restrict_udp_ports(None)
        announce_public_address(None)
        aioice.ice.get_host_addresses = saved_hosts


def free_range(size: int, host: str = "127.0.0.1") -> tuple[int, int]:
    """`size` consecutive UDP ports that were all free a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            low = s.getsockname()[1]
        if low + size - 1 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(low, low + size):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind((host, port))
            return low, low + size - 1
        except OSError:
            continue
    raise RuntimeError(f"no {size} consecutive free UDP ports")


def bindable(ports: tuple[int, int], host: str = "127.0.0.1") -> list[int]:
    """The ports of the range that nothing holds (on `host`)."""
    free = []
    for port in range(ports[0], ports[1] + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE
                continue
            free.append(port)
    return free


@contextlib.contextmanager
def holding(ports: list[int], host: str = "127.0.0.1") -> Iterator[None]:
    """Occupy these UDP ports (as another program would) for the duration."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((host, port))
        yield


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def candidates(sdp: str) -> list[tuple[str, int, str]]:
    return [(ip, int(port), typ) for ip, port, typ in CANDIDATE.findall(sdp)]


async def offerer() -> tuple[RTCPeerConnection, RTCSessionDescription]:
    """A caller's peer with an audio track and the `events` channel (`pc.events`),
    its offer set."""
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.events = pc.createDataChannel("events")  # type: ignore[attr-defined]
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription


async def answer(offer: RTCSessionDescription) -> RTCPeerConnection:
    """Answer as the server does: remote offer, createAnswer, setLocalDescription."""
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.on("datachannel", lambda ch: ch.on("message", lambda m: ch.send(f"echo:{m}")))
    await pc.setRemoteDescription(offer)
    await pc.setLocalDescription(await pc.createAnswer())
    return pc


async def gather(**kwargs: Any) -> aioice.ice.Connection:
    conn = aioice.ice.Connection(ice_controlling=True, **kwargs)
    await conn.gather_candidates()
    return conn


# ------------------------------------------------------------ parsing and splitting


def test_parse_port_range() -> None:
    assert parse_port_range("40000-40009") == (40000, 40009)
    assert parse_port_range(" 5000-5000 ") == (5000, 5000)
    assert parse_port_range("1-65535") == (1, 65535)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("40009-40000", "must not exceed"),
        ("0-10", "1-65535"),
        ("60000-65536", "1-65535"),
        ("abc-def", "LOW-HIGH"),
        ("40000", "LOW-HIGH"),
        ("40000-", "LOW-HIGH"),
        ("-40000", "LOW-HIGH"),
        ("4_0000-40009", "LOW-HIGH"),
        ("+4000-4009", "LOW-HIGH"),
        ("4000-4009-4010", "LOW-HIGH"),
        ("", "LOW-HIGH"),
    ],
)
def test_parse_port_range_refuses(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_port_range(text)


@pytest.mark.parametrize(("low", "high", "workers"),
                         [(40000, 40009, 3), (40000, 40009, 10), (1, 65535, 7), (5, 5, 1),
                          (100, 111, 4)])
def test_split_port_range_covers_the_range_in_disjoint_shares(
        low: int, high: int, workers: int) -> None:
    shares = [split_port_range((low, high), workers, i) for i in range(workers)]
    assert shares[0][0] == low and shares[-1][1] == high
    for (_, end), (start, _) in itertools.pairwise(shares):
        assert start == end + 1  # contiguous, disjoint, in order
    sizes = [b - a + 1 for a, b in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_split_port_range_gives_the_remainder_to_the_first() -> None:
    assert [split_port_range((40000, 40009), 3, i) for i in range(3)] == [
        (40000, 40003), (40004, 40006), (40007, 40009)]


@pytest.mark.parametrize(("ports", "workers", "index", "says"),
                         [((40000, 40002), 4, 0, "cannot be split"),
                          ((40000, 40009), 2, 2, "does not exist"),
                          ((40000, 40009), 2, -1, "does not exist"),
                          ((40000, 40009), 0, 0, "does not exist"),
                          ((40009, 40000), 1, 0, "must not exceed")])
def test_split_port_range_refuses(ports: tuple[int, int], workers: int, index: int,
                                  says: str) -> None:
    with pytest.raises(ValueError, match=says):
        split_port_range(ports, workers, index)


# ------------------------------------------------------------ the port range


async def test_a_call_in_a_port_range_connects_and_frees_its_ports() -> None:
    ports = free_range(6)
    restrict_udp_ports(ports)
    caller, offer = await offerer()
    server = await answer(offer)
    try:
        sent = candidates(offer.sdp) + candidates(server.localDescription.sdp)
        assert sent and all(ports[0] <= port <= ports[1] for _, port, _ in sent), sent
        assert bindable(ports) != list(range(ports[0], ports[1] + 1))  # really bound there
        channel = caller.events  # type: ignore[attr-defined]
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        channel.on("message", lambda m: None if got.done() else got.set_result(m))
        channel.on("open", lambda: channel.send("hello"))
        await caller.setRemoteDescription(server.localDescription)
        async with asyncio.timeout(15):
            assert await got == "echo:hello"
        assert caller.connectionState == "connected"
    finally:
        await caller.close()
        await server.close()
    assert bindable(ports) == list(range(ports[0], ports[1] + 1))


async def test_a_closed_call_gives_its_port_back() -> None:
    """One port, three calls one after the other: each gets the port the last one freed."""
    ports = free_range(1)
    caller, offer = await offerer()  # the caller's own port is not limited
    try:
        restrict_udp_ports(ports)
        for _ in range(3):
            server = await answer(offer)
            assert {port for _, port, _ in candidates(server.localDescription.sdp)} == {ports[0]}
            await server.close()
    finally:
        await caller.close()


async def test_ports_rotate_and_skip_those_in_use() -> None:
    ports = free_range(4)
    low = ports[0]
    restrict_udp_ports(ports)
    seen = []
    for _ in range(5):
        conn = await gather()
        seen.append(conn.local_candidates[0].port)
        await conn.close()  # freed at once, yet the next bind starts after it
    assert seen == [low, low + 1, low + 2, low + 3, low]
    with holding([low + 1, low + 2]):
        conn = await gather()
        assert conn.local_candidates[0].port == low + 3
        other = await gather()
        assert other.local_candidates[0].port == low  # wrapped past the held ones
        await conn.close()
        await other.close()


async def test_exhausted_range_fails_set_local_description_and_leaks_nothing() -> None:
    """With every port taken, the answer fails loudly (PortRangeExhausted, naming the
    range) out of aiortc's setLocalDescription; nothing of the failed attempt stays
    bound, though one address had already got a port: the server can refuse the call
    (503) and the range does not shrink."""
    ports = free_range(2)
    caller, offer = await offerer()  # before the range: the caller's ports are its own
    restrict_host_addresses(["127.0.0.1", "127.0.0.2"])
    restrict_udp_ports(ports)
    server = RTCPeerConnection(rtc_configuration([]))
    try:
        await server.setRemoteDescription(offer)
        local = await server.createAnswer()
        with holding(list(range(ports[0], ports[1] + 1)), host="127.0.0.2"):
            before = open_fds()
            with pytest.raises(PortRangeExhausted, match=f"{ports[0]}-{ports[1]}"):
                await server.setLocalDescription(local)
            assert open_fds() - before == set(), "a socket of the failed answer is still open"
            assert bindable(ports) == list(range(ports[0], ports[1] + 1))  # 127.0.0.1's too
            await server.close()
            assert open_fds() - before == set()
    finally:
        await server.close()
        await caller.close()
    assert isinstance(PortRangeExhausted("x"), RuntimeError)  # aioice skips OSErrors


async def test_a_connection_closed_while_gathering_keeps_no_port() -> None:
    """A call hung up while its answer is gathering keeps no port: aioice's close()
    closes only the sockets it already knows of, so the adapter closes what it bound
    after that."""
    ports = free_range(2)
    restrict_udp_ports(ports)
    conn = aioice.ice.Connection(ice_controlling=True)
    await conn.close()
    await conn.gather_candidates()
    assert conn.local_candidates == []
    assert bindable(ports) == list(range(ports[0], ports[1] + 1))


class StunResponder(asyncio.DatagramProtocol):
    """A STUN server on loopback: answers Binding requests with the sender's address."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = aioice.stun.parse_message(data)
        response = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING,
            message_class=aioice.stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        self.transport.sendto(bytes(response), addr)


@contextlib.asynccontextmanager
async def stun_server() -> AsyncIterator[tuple[str, int]]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        StunResponder, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def test_stun_still_gives_a_reflexive_candidate_in_a_port_range() -> None:
    ports = free_range(3)
    restrict_udp_ports(ports)
    async with stun_server() as stun:
        conn = await gather(stun_server=stun)
        try:
            by_type = {c.type: c for c in conn.local_candidates}
            assert set(by_type) == {"host", "srflx"}
            host, srflx = by_type["host"], by_type["srflx"]
            assert ports[0] <= host.port <= ports[1]
            assert (srflx.host, srflx.port) == ("127.0.0.1", host.port)  # what STUN saw
            assert (srflx.related_address, srflx.related_port) == ("127.0.0.1", host.port)
        finally:
            await conn.close()


# ------------------------------------------------------------ guards on aioice


def test_guard_aioice_method_we_stand_in_for_keeps_its_signature() -> None:
    """rtc_agent.ice replaces Connection.get_component_candidates while a range is set,
    and calls the original for TURN: both need this exact signature."""
    params = inspect.signature(ice._original_get_component_candidates).parameters
    assert list(params) == ["self", "component", "addresses", "timeout"]
    assert params["timeout"].default == 5
    assert inspect.iscoroutinefunction(ice._original_get_component_candidates)
    assert list(inspect.signature(aioice.ice.server_reflexive_candidate).parameters) == [
        "protocol", "stun_server"]
    conn = aioice.ice.Connection(ice_controlling=True)
    assert conn._protocols == [] and conn._closing is False  # what the adapter touches


async def test_guard_aioice_binds_nothing_itself_when_given_no_address() -> None:
    """The adapter calls aioice's original with no address, for TURN only: it must not
    bind a host socket (outside the range) nor query STUN then."""
    async with stun_server() as stun:
        conn = aioice.ice.Connection(ice_controlling=True, stun_server=stun)
        before = open_fds()
        found = await ice._original_get_component_candidates(conn, 1, [])
        assert found == [] and conn._protocols == []
        assert open_fds() == before


async def test_guard_adapter_makes_the_host_candidate_aioice_makes() -> None:
    """The same host candidate as aioice's own but for the port; None puts aioice's back."""
    theirs = await gather()
    ports = free_range(2)
    restrict_udp_ports(ports)
    ours = await gather()
    restrict_udp_ports(None)
    assert aioice.ice.Connection.get_component_candidates is ice._original_get_component_candidates
    again = await gather()
    try:
        [a], [b], [c] = theirs.local_candidates, ours.local_candidates, again.local_candidates
        fields = ("foundation", "component", "transport", "priority", "host", "type",
                  "related_address", "related_port")
        assert [getattr(b, f) for f in fields] == [getattr(a, f) for f in fields]
        assert ports[0] <= b.port <= ports[1]
        assert not ports[0] <= c.port <= ports[1]  # port 0 again: the kernel's choice
        # aioice's close() must close what the adapter bound
        await ours.close()
        assert bindable(ports) == list(range(ports[0], ports[1] + 1))
    finally:
        for conn in (theirs, ours, again):
            await conn.close()


# ------------------------------------------------------------ the announced address


async def test_answer_announces_the_public_address_only() -> None:
    caller, offer = await offerer()
    announce_public_address(PUBLIC)
    server = await answer(offer)
    try:
        sdp = server.localDescription.sdp
        sent = candidates(sdp)
        assert sent and {ip for ip, _, _ in sent} == {PUBLIC}, sent
        assert "127.0.0.1" not in sdp  # neither in a candidate nor in the c= line
        assert f"c=IN IP4 {PUBLIC}" in sdp
        # same ports as the sockets aioice bound, which stay on the local address
        assert server.sctp is not None
        gatherer = server.sctp.transport.transport.iceGatherer
        local = gatherer._connection.local_candidates
        assert {p for _, p, _ in sent} == {c.port for c in local}
        assert {c.host for c in local} == {"127.0.0.1"}
    finally:
        await server.close()
        await caller.close()
    announce_public_address(None)
    assert RTCIceGatherer.getLocalCandidates is ice._original_get_local_candidates
    server = await answer(offer)
    try:
        assert {ip for ip, _, _ in candidates(server.localDescription.sdp)} == {"127.0.0.1"}
    finally:
        await server.close()


def test_public_address_must_be_an_address() -> None:
    for bad in ("nat.example.com", "203.0.113", ""):
        with pytest.raises(ValueError):
            announce_public_address(bad)


def test_public_address_rewrites_its_family_and_related_addresses() -> None:
    """An IPv4 public address stands for the IPv4 host candidates only; a reflexive
    candidate's related address (the private one) is not sent either."""
    def cand(typ: str, host: str, port: int, raddr: str | None = None) -> Candidate:
        return Candidate(foundation="f", component=1, transport="udp", priority=1, host=host,
                         port=port, type=typ, related_address=raddr,
                         related_port=port if raddr else None)

    gatherer: Any = SimpleNamespace(_connection=SimpleNamespace(local_candidates=[
        cand("host", "10.0.0.5", 40000), cand("host", "2001:db8::5", 40001),
        cand("srflx", "198.51.100.1", 40000, raddr="10.0.0.5"),
        cand("relay", "198.51.100.2", 50000, raddr="198.51.100.1")]))
    announce_public_address(PUBLIC)
    got = [(c.type, c.ip, c.port, c.relatedAddress)
           for c in RTCIceGatherer.getLocalCandidates(gatherer)]
    assert got == [("host", PUBLIC, 40000, None), ("host", "2001:db8::5", 40001, None),
                   ("srflx", "198.51.100.1", 40000, PUBLIC),
                   ("relay", "198.51.100.2", 50000, "198.51.100.1")]
    announce_public_address("2001:db8::99")
    hosts = [(c.type, c.ip) for c in RTCIceGatherer.getLocalCandidates(gatherer)][:2]
    assert hosts == [("host", "10.0.0.5"), ("host", "2001:db8::99")]


# ------------------------------------------------------------ through a real 1:1 NAT

# One aiortc peer per namespace; JSON lines over stdin/stdout carry the SDP.
# argv: role ("answer" or "offer"), local address, public address (answer only)
PEER_SCRIPT = """
import asyncio, json, sys
from aiortc import RTCPeerConnection, RTCSessionDescription
from rtc_agent.ice import announce_public_address, restrict_host_addresses, rtc_configuration

def emit(**msg):
    print(json.dumps(msg), flush=True)

async def read(reader):
    return json.loads(await reader.readline())

async def main(role, local, public=None):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    restrict_host_addresses([local])
    pc = RTCPeerConnection(rtc_configuration([]))
    if role == "answer":
        announce_public_address(public)
        pc.on("datachannel", lambda ch: ch.on("message", lambda m: ch.send("echo:" + m)))
        await pc.setRemoteDescription(RTCSessionDescription(**await read(reader)))
        await pc.setLocalDescription(await pc.createAnswer())
        emit(sdp=pc.localDescription.sdp, type="answer")
        await reader.readline()  # the test says when to hang up
    else:
        channel = pc.createDataChannel("events")
        got = loop.create_future()
        channel.on("open", lambda: channel.send("ping"))
        channel.on("message", lambda m: got.done() or got.set_result(m))
        await pc.setLocalDescription(await pc.createOffer())
        emit(sdp=pc.localDescription.sdp, type="offer")
        await pc.setRemoteDescription(RTCSessionDescription(**await read(reader)))
        try:
            reply = await asyncio.wait_for(got, 15)
        except asyncio.TimeoutError:
            reply = None
        pair = pc.sctp.transport.transport._connection._nominated.get(1)
        emit(reply=reply, ice=pc.iceConnectionState,
             remote=list(pair.remote_addr) if pair else None)
    await pc.close()

asyncio.run(main(*sys.argv[1:]))
"""


def nat_tools_missing() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (for ip netns and nft)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


def one_to_one_nat(public: str, private: str, peer: str) -> str:
    """nftables rules in the server's namespace: `public` <-> `private`, both ways, as a
    cloud's 1:1 NAT does; the peer's packets straight to `private` are dropped."""
    return f"""
table ip rtca_nat {{
    chain guard {{
        type filter hook prerouting priority -150; policy accept;
        ip saddr {peer} ip daddr {private} counter drop
    }}
    chain inbound {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {public} counter dnat to {private}
    }}
    chain outbound {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {private} ip daddr {peer} counter snat to {public}
    }}
}}
"""


# The caller behind its own stateful firewall (a home router): nothing reaches it
# unless it sent there first, so the server's checks cannot open the path by
# themselves and the caller must reach the server at the address in the SDP.
CALLER_FIREWALL = """
table ip rtca_caller {
    chain inbound {
        type filter hook input priority filter; policy accept;
        iifname "rtca1" ct state new counter drop
    }
}
"""


def nft_counter(ns: NetNS, chain: str, table: str = "rtca_nat") -> int:
    out = subprocess.run([*ns.exec_prefix(), "nft", "list", "chain", "ip", table, chain],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    match = re.search(r"counter packets (\d+)", out)
    assert match, out
    return int(match[1])


async def spawn_peer(ns: NetNS, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *ns.exec_prefix(), sys.executable, "-c", PEER_SCRIPT, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO)


async def line(proc: asyncio.subprocess.Process, timeout_s: float = 20) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
    if not raw:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"peer exited: {err.decode(errors='replace')[-3000:]}")
    return dict(json.loads(raw))


async def test_call_through_one_to_one_nat_connects_on_the_public_address() -> None:
    """The server's namespace owns only the private address A and a NAT maps the public
    P to it; the caller, in its own namespace behind a stateful firewall, may reach A
    only through P. The answer names only P, and the call's ICE checks, DTLS and a
    data-channel round trip work. (Announcing A instead fails: checked by hand.)"""
    missing = nat_tools_missing()
    if missing:
        pytest.skip(f"the 1:1 NAT test needs {', '.join(missing)}")
    with split_netns() as (server_ns, caller_ns):
        private, peer = server_ns.server_ip, caller_ns.peer_ip
        public = f"203.0.113.{server_ns.subnet}"
        await asyncio.to_thread(
            subprocess.run, [*server_ns.exec_prefix(), "nft", "-f", "-"], check=True,
            input=one_to_one_nat(public, private, peer), text=True, timeout=10)
        await asyncio.to_thread(
            subprocess.run, [*caller_ns.exec_prefix(), "nft", "-f", "-"], check=True,
            input=CALLER_FIREWALL, text=True, timeout=10)
        # the caller's way to P is the server's link, as to any host behind a router
        await asyncio.to_thread(
            subprocess.run, ["ip", "-n", caller_ns.name, "route", "add", f"{public}/32",
                             "via", private], check=True, timeout=10)
        server = await spawn_peer(server_ns, "answer", private, public)
        caller = await spawn_peer(caller_ns, "offer", peer)
        try:
            assert caller.stdin is not None and server.stdin is not None
            offer = await line(caller)
            server.stdin.write((json.dumps(offer) + "\n").encode())
            answered = await line(server)
            sent = candidates(answered["sdp"])
            assert sent and {ip for ip, _, _ in sent} == {public}, sent
            assert private not in answered["sdp"]
            caller.stdin.write((json.dumps(answered) + "\n").encode())
            result = await line(caller, timeout_s=25)
            assert result["reply"] == "echo:ping", result
            assert result["ice"] == "completed"
            assert result["remote"][0] == public  # the caller's checks went to P
            inbound, outbound, guard = await asyncio.to_thread(
                lambda: [nft_counter(server_ns, c) for c in ("inbound", "outbound", "guard")])
            assert inbound + outbound > 0  # the call's flow was translated (NAT chains
            assert guard == 0  # see a flow's first packet only); nothing went to A directly
            server.stdin.write(b"bye\n")
            await asyncio.wait_for(asyncio.gather(server.wait(), caller.wait()), 10)
        finally:
            for proc in (server, caller):
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
