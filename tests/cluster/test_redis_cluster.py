"""Two nodes × two workers on a real Redis: placement across nodes, routing to a
call's owner from any node, a full cluster, a Redis outage, and draining a node."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_agent.loadtest.caller import CallFailed
from tests.cluster.nodes import SECRET, Node, http
from tests.cluster.redis_server import RedisServer
from tests.cluster.test_workers import hang_up, place, ready, spoken_turn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    from tests.cluster.conftest import _server

    yield from _server()


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("cluster")
    args = ("--redis-url", redis.url(), "--cluster-secret", SECRET)
    a = Node(tmp, "a", workers=2, max_calls=4, args=args)
    b = Node(tmp, "b", workers=2, max_calls=4, args=args)
    try:
        a.start()
        b.start()
        wait_cluster(a, workers=4)
        yield a, b
    finally:
        a.stop()
        b.stop()


def wait_cluster(node: Node, *, workers: int, timeout_s: float = 15.0) -> dict:
    """Until the node's /healthz sees `workers` workers in the cluster; its body."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        _, body = node.health()
        if body.get("cluster", {}).get("workers") == workers:
            return body
        time.sleep(0.2)
    pytest.fail(f"cluster of {workers} workers not seen by {node.name}: {body}")


def wait_idle(*nodes: Node, timeout_s: float = 10.0) -> None:
    """Until no node holds a call, and the registry (a second behind) says so too."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        bodies = [n.health()[1] for n in nodes]
        if all(b.get("calls") == 0 and b.get("cluster", {}).get("calls") == 0 for b in bodies):
            return
        time.sleep(0.1)
    pytest.fail("calls did not end")


async def test_offers_to_one_node_spread_over_every_worker(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    callers = await place(a.url, 6)
    try:
        owners = collections.Counter(ready(c)["worker"] for c in callers)
        assert set(owners) == {"a/0", "a/1", "b/0", "b/1"}, owners
        deadline = time.monotonic() + 3  # reports reach Redis once a second
        while (health := a.health()[1])["cluster"]["calls"] != 6:
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.1)
        assert health["cluster"] == {"nodes": 2, "workers": 4, "calls": 6, "capacity": 8,
                                     "draining": 0}
        assert health["registry"]["state"] == "ok"
        on_b = [c for c in callers if ready(c)["node"] == "b"]
        on_a = [c for c in callers if ready(c)["node"] == "a"]
        # a turn on a call that node B holds (its offer went to node A)
        assert (await spoken_turn(on_b[0]))["text"]
        # DELETE through node B of a call on node A
        target = on_a[0]
        status, body, headers = http("DELETE", f"{b.url}/calls/{target.call_id}")
        assert status == 200 and body["closed"] is True
        assert headers.get("X-Rtc-Agent-Via", "").startswith("b/")
        assert http("DELETE", f"{a.url}/calls/{target.call_id}")[0] == 404
    finally:
        await hang_up(callers)
    wait_idle(a, b)


async def test_the_cluster_is_full_only_when_every_worker_is(nodes: tuple[Node, Node]
                                                             ) -> None:
    a, b = nodes
    callers = await place(a.url, 8)  # every worker's share: 4 workers × 2 calls
    try:
        assert collections.Counter(ready(c)["worker"] for c in callers) == {
            "a/0": 2, "a/1": 2, "b/0": 2, "b/1": 2}
        with pytest.raises(CallFailed) as refused:
            await place(b.url, 1)
        assert refused.value.kind == "at_capacity"
        assert "Retry-After" in refused.value.detail
    finally:
        await hang_up(callers)
    wait_idle(a, b)


async def test_redis_outage_keeps_calls_and_places_locally(
        nodes: tuple[Node, Node], redis: RedisServer) -> None:
    a, b = nodes
    callers = await place(a.url, 4)
    try:
        redis.stop()
        deadline = time.monotonic() + 10
        while a.health()[1].get("registry", {}).get("state") != "unreachable":
            assert time.monotonic() < deadline, a.health()
            await asyncio.sleep(0.2)
        status, health = a.health()
        assert status == 200 and health["status"] == "ok" and "cluster" not in health
        # every call held goes on, on both nodes
        for caller in callers:
            assert (await spoken_turn(caller))["text"]
        # new offers are still answered, on the node they reach
        local = await place(b.url, 1)
        callers += local
        assert ready(local[0])["node"] == "b"
        await asyncio.sleep(2.5)  # a few failed heartbeats
        redis.start()
        body = wait_cluster(a, workers=4, timeout_s=10)
        assert body["registry"]["state"] == "ok"
        assert body["cluster"]["calls"] == 5
        await asyncio.sleep(1.5)  # after the first exchanges on the pool's old connections
        # one warning per worker for the outage, and one line when it is over
        for node in (a, b):
            lines = node.log.read_text(errors="replace").splitlines()
            for worker in (f"{node.name}/0", f"{node.name}/1"):
                mine = [ln for ln in lines if f"[{worker}]" in ln and "registry" in ln]
                down = [ln for ln in mine if "WARNING" in ln and "unreachable" in ln]
                back = [ln for ln in mine if "reachable again" in ln]
                assert len(down) == 1 and len(back) == 1, mine
    finally:
        await hang_up(callers)
    wait_idle(a, b)


async def test_draining_node_b_sends_new_calls_to_a_and_exits_after_its_last(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    # After the Redis outage of the test before, B's reports come back on its next
    # heartbeat: until A sees them, A would place every call on itself.
    wait_cluster(a, workers=4)
    callers = await place(a.url, 3)  # one per worker: B holds one or two, A has room left
    try:
        on_b = [c for c in callers if ready(c)["node"] == "b"]
        assert on_b
        b.signal(signal.SIGTERM)
        # B's workers drain (one without calls leaves at once): A's two alone take calls
        deadline = time.monotonic() + 5
        while True:
            cluster = a.health()[1]["cluster"]
            if cluster["workers"] - cluster["draining"] == 2:
                break
            assert time.monotonic() < deadline, cluster
            await asyncio.sleep(0.1)
        status, health = b.health()
        assert status == 503 and health["status"] == "draining"
        # offers reaching B are placed on A
        later = await place(b.url, 2)
        callers += later
        assert {ready(c)["node"] for c in later} == {"a"}
        # B's calls finish their turn
        for caller in on_b:
            assert (await spoken_turn(caller))["text"]
        assert b.proc is not None and b.proc.poll() is None
        await hang_up(on_b)
        assert await asyncio.to_thread(b.wait_exit, 15) == 0
        body = wait_cluster(a, workers=2)
        assert body["cluster"]["nodes"] == 1
    finally:
        await hang_up(callers)


def test_redis_needs_a_cluster_secret(tmp_path: Path, redis: RedisServer) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rtc_agent.cli", "serve", "--redis-url",
                           redis.url(), "--port", "0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "--cluster-secret" in done.stderr
