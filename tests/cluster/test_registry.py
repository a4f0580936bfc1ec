"""The Redis registry against a real redis-server: reports, owners, expiry, outages.

Two `RedisRegistry` objects on one server stand for two nodes. Short TTLs and
intervals keep the file quick; time bounds are generous, for a loaded 2-core
machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from rtc_agent.cluster.placement import WorkerLoad, ranked
from rtc_agent.cluster.registry import RedisRegistry, RegistryUnavailable, redact_url
from tests.cluster.redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)

LOGGER = "rtc_agent.cluster.registry"
FAST: dict[str, float] = {"ttl_s": 1.0, "interval_s": 0.2, "timeout_s": 0.3}

Factory = Callable[..., RedisRegistry]


def report(worker_id: str, *, calls: int = 0, capacity: int = 10, draining: bool = False,
           cpu: float = 0.0) -> WorkerLoad:
    node, _, index = worker_id.partition("/")
    return WorkerLoad(id=worker_id, node=node, index=int(index), pid=1000 + int(index),
                      url=f"http://127.0.0.1:{9100 + int(index)}", calls=calls,
                      capacity=capacity, draining=draining, cpu=cpu, updated=time.time())


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    """Poll until check() holds; the seconds it took. Fails after within_s."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within_s, f"not true within {within_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def listed(registry: RedisRegistry) -> list[str]:
    return [w.id for w in await registry.workers()]


@pytest.fixture
async def registries() -> AsyncIterator[Factory]:
    """Makes registries; closes them all (and cancels their heartbeats) afterwards."""
    made: list[RedisRegistry] = []

    def make(url: str, **options: Any) -> RedisRegistry:
        made.append(RedisRegistry(url, **options))
        return made[-1]

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client, to look at and tamper with the keys behind the registry's back."""
    client = redis.asyncio.Redis.from_url(redis_server.url())
    yield client
    await client.aclose()


async def heartbeat(registry: RedisRegistry, load: Callable[[], WorkerLoad],
                    calls: Callable[[], Any] = frozenset) -> asyncio.Task[None]:
    task = asyncio.create_task(registry.run(load, calls))
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reports_round_trip_between_two_nodes(redis_server: RedisServer,
                                                    registries: Factory) -> None:
    a, b = registries(redis_server.url()), registries(redis_server.url())
    assert a.state == "connecting"
    mine, theirs = report("a/0", calls=2, cpu=0.5), report("b/0", calls=1)
    await a.publish(mine)
    await b.publish(theirs)
    assert await a.workers() == [mine, theirs]
    assert await b.workers() == [mine, theirs]
    assert a.state == b.state == "ok" and a.last_error is None


async def test_a_report_drops_out_within_ttl_when_its_heartbeat_stops(
        redis_server: RedisServer, registries: Factory, raw: redis.asyncio.Redis) -> None:
    a, b = registries(redis_server.url(), **FAST), registries(redis_server.url(), **FAST)
    task = await heartbeat(a, lambda: report("a/0"))
    other = await heartbeat(b, lambda: report("b/0"))
    await eventually(lambda: _contains(b, "a/0"), within_s=2)
    await asyncio.sleep(1.5)  # past the first TTL: the heartbeat keeps it listed
    assert await listed(b) == ["a/0", "b/0"]
    await stop(task)
    assert await listed(b) == ["a/0", "b/0"]  # still within its TTL
    took = await eventually(lambda: _absent(b, "a/0"), within_s=3)
    assert took <= 1.0 + 0.5, f"listed {took:.2f} s after the last heartbeat (ttl 1 s)"
    # The index forgets it too (one TTL later, the slack for clock skew), though
    # b's heartbeat keeps the index itself alive: nothing grows without bound.
    await eventually(lambda: _not_indexed(b, raw, "a/0"), within_s=4)
    assert await listed(b) == ["b/0"]
    await stop(other)


async def _contains(registry: RedisRegistry, worker_id: str) -> bool:
    return worker_id in await listed(registry)


async def _absent(registry: RedisRegistry, worker_id: str) -> bool:
    return worker_id not in await listed(registry)


async def _not_indexed(registry: RedisRegistry, raw: redis.asyncio.Redis,
                       worker_id: str) -> bool:
    await registry.workers()  # prunes
    return await raw.zscore("rtc-agent:workers", worker_id) is None


async def test_load_and_draining_reach_the_other_node(redis_server: RedisServer,
                                                      registries: Factory) -> None:
    a, b = registries(redis_server.url(), **FAST), registries(redis_server.url(), **FAST)
    state: dict[str, Any] = {"calls": 0, "draining": False}
    task = await heartbeat(a, lambda: report("a/0", calls=state["calls"],
                                             draining=state["draining"]))
    await b.publish(report("b/0", calls=5))
    await eventually(lambda: _contains(b, "a/0"), within_s=2)
    assert [w.id for w in ranked(await b.workers())] == ["a/0", "b/0"]  # a is less loaded

    state["calls"] = 3
    state["draining"] = True

    async def updated() -> bool:
        seen = {w.id: w for w in await b.workers()}
        return seen["a/0"].calls == 3 and seen["a/0"].draining

    await eventually(updated, within_s=2)
    assert [w.id for w in ranked(await b.workers())] == ["b/0"]  # draining takes no call
    await stop(task)


async def test_call_owners_are_recorded_read_and_forgotten(redis_server: RedisServer,
                                                           registries: Factory) -> None:
    a, b = registries(redis_server.url()), registries(redis_server.url())
    await a.record_call("call-1", "a/0")
    assert await b.owner("call-1") == "a/0"
    assert await b.owner("call-2") is None
    assert await b.owner("") is None
    assert await b.owner("x" * 1000) is None  # not an id: not even asked
    await a.forget_call("call-1")
    assert await b.owner("call-1") is None
    with pytest.raises(ValueError):
        await a.record_call("x" * 1000, "a/0")


async def test_run_keeps_owner_keys_alive_while_the_call_lives(
        redis_server: RedisServer, registries: Factory, raw: redis.asyncio.Redis) -> None:
    a = registries(redis_server.url(), **FAST, call_ttl_s=1.0, call_refresh_s=0.3)
    b = registries(redis_server.url())
    live = {"call-1", "call-2", "x" * 1000}  # an id too long for a key is skipped
    task = await heartbeat(a, lambda: report("a/0"), lambda: live)
    await eventually(lambda: _owned_by(b, "call-1", "a/0"), within_s=2)
    await asyncio.sleep(2.5)  # more than two of the owner keys' lifetimes
    assert await b.owner("call-1") == "a/0"
    assert await b.owner("call-2") == "a/0"
    assert 0 < await raw.pttl("rtc-agent:call:call-1") <= 1000

    live.discard("call-2")  # ended without forget_call: ages out
    took = await eventually(lambda: _owned_by(b, "call-2", None), within_s=3)
    assert took <= 1.0 + 0.5
    live.discard("call-1")
    await a.forget_call("call-1")  # ended: gone at once
    assert await b.owner("call-1") is None
    await stop(task)


async def _owned_by(registry: RedisRegistry, call_id: str, worker_id: str | None) -> bool:
    try:
        return await registry.owner(call_id) == worker_id
    except RegistryUnavailable:
        return False  # not yet: known down until a heartbeat gets through


async def test_run_rewrites_everything_when_redis_lost_it_between_beats(
        redis_server: RedisServer, registries: Factory, raw: redis.asyncio.Redis) -> None:
    """A restart (or failover) faster than a heartbeat: no error seen, data gone."""
    a = registries(redis_server.url(), **FAST, call_ttl_s=60, call_refresh_s=50)
    task = await heartbeat(a, lambda: report("a/0"), lambda: {"call-1"})
    await eventually(lambda: _owned_by(a, "call-1", "a/0"), within_s=2)
    await raw.flushall()
    took = await eventually(lambda: _owned_by(a, "call-1", "a/0"), within_s=2)
    assert took < 1.0, "the owner key is rewritten within a couple of intervals"
    assert await listed(a) == ["a/0"]
    await stop(task)


async def test_garbage_in_redis_is_skipped(redis_server: RedisServer, registries: Factory,
                                           raw: redis.asyncio.Redis,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    b = registries(redis_server.url())
    good = report("good/0")
    wrong_types = {**report("types/0").to_json(), "calls": "3"}
    huge = {**report("huge/0").to_json(), "url": "x" * 1_000_000}
    values: dict[str, bytes] = {
        "good/0": json.dumps(good.to_json()).encode(),
        "json/0": b"{not json",
        "list/0": b"[1, 2]",
        "types/0": json.dumps(wrong_types).encode(),
        "negative/0": json.dumps({**report("negative/0").to_json(), "calls": -1}).encode(),
        "huge/0": json.dumps(huge).encode(),
        "binary/0": b"\xff\xfe\x00",
        "deep/0": b"[" * 15_000,
        "liar/0": json.dumps(report("other/0").to_json()).encode(),
    }
    for worker_id, value in values.items():
        await raw.set(f"rtc-agent:worker:{worker_id}", value)
    await raw.hset("rtc-agent:worker:hash/0", "id", "hash/0")  # a wrong Redis type
    members = [m.encode() for m in [*values, "hash/0", "missing/0", "y" * 10_000]]
    members.append(b"\xff\xfe")  # not UTF-8
    await raw.zadd("rtc-agent:workers", {m: time.time() + 60 for m in members})

    sent_before = (await raw.info("stats"))["total_net_output_bytes"]
    assert await b.workers() == [good]
    sent = (await raw.info("stats"))["total_net_output_bytes"] - sent_before
    assert sent < 100_000, f"Redis sent {sent} bytes: a huge value was read whole"
    assert "report of huge/0 is too large" in caplog.text
    skipped = caplog.text
    for worker_id in ["json/0", "list/0", "types/0", "negative/0", "huge/0", "binary/0",
                      "deep/0", "liar/0", "hash/0"]:
        assert worker_id in skipped, f"no debug line for {worker_id}"

    # Owner keys are read as untrusted too.
    await raw.set("rtc-agent:call:huge", "z" * 100_000)
    await raw.set("rtc-agent:call:binary", b"\xff\xfe")
    await raw.set("rtc-agent:call:control", "a/0\x1b[31m")
    await raw.hset("rtc-agent:call:hash", "a", "b")
    for call_id in ["huge", "binary", "control", "hash"]:
        assert await b.owner(call_id) is None, call_id
    assert b.state == "ok"


async def test_a_foreign_value_on_the_index_key_is_replaced(
        redis_server: RedisServer, registries: Factory, raw: redis.asyncio.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    a = registries(redis_server.url())
    await raw.set("rtc-agent:workers", "not a sorted set")
    assert await a.workers() == []  # unreadable: no workers, no exception
    await a.publish(report("a/0"))  # the writer rebuilds it
    assert await listed(a) == ["a/0"]
    assert "non-index value" in caplog.text
    assert a.state == "ok"


async def test_an_outage_is_logged_once_fails_fast_and_is_recovered(
        redis_server: RedisServer, registries: Factory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    a = registries(redis_server.url(), **FAST)
    task = await heartbeat(a, lambda: report("a/0", calls=1), lambda: {"call-1"})
    await eventually(lambda: _owned_by(a, "call-1", "a/0"), within_s=2)
    assert a.state == "ok"
    before = time.time()

    redis_server.stop()
    took = await eventually(lambda: _is(a, "unreachable"), within_s=3)
    assert took < 2.0
    assert a.since >= before and a.last_error
    await asyncio.sleep(1.0)  # five more failed heartbeats
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()

    calls: list[Callable[[], Awaitable[object]]] = [
        a.workers, lambda: a.owner("call-1"), lambda: a.record_call("call-2", "a/0"),
        lambda: a.forget_call("call-1"), lambda: a.publish(report("a/0"))]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            await call()
        assert time.monotonic() - started < 1.0  # timeout_s is 0.3
    await a.withdraw("a/0")  # best effort: no exception

    redis_server.start()  # on the same port, empty (no persistence)
    b = registries(redis_server.url())
    took = await eventually(lambda: _owned_by(b, "call-1", "a/0"), within_s=5)
    assert took < 2.0, "re-registered within a couple of intervals"
    assert await listed(b) == ["a/0"]
    assert a.state == "ok" and a.last_error is None
    said = [f"{r.levelname} {r.getMessage()}" for r in caplog.records]
    kinds = sorted(("connected" if "connected to" in m else
                    "back" if "reachable again" in m else
                    "down" if m.startswith("WARNING") and "unreachable (" in m else m)
                   for m in said)
    # a: connected, down, back; b: connected. Nothing per beat or per call.
    assert kinds == ["back", "connected", "connected", "down"], said
    await stop(task)


async def _is(registry: RedisRegistry, state: str) -> bool:
    return registry.state == state


async def test_calls_placed_during_an_outage_are_recorded_when_redis_answers(
        redis_server: RedisServer, registries: Factory) -> None:
    """A stall shorter than the TTLs: Redis keeps its data, but missed a record_call."""
    a = registries(redis_server.url(), ttl_s=3.0, interval_s=0.2, timeout_s=0.3,
                   call_ttl_s=60, call_refresh_s=50)
    live = {"call-1"}
    task = await heartbeat(a, lambda: report("a/0"), lambda: live)
    await eventually(lambda: _owned_by(a, "call-1", "a/0"), within_s=2)
    redis_server.pause()
    try:
        await eventually(lambda: _is(a, "unreachable"), within_s=3)
        live.add("call-2")
        with pytest.raises(RegistryUnavailable):
            await a.record_call("call-2", "a/0")
    finally:
        redis_server.resume()
    took = await eventually(lambda: _owned_by(a, "call-2", "a/0"), within_s=5)
    assert took < 2.0, "recorded within a couple of intervals of Redis answering"
    await stop(task)


async def test_a_stalled_redis_costs_one_timeout_then_fails_fast(
        redis_server: RedisServer, registries: Factory) -> None:
    """SIGSTOP: connections are accepted, nothing answers; no call waits past timeout_s."""
    a = registries(redis_server.url(), ttl_s=5.0, interval_s=1.0, timeout_s=0.3)
    await a.publish(report("a/0"))
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            await a.workers()
        waited = time.monotonic() - started
        assert 0.25 <= waited < 1.0, f"waited {waited:.2f} s (timeout_s 0.3)"
        assert a.state == "unreachable"

        started = time.monotonic()
        for _ in range(20):  # known down: no waiting on each call
            with pytest.raises(RegistryUnavailable):
                await a.owner("call-1")
        assert time.monotonic() - started < 0.1

        await asyncio.sleep(1.0)  # an interval later, one call tries again
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            await a.workers()
        assert 0.25 <= time.monotonic() - started < 1.0
    finally:
        redis_server.resume()
    await asyncio.sleep(1.0)
    assert await listed(a) == ["a/0"]
    assert await _is(a, "ok")


async def test_the_password_is_never_shown(redis_server_with_password: RedisServer,
                                           registries: Factory,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = redis_server_with_password
    password = server.password
    assert password
    a = registries(server.url(db=3), **FAST)
    for text in (repr(a), a.url):
        assert password not in text and "[redacted]" in text
    await a.publish(report("a/0"))
    assert await listed(a) == ["a/0"]
    client = redis.asyncio.Redis.from_url(server.url(db=3))
    try:
        assert await client.exists("rtc-agent:worker:a/0")  # the URL's db number is used
    finally:
        await client.aclose()

    wrong = "Wr0ng-passw0rd"
    bad = registries(server.url(db=3).replace(password, wrong), **FAST)
    with pytest.raises(RegistryUnavailable) as failed:
        await bad.workers()
    assert bad.state == "unreachable"

    server.stop()  # errors with the good password in the URL, too
    with pytest.raises(RegistryUnavailable) as down:
        await a.workers()
    shown = [str(failed.value), str(down.value), bad.last_error or "", a.last_error or "",
             repr(bad), caplog.text]
    for text in shown:
        assert password not in text and wrong not in text, text
    assert caplog.text.count("unreachable (") == 2  # one warning from each
    assert redact_url("redis://user:pw%40x@h:1/2?password=qs") == (
        "redis://user:[redacted]@h:1/2?password=[redacted]")
