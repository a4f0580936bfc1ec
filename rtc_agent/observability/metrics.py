"""Prometheus metrics of a node, in prometheus-client's text format at `/metrics`.

With several workers, prometheus-client's multiprocess mode is used: the
supervisor gives every worker the same `PROMETHEUS_MULTIPROC_DIR` (it must be set
before prometheus_client is imported, hence in the worker's environment), each
worker writes its values to files there, and whichever worker answers a scrape
sums them all, so one scrape covers the node. When a worker dies the supervisor
marks it dead, which drops its live gauges. A single process keeps its metrics in
memory in a registry of its own.

Label values that come from outside (error codes of the Realtime service) are
reduced to a bounded set, so a service cannot grow the number of series.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

disable_created_metrics()  # `_created` series only double what a scrape holds

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_LABEL_VALUES = 50  # distinct codes per label before the rest count as "other"
_LABEL = re.compile(r"[a-z0-9_.:-]{1,48}")
LOOP_LAG_INTERVAL_S = 0.5

END_REASONS = ("hangup", "caller_gone", "upstream_failed", "server_shutdown",
               "max_duration", "connect_timeout", "error")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _Bounded:
    """Label values from outside, capped: past MAX_LABEL_VALUES distinct, "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value or "unknown").lower()[:48]
        if not _LABEL.fullmatch(text):
            return "other"
        if text not in self._seen:
            if len(self._seen) >= MAX_LABEL_VALUES:
                return "other"
            self._seen.add(text)
        return text


class Metrics:
    """The families of docs/observability.md, registered once per server."""

    def __init__(self) -> None:
        multi = multiprocess_dir() is not None
        # In multiprocess mode values live in files; the registry is only for names.
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if multi else self.registry
        live = {"multiprocess_mode": "livesum"} if multi else {}
        self.calls_active = Gauge("rtc_agent_calls_active", "Calls in progress",
                                  registry=registry, **live)  # type: ignore[arg-type]
        self.calls_started = Counter("rtc_agent_calls_started", "Calls answered",
                                     registry=registry)
        self.calls_total = Counter("rtc_agent_calls", "Calls ended, by end reason",
                                   ["end_reason"], registry=registry)
        self.offers_rejected = Counter("rtc_agent_offers_rejected",
                                       "Offers refused, by error code", ["code"],
                                       registry=registry)
        self.call_setup = Histogram(
            "rtc_agent_call_setup_seconds", "Offer received to the caller's audio flowing",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10), registry=registry)
        self.turn_latency = Histogram(
            "rtc_agent_turn_latency_seconds",
            "End of the caller's speech (the service's speech_stopped, or a typed message) "
            "to the first reply audio sent to the caller",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 5, 10),
            registry=registry)
        self.barge_in = Histogram(
            "rtc_agent_barge_in_seconds", "The service's speech_started to the playout silent",
            buckets=(0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1),
            registry=registry)
        self.paths_lost = Counter("rtc_agent_call_paths_lost",
                                  "Callers' media paths lost mid-call (a resume may follow)",
                                  registry=registry)
        self.resumes = Counter("rtc_agent_call_resumes",
                               "Calls carried on over a new connection (POST .../resume)",
                               registry=registry)
        self.upstream_reconnects = Counter("rtc_agent_upstream_reconnects",
                                           "Realtime sockets opened again after a loss",
                                           registry=registry)
        self.upstream_errors = Counter("rtc_agent_upstream_errors",
                                       "Error events from the Realtime service, by code",
                                       ["code"], registry=registry)
        self.tool_calls = Counter("rtc_agent_tool_calls", "Tool calls, by tool and outcome",
                                  ["tool", "outcome"], registry=registry)
        self.tool_seconds = Histogram("rtc_agent_tool_seconds", "Tool call duration",
                                      ["tool"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
                                      registry=registry)
        self.tokens = Counter("rtc_agent_realtime_tokens",
                              "Realtime tokens from response.done usage, by kind", ["kind"],
                              registry=registry)
        self.playout_late_frames = Counter(
            "rtc_agent_playout_late_frames",
            "Times the reply track fell behind its 20 ms schedule by over 100 ms",
            registry=registry)
        self.packets_lost = Counter("rtc_agent_inbound_packets_lost",
                                    "Caller RTP packets lost (aiortc's receiver statistics)",
                                    registry=registry)
        self.jitter = Histogram(
            "rtc_agent_inbound_jitter_seconds", "Caller RTP interarrival jitter, per call",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2),
            registry=registry)
        self.loop_lag = Histogram(
            "rtc_agent_event_loop_lag_seconds",
            f"How late a {LOOP_LAG_INTERVAL_S:g} s timer fires on a worker's event loop",
            ["worker"],  # a node's scrape sums its workers; one busy worker must stand out
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
            registry=registry)
        self.code = _Bounded()

    def ended(self, reason: str) -> None:
        self.calls_total.labels(reason if reason in END_REASONS else "error").inc()

    def rejected(self, code: str) -> None:
        self.offers_rejected.labels(self.code(code)).inc()

    def upstream_error(self, code: object) -> None:
        self.upstream_errors.labels(self.code(code)).inc()

    def add_tokens(self, added: Iterable[tuple[str, int]]) -> None:
        for kind, value in added:
            if value:
                self.tokens.labels(kind).inc(value)

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or the node's in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """A worker died: drop its live gauges from the node's sums (multiprocess mode)."""
    path = multiprocess_dir()
    if path is not None:
        prometheus_multiprocess.mark_process_dead(pid, path)


async def sample_loop_lag(metrics: Metrics, worker: int,
                          interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Until cancelled: how late a timer fires is how long the loop was busy elsewhere."""
    loop = asyncio.get_running_loop()
    series = metrics.loop_lag.labels(str(worker))
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        series.observe(max(0.0, loop.time() - due))
