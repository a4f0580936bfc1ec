"""Placement and the node table without processes: ranking, reports, the seqlock."""

from __future__ import annotations

import json
import struct
import time

import pytest

from rtc_agent.cluster.membership import Membership
from rtc_agent.cluster.node_table import SLOT_BYTES, NodeTable
from rtc_agent.cluster.placement import WorkerLoad, ranked, totals


def load(id: str, calls: int, capacity: int = 10, *, draining: bool = False,
         cpu: float = 0.0, updated: float = 0.0) -> WorkerLoad:
    node, _, index = id.partition("/")
    return WorkerLoad(id=id, node=node, index=int(index), pid=100 + int(index),
                      url=f"http://127.0.0.1:{9000 + int(index)}", calls=calls,
                      capacity=capacity, draining=draining, cpu=cpu, updated=updated)


def test_least_loaded_first_by_share_of_capacity_then_cpu() -> None:
    workers = [load("a/0", 5, 10), load("a/1", 1, 2), load("b/0", 2, 10, cpu=0.9),
               load("b/1", 2, 10, cpu=0.1)]
    assert [w.id for w in ranked(workers)] == ["b/1", "b/0", "a/0", "a/1"]


def test_full_draining_and_excluded_workers_take_nothing() -> None:
    workers = [load("a/0", 10), load("a/1", 0, draining=True), load("a/2", 3),
               load("a/3", 0, capacity=0), load("a/4", 1)]
    assert [w.id for w in ranked(workers)] == ["a/4", "a/2"]
    assert [w.id for w in ranked(workers, exclude={"a/4"})] == ["a/2"]
    assert ranked([load("a/0", 10)]) == []


def test_totals_count_draining_capacity_out() -> None:
    got = totals([load("a/0", 3), load("a/1", 1, draining=True), load("b/0", 2, 4)])
    assert got.to_json() == {"nodes": 2, "workers": 3, "calls": 6, "capacity": 14,
                             "draining": 1}


@pytest.mark.parametrize("change", [
    {"id": ""}, {"calls": -1}, {"calls": "3"}, {"capacity": True}, {"cpu": float("nan")},
    {"url": None}, {"index": 1.5},
])
def test_reports_of_the_wrong_shape_are_refused(change: dict) -> None:
    data = {**load("a/0", 1).to_json(), **change}
    with pytest.raises(ValueError):
        WorkerLoad.from_json(data)
    data = load("a/0", 1).to_json()
    del data["pid"]
    with pytest.raises(ValueError):
        WorkerLoad.from_json(data)


def test_a_report_round_trips() -> None:
    report = load("a/3", 4, cpu=0.25, updated=123.5)
    assert WorkerLoad.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_the_table_shares_reports_and_forgets_stale_or_cleared_ones() -> None:
    table = NodeTable.create(3)
    other = NodeTable(table.fd, 3)  # another process maps the same file
    try:
        now = time.time()
        table.publish(load("a/0", 2, updated=now))
        table.publish(load("a/2", 1, updated=now - 10))  # stopped reporting
        assert [w.id for w in other.live(now)] == ["a/0"]
        assert other.worker(2) is not None and other.worker(1) is None
        table.clear(0)
        assert other.live(now) == []
        table.set_node(id="a", draining=True)
        table.set_node(backend_state="restarting")
        assert other.node() == {"id": "a", "draining": True, "backend_state": "restarting"}
    finally:
        other._map.close()
        table.close()


def test_a_slot_being_written_or_holding_garbage_reads_as_empty() -> None:
    table = NodeTable.create(1)
    try:
        table.publish(load("a/0", 2, updated=time.time()))
        offset = SLOT_BYTES  # worker 0's slot
        seq, length = struct.unpack_from("<QH", table._map, offset)
        struct.pack_into("<QH", table._map, offset, seq | 1, length)  # a writer mid-way
        assert table.worker(0) is None
        struct.pack_into("<QH", table._map, offset, seq + 2, 5)
        table._map[offset + 10: offset + 15] = b"{nope"
        assert table.worker(0) is None
        struct.pack_into("<QH", table._map, offset, seq + 4, 2)
        table._map[offset + 10: offset + 12] = b"[]"
        assert table.worker(0) is None
        with pytest.raises(ValueError):
            table.publish(WorkerLoad(**{**load("a/0", 1).to_json(), "url": "x" * SLOT_BYTES}))
    finally:
        table.close()


async def test_offers_sent_elsewhere_count_until_that_worker_reports_them() -> None:
    """Reports lag; a burst of offers must not all go to the worker that looked idle."""
    table = NodeTable.create(2)
    try:
        mine = Membership(node="a", index=0, url="http://x", capacity=10, load=lambda: 1,
                          calls=lambda: (), table=table)
        table.publish(load("a/1", 0, updated=time.time()))
        first = await mine.candidates()
        assert first[0].id == "a/1"  # 0 calls against my 1
        mine.placed("a/1")
        mine.placed("a/1")
        again = await mine.candidates()
        assert again[0].id == "a/0"  # a/1 now counts 2 until it reports them
        table.publish(load("a/1", 2, updated=time.time() + 1))  # its report includes them
        assert {w.id: w.calls for w in await mine.candidates()} == {"a/0": 1, "a/1": 2}
        table.set_node(draining=True)
        assert await mine.candidates() == []  # a draining node places nothing on itself
    finally:
        table.close()
