"""One scrape covers a node of several workers (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.nodes import Node, http
from tests.cluster.test_workers import hang_up, place, ready

pytestmark = pytest.mark.slow


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def active(node: Node) -> float:
    return scrape(node).get(("rtc_agent_calls_active", ()), 0.0)


async def test_a_scrape_sums_every_worker_and_forgets_a_dead_one(tmp_path: Path) -> None:
    node = Node(tmp_path, "m", workers=2, max_calls=8).start()
    callers = []
    try:
        callers = await place(node.url, 4)
        assert {ready(c)["worker"] for c in callers} == {"m/0", "m/1"}
        # whichever worker answers the scrape (the kernel picks), it counts both
        for _ in range(6):
            assert active(node) == 4
        await callers.pop().hangup()
        deadline = time.monotonic() + 10
        while active(node) != 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        samples = scrape(node)
        assert samples[("rtc_agent_calls_total", (("end_reason", "hangup"),))] == 1
        assert samples[("rtc_agent_call_setup_seconds_count", ())] == 4
        # each worker's event-loop lag is its own series (one busy worker must stand out);
        # sampled every 0.5 s, so a node this young may not have its first sample yet
        def lag_counts() -> list[float]:
            now = scrape(node)
            return [now.get(("rtc_agent_event_loop_lag_seconds_count", (("worker", w),)), 0.0)
                    for w in ("0", "1")]

        deadline = time.monotonic() + 10
        while min(lag_counts()) < 1:
            assert time.monotonic() < deadline, lag_counts()
            await asyncio.sleep(0.1)
        # a worker killed with its calls: its live gauge leaves the sum
        _, health = node.health()
        victim = max(health["workers"], key=lambda w: w["calls"])
        held = victim["calls"]
        os.kill(victim["pid"], signal.SIGKILL)
        await asyncio.to_thread(node.wait_workers, 2, 10.0, {victim["pid"]})
        assert active(node) == 3 - held
        # the dead worker's counters still count (a counter never goes back)
        assert scrape(node)[("rtc_agent_call_setup_seconds_count", ())] == 4
        assert http("GET", f"{node.url}/metrics")[0] == 200
    finally:
        await hang_up(callers)
        node.stop()
