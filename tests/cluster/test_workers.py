"""One node, `serve --workers 2`: placement, routing to a call's owner, restarts, drain."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection

from rtc_agent.ice import restrict_host_addresses
from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from tests.cluster.nodes import Node, http

pytestmark = pytest.mark.slow

READY_S = 20.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    started = Node(tmp_path_factory.mktemp("workers"), "a", workers=2, max_calls=20).start()
    try:
        yield started
    finally:
        started.stop()


async def place(url: str, count: int) -> list[ScriptedCaller]:
    """`count` calls placed at once; each is connected and has its `session.ready`."""
    callers = [ScriptedCaller(url) for _ in range(count)]
    results = await asyncio.gather(*(c.connect(timeout=READY_S) for c in callers),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await hang_up(callers)
        raise failed[0]
    return callers


def ready(caller: ScriptedCaller) -> dict:
    return next(e for e in caller.events if e.get("type") == "session.ready")


async def hang_up(callers: list[ScriptedCaller]) -> None:
    await asyncio.gather(*(c.hangup() for c in callers))


def wait_calls(node: Node, calls: int, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        _, body = node.health()
        if body.get("calls") == calls or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


async def spoken_turn(caller: ScriptedCaller, text: str = "hello") -> dict:
    """A typed turn; the assistant's final transcript."""
    start = len(caller.events)
    caller.send({"type": "text", "text": text})
    return await caller.wait_event(
        lambda e: e.get("type") == "transcript.done" and e.get("role") == "assistant",
        timeout=30, start=start)


def test_healthz_answers_for_the_whole_node(node: Node) -> None:
    status, body = node.health()
    assert status == 200 and body["status"] == "ok" and body["ok"] is True
    assert body["node"] == "a"
    assert sorted(w["id"] for w in body["workers"]) == ["a/0", "a/1"]
    assert {w["capacity"] for w in body["workers"]} == {10}
    assert body["capacity"] == 20 and body["max_calls"] == 20
    pids = {w["pid"] for w in body["workers"]}
    assert len(pids) == 2 and node.proc is not None and node.proc.pid not in pids
    assert all(w["draining"] is False for w in body["workers"])
    assert body["backend"] == "offline" and body["backend_state"] == "up"


async def test_offers_spread_over_the_workers(node: Node) -> None:
    callers = await place(node.url, 6)
    try:
        owners = collections.Counter(ready(c)["worker"] for c in callers)
        assert {ready(c)["node"] for c in callers} == {"a"}
        assert set(owners) == {"a/0", "a/1"}, owners
        assert all(2 <= n <= 4 for n in owners.values()), owners  # 3/3 ± 1
        body = wait_calls(node, 6)
        assert {w["id"]: w["calls"] for w in body["workers"]} == dict(owners)
        assert {c.call_id for c in callers} == {ready(c)["call_id"] for c in callers}
    finally:
        await hang_up(callers)
    assert wait_calls(node, 0)["calls"] == 0


async def test_hang_up_reaching_another_worker_ends_the_right_call(node: Node) -> None:
    """Which worker accepts a connection is the kernel's choice: place and hang up until
    a DELETE was received by a worker that does not hold the call."""
    forwarded = 0
    for _ in range(12):
        callers = await place(node.url, 2)
        try:
            for caller in callers:
                before = wait_calls(node, 2)
                owner = ready(caller)["worker"]
                status, body, headers = http("DELETE", f"{node.url}/calls/{caller.call_id}")
                assert status == 200 and body == {"call_id": caller.call_id, "closed": True}
                via = headers.get("X-Rtc-Agent-Via")
                if via is not None:
                    assert via != owner
                    forwarded += 1
                after = wait_calls(node, sum(w["calls"] for w in before["workers"]) - 1)
                counts = {w["id"]: w["calls"] for w in after["workers"]}
                assert counts[owner] == {w["id"]: w["calls"] for w in before["workers"]}[
                    owner] - 1, (owner, before, after)
                # gone everywhere: any worker now says so
                assert http("DELETE", f"{node.url}/calls/{caller.call_id}")[0] == 404
        finally:
            await hang_up(callers)
        if forwarded:
            break
    assert forwarded, "no DELETE was ever received by the other worker"
    assert http("DELETE", f"{node.url}/calls/not-a-call")[0] == 404


async def offer_sdp() -> str:
    """A real offer, as a resuming caller would post (its own connection not kept)."""
    restrict_host_addresses(["127.0.0.1"])  # candidates on loopback only, as every test's
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("events")
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_a_resume_reaching_another_worker_reaches_the_owner(node: Node) -> None:
    (caller,) = await place(node.url, 1)
    try:
        owner, token = ready(caller)["worker"], ready(caller)["resume_token"]
        url = f"{node.url}/calls/{caller.call_id}/resume"
        sdp = await offer_sdp()
        # A wrong token, sent until a worker that does not hold the call receives it:
        # the owner refuses it (403), where a worker knowing nothing would say 404.
        for _ in range(24):
            status, body, headers = await asyncio.to_thread(
                http, "POST", url, {"sdp": sdp, "type": "offer", "resume_token": "wrong"})
            assert (status, body["error"]["code"]) == (403, "invalid_resume_token")
            via = headers.get("X-Rtc-Agent-Via")
            if via is not None:
                assert via != owner
                break
        else:
            raise AssertionError("no resume was ever received by the other worker")
        # real resumes, over whichever worker the kernel picks, carry the same call on
        for _ in range(4):
            back = ScriptedCaller(node.url)
            await back.connect(timeout=READY_S, resume=(caller.call_id, token))
            await caller.hangup(delete=False)
            caller = back
        assert wait_calls(node, 1)["calls"] == 1
        n = len(caller.events)
        caller.send({"type": "text", "text": "what is two plus two"})
        reply = await caller.wait_event(
            lambda e: e.get("type") == "transcript.done" and e.get("role") == "assistant",
            30, start=n)
        assert "four" in reply["text"]
        # a call that is over: any worker says so, in words the page can show
        await caller.hangup()
        status, body, _ = await asyncio.to_thread(
            http, "POST", url, {"sdp": sdp, "type": "offer", "resume_token": token})
        assert (status, body["error"]["code"]) == (404, "call_ended")
    finally:
        await hang_up([caller])


async def test_a_killed_worker_is_restarted_and_skipped_meanwhile(node: Node) -> None:
    callers = await place(node.url, 4)
    try:
        by_worker = collections.defaultdict(list)
        for caller in callers:
            by_worker[ready(caller)["worker"]].append(caller)
        assert set(by_worker) == {"a/0", "a/1"}
        _, body = node.health()
        victim = next(w for w in body["workers"] if w["id"] == "a/0")
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        # placed meanwhile: on the living worker; or, when the restart (~0.8 s) beat the
        # offer (a busy machine makes placing slow), on the new a/0, never the dead one
        during = await place(node.url, 1)
        callers += during
        if ready(during[0])["worker"] != "a/1":
            _, now = node.health()
            assert {w["id"]: w["pid"] for w in now["workers"]}.get("a/0") not in (
                None, victim["pid"])
        body = await asyncio.to_thread(node.wait_workers, 2, 10.0, {victim["pid"]})
        back_after = time.monotonic() - killed
        assert back_after < 6.0, f"worker back after {back_after:.1f} s"
        assert body["worker_restarts"] >= 1
        # the other worker's calls are untouched: a turn works on each
        for caller in by_worker["a/1"] + during:
            assert caller.pc is not None and caller.pc.connectionState == "connected"
            reply = await spoken_turn(caller)
            assert reply["text"]
        # and the restarted worker takes calls again
        later = await place(node.url, 2)
        callers += later
        assert "a/0" in {ready(c)["worker"] for c in later}
    finally:
        await hang_up(callers)


def test_the_internal_address_needs_the_cluster_secret(node: Node) -> None:
    """Nobody outside the node can place a call on a worker directly (no token,
    no --max-calls): its internal port answers 403 without the secret."""
    import re

    log = node.log.read_text(errors="replace")
    # each worker's internal address is in the node's table; find one through /healthz's
    # worker pids and /proc: the sockets a worker listens on besides the public port
    _, body = node.health()
    pid = body["workers"][0]["pid"]
    ports = _listening_ports(pid) - {node.port}
    assert ports, f"worker {pid} listens on no internal port\n{log[-2000:]}"
    for port in ports:
        status, answer, _ = http("POST", f"http://127.0.0.1:{port}/offer",
                                 {"type": "offer", "sdp": "v=0"})
        assert status == 403 and answer["error"]["code"] == "forbidden"
        status, _, _ = http("POST", f"http://127.0.0.1:{port}/offer", {"type": "offer",
                            "sdp": "v=0"}, headers={"X-Rtc-Agent-Cluster": "guess"})
        assert status == 403
    assert re.search(r"worker a/0 serving", log)


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc/net/tcp and its fds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ---------------------------------------------------------------- drain


async def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    node = Node(tmp_path, "d", workers=2, max_calls=4).start()
    try:
        callers = await place(node.url, 2)
        node.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (health := node.health())[1].get("status") != "draining":
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.1)
        status, body = health
        assert status == 503 and body["status"] == "draining"
        with pytest.raises(CallFailed) as refused:
            await place(node.url, 1)
        assert "503" in refused.value.detail and "draining" in refused.value.detail
        assert "Retry-After" in refused.value.detail
        # calls in progress go on
        for caller in callers:
            assert (await spoken_turn(caller))["text"]
        assert node.proc is not None and node.proc.poll() is None
        await hang_up(callers)
        assert await asyncio.to_thread(node.wait_exit, 15) == 0
    finally:
        node.stop()


async def test_drain_timeout_ends_calls_with_server_shutdown(tmp_path: Path) -> None:
    node = Node(tmp_path, "t", workers=2, max_calls=4, args=("--drain-timeout", "2")).start()
    try:
        callers = await place(node.url, 2)
        node.signal(signal.SIGTERM)
        for caller in callers:
            ended = await caller.wait_event(lambda e: e.get("type") == "call.ended",
                                            timeout=15, start=0)
            assert ended["reason"] == "server_shutdown"
        assert await asyncio.to_thread(node.wait_exit, 15) == 0
        await hang_up(callers)
    finally:
        node.stop()


async def test_a_second_signal_ends_at_once(tmp_path: Path) -> None:
    node = Node(tmp_path, "s", workers=2, max_calls=4).start()
    try:
        callers = await place(node.url, 2)
        node.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        node.signal(signal.SIGINT)
        started = time.monotonic()
        assert await asyncio.to_thread(node.wait_exit, 15) == 0
        assert time.monotonic() - started < 8
        for caller in callers:
            ended = await caller.wait_event(lambda e: e.get("type") == "call.ended",
                                            timeout=5, start=0)
            assert ended["reason"] == "server_shutdown"
        await hang_up(callers)
    finally:
        node.stop()


# ---------------------------------------------------------------- media ports


def _free_udp_range(size: int) -> int:
    """The first port of `size` consecutive UDP ports free on loopback a moment ago."""
    import random
    import socket

    for _ in range(50):
        low = random.randrange(40000, 60000 - size)
        sockets = []
        try:
            for port in range(low, low + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free UDP range")


async def test_udp_ports_split_between_workers_and_a_full_range_is_503(tmp_path: Path) -> None:
    low = _free_udp_range(10)
    node = Node(tmp_path, "u", workers=2, max_calls=20,
                args=("--udp-ports", f"{low}-{low + 9}")).start()
    callers: list[ScriptedCaller] = []
    try:
        callers = await place(node.url, 10)
        shares = {"u/0": range(low, low + 5), "u/1": range(low + 5, low + 10)}
        for caller in callers:
            assert caller.pc is not None and caller.pc.remoteDescription is not None
            ports = [int(line.split()[5]) for line in
                     caller.pc.remoteDescription.sdp.splitlines()
                     if line.startswith("a=candidate:")]
            assert ports and all(p in shares[ready(caller)["worker"]] for p in ports), (
                ports, ready(caller)["worker"], low)
        with pytest.raises(CallFailed) as refused:
            await place(node.url, 1)
        assert refused.value.kind == "http_5xx"
        assert "503 no_media_ports" in refused.value.detail
        assert "Retry-After" in refused.value.detail
        # a port freed by a hang-up is used again
        await callers.pop().hangup()
        callers += await place(node.url, 1)
    finally:
        await hang_up(callers)
        node.stop()


def test_a_worker_that_cannot_start_stops_the_node(tmp_path: Path) -> None:
    """Not a restart loop forever: a clear error and exit status 1. (What the settings
    can get wrong, such as a missing certificate, is refused before any worker starts;
    here the worker processes themselves die at once, as a broken install would make
    them.)"""
    import subprocess
    import sys

    from tests.cluster.nodes import ROOT, offline_env

    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if sys.orig_argv[1:3] == ['-m', 'rtc_agent.serve']:\n"
        "    os._exit(3)\n")
    done = subprocess.run(
        [sys.executable, "-m", "rtc_agent.cli", "serve", "--workers", "2", "--port", "0",
         "--ice-address", "127.0.0.1"],
        capture_output=True, text=True, timeout=120,
        env={**offline_env(), "PYTHONPATH": str(tmp_path)}, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "failed to start 5 times in a row" in done.stderr
    assert "rtc-agent listening" not in done.stdout
