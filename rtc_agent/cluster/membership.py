"""This worker's place in its node and cluster: what it reports, where calls go.

A worker publishes its load twice a second to the node's table (`node_table.py`)
and, under `--redis-url`, once a second to the registry (`registry.py`). To place
an offer it ranks every live worker (`placement.py`): those of its own node from
the table, the others from Redis. When Redis cannot be reached it places on its
own node only, and keeps the calls it holds.

Reports lag the truth by up to a second, so offers placed in a burst would all
land on the worker that looked idlest. Each worker therefore counts the offers it
sent to another worker after that worker's last report as calls it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from rtc_agent.cluster.node_table import NodeTable
from rtc_agent.cluster.placement import WorkerLoad, ranked, totals
from rtc_agent.cluster.registry import RedisRegistry, RegistryUnavailable

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 0.5
PLACED_MEMORY_S = 5.0  # forwards older than this are in every report by now
MAX_PENDING_RECORDS = 256  # registry writes in flight; beyond, owners are found by asking


class Membership:
    """Who this worker is, and what it knows of the others."""

    def __init__(self, *, node: str, index: int, url: str, capacity: int,
                 load: Callable[[], int], calls: Callable[[], Collection[str]],
                 calls_total: Callable[[], int] = lambda: 0,
                 table: NodeTable | None = None,
                 registry: RedisRegistry | None = None) -> None:
        self.node = node
        self.index = index
        self.id = f"{node}/{index}"
        self.url = url
        self.capacity = capacity
        self.table = table
        self.registry = registry
        self.draining = False
        self._load = load
        self._calls = calls
        self._calls_total = calls_total
        self._cpu = 0.0
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._placed: dict[str, deque[float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cluster_seen: tuple[float, list[WorkerLoad]] = (-math.inf, [])

    # ------------------------------------------------------------ reporting

    def report(self) -> WorkerLoad:
        return WorkerLoad(id=self.id, node=self.node, index=self.index, pid=os.getpid(),
                          url=self.url, calls=self._load(), capacity=self.capacity,
                          draining=self.draining, cpu=round(self._cpu, 3), updated=time.time(),
                          calls_total=self._calls_total())

    def publish(self) -> None:
        """Write the current report to the node's table (at once: after a change of load)."""
        if self.table is not None:
            self.table.publish(self.report())

    def _sample_cpu(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_mark
        if wall - last_wall > 0:
            self._cpu = (cpu - last_cpu) / (wall - last_wall)
        self._cpu_mark = (wall, cpu)

    async def run(self) -> None:
        """Report until cancelled (the registry's heartbeat runs alongside)."""
        heartbeat = None
        if self.registry is not None:
            heartbeat = asyncio.create_task(self.registry.run(self.report, self._calls),
                                            name="registry-heartbeat")
        try:
            while True:
                self._sample_cpu()
                self.publish()
                await asyncio.sleep(PUBLISH_INTERVAL_S)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    def start_draining(self) -> None:
        self.draining = True
        self.publish()

    async def leave(self) -> None:
        """Stop being placed on: clear the table slot and the registry entry."""
        if self.table is not None:
            self.table.clear(self.index)
        if self.registry is not None:
            await self.registry.withdraw(self.id)

    # ------------------------------------------------------------ what others report

    def node_workers(self) -> list[WorkerLoad]:
        """This node's live workers, this one's report fresh."""
        mine = self.report()
        if self.table is None:
            return [mine]
        return [mine, *(w for w in self.table.live() if w.id != self.id)]

    async def cluster_workers(self) -> list[WorkerLoad] | None:
        """Every live worker of the cluster (this node's from its table), or None without
        a reachable registry."""
        if self.registry is None:
            return None
        try:
            reported = await self.registry.workers()
        except RegistryUnavailable:
            # A read that failed (a stale connection, a slow moment) does not make the
            # other nodes vanish: their last reports hold until they would have expired.
            cached_at, reported = self._cluster_seen
            if time.monotonic() - cached_at > self.registry.ttl_s:
                return None
        else:
            self._cluster_seen = (time.monotonic(), reported)
        return self.node_workers() + [w for w in reported if w.node != self.node]

    async def node_idle(self) -> None:
        """Return once no worker of this node holds a call."""
        while any(w.calls for w in self.node_workers()):  # noqa: ASYNC110
            await asyncio.sleep(PUBLISH_INTERVAL_S)  # shared memory: nothing to wait on

    def node_draining(self) -> bool:
        """Whether this node drains (its supervisor says so, or this worker does)."""
        return self.draining or bool(self.table is not None and self.table.node().get("draining"))

    # ------------------------------------------------------------ placement

    async def candidates(self, exclude: Collection[str] = ()) -> list[WorkerLoad]:
        """Workers that may take a call, best first. When none looks free, those whose
        last report said they were full: a report can be a second old, and a worker
        that was full then may have room now (it refuses otherwise)."""
        workers = await self.cluster_workers()
        if workers is None:
            workers = self.node_workers()
        now = time.time()
        adjusted = []
        for worker in workers:
            sent = self._placed.get(worker.id)
            if sent:
                while sent and now - sent[0] > PLACED_MEMORY_S:
                    sent.popleft()
                extra = sum(1 for t in sent if t > worker.updated)
                if extra:
                    worker = dataclasses.replace(worker, calls=worker.calls + extra)
            adjusted.append(worker)
        for stale in [k for k, v in self._placed.items() if not v]:
            del self._placed[stale]
        if self.node_draining():  # the supervisor's word comes before each worker hears it
            adjusted = [w for w in adjusted if w.node != self.node]
        return ranked(adjusted, exclude=exclude) or ranked(
            [dataclasses.replace(w, calls=min(w.calls, w.capacity - 1))
             for w in adjusted if w.capacity > 0], exclude=exclude)

    def placed(self, worker_id: str) -> None:
        """Note an offer forwarded to `worker_id` (until its reports include it)."""
        self._placed.setdefault(worker_id, deque(maxlen=1024)).append(time.time())

    async def owners(self, call_id: str) -> list[WorkerLoad]:
        """The workers to ask for a call this one does not hold: its recorded owner, or,
        without one, every other worker of this node."""
        if self.registry is not None:
            try:
                owner = await self.registry.owner(call_id)
                workers = await self.cluster_workers() if owner else None
            except RegistryUnavailable:
                owner, workers = None, None
            if owner and workers:
                found = [w for w in workers if w.id == owner and w.id != self.id]
                if found:
                    return found
        return [w for w in self.node_workers() if w.id != self.id]

    # ------------------------------------------------------------ call owners

    def call_started(self, call_id: str) -> None:
        self.publish()
        if self.registry is not None:
            self._background(self.registry.record_call(call_id, self.id))

    def call_ended(self, call_id: str) -> None:
        self.publish()
        if self.registry is not None:
            self._background(self.registry.forget_call(call_id))

    def _background(self, coro: Any) -> None:
        """A registry write off the request path; when Redis is down it is dropped (the
        heartbeat records every live call again once Redis is back)."""
        if len(self._tasks) >= MAX_PENDING_RECORDS:
            coro.close()
            return
        task = asyncio.create_task(self._quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(coro: Any) -> None:
        with contextlib.suppress(RegistryUnavailable):
            await coro

    # ------------------------------------------------------------ health

    async def health(self) -> dict[str, Any]:
        """The node's (and, with a registry, the cluster's) part of `/healthz`."""
        workers = sorted(self.node_workers(), key=lambda w: w.index)
        body: dict[str, Any] = {
            "node": self.node,
            "worker": self.id,
            "capacity": sum(w.capacity for w in workers if not w.draining),  # as `cluster`
            "calls": sum(w.calls for w in workers),
            "calls_total": sum(w.calls_total for w in workers),
            "workers": [{"id": w.id, "pid": w.pid, "calls": w.calls, "capacity": w.capacity,
                         "draining": w.draining, "cpu": w.cpu} for w in workers],
        }
        if self.table is not None:
            body["worker_restarts"] = int(self.table.node().get("worker_restarts", 0))
        if self.registry is not None:
            cluster = await self.cluster_workers()
            body["registry"] = {"state": self.registry.state, "error": self.registry.last_error,
                                "since": round(self.registry.since, 3)}
            if cluster is not None and self.registry.state == "ok":  # no stale figures
                body["cluster"] = totals(cluster).to_json()
        return body
