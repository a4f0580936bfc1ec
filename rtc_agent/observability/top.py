"""`rtc-agent top`: a live terminal view of a node (or cluster) from its HTTP endpoints.

Every interval it reads `/metrics`, `/calls` and `/healthz` and shows the node,
its workers, latency quantiles, event rates and the live calls. It needs nothing
but HTTP access, so it works against any node a Prometheus server could scrape.

Quantiles come from the Prometheus histograms the way PromQL's
`histogram_quantile` computes them: find the bucket holding the q-th
observation and interpolate linearly between that bucket's lower and upper
bounds (an observation in the `+Inf` bucket reads as the highest finite bound).
"Last N s" uses the difference between two consecutive scrapes' bucket counts,
so it shows what happened in that window only; "since start" uses the counts as
scraped (everything since the server started), which is also all there is
before a second scrape (`--once`). A counter that went down means a restart:
the new value is then taken as the whole increase, as PromQL's `rate` does.

The pure parts (parsing, quantiles, rates, `summarize` into a `Snapshot`,
`render` of a snapshot) do no I/O; `poll` and `run` do the HTTP and the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

Labels = tuple[tuple[str, str], ...]
Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), by bound

TURN_LATENCY = "rtc_agent_turn_latency_seconds"
BARGE_IN = "rtc_agent_barge_in_seconds"
CALL_SETUP = "rtc_agent_call_setup_seconds"
LOOP_LAG = "rtc_agent_event_loop_lag_seconds"
CALLS_ACTIVE = "rtc_agent_calls_active"
CALLS_ENDED = "rtc_agent_calls_total"
OFFERS_REJECTED = "rtc_agent_offers_rejected_total"
UPSTREAM_RECONNECTS = "rtc_agent_upstream_reconnects_total"
UPSTREAM_ERRORS = "rtc_agent_upstream_errors_total"
TOOL_CALLS = "rtc_agent_tool_calls_total"

LATENCIES: tuple[tuple[str, str], ...] = (
    ("turn latency", TURN_LATENCY),
    ("barge-in", BARGE_IN),
    ("call setup", CALL_SETUP),
    ("event-loop lag", LOOP_LAG),
)
MAX_CALL_ROWS = 30  # a cluster may hold thousands; the rest is counted, not listed
HTTP_TIMEOUT_S = 5.0


# ------------------------------------------------------------------ scrapes


@dataclass(frozen=True)
class Scrape:
    """One `/metrics` answer: every sample by (name, sorted labels)."""

    samples: Mapping[tuple[str, Labels], float]

    def value(self, name: str) -> float | None:
        """The sum of a family's samples of that name (None: not exposed at all)."""
        found = [v for (n, _), v in self.samples.items() if n == name]
        return sum(found) if found else None

    def by_label(self, name: str, label: str,
                 where: Mapping[str, str] | None = None) -> dict[str, float]:
        """Samples of `name` (with the labels in `where`) summed per value of `label`,
        over any other labels."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            if n == name:
                found = dict(labels)
                if where and any(found.get(k) != want for k, want in where.items()):
                    continue
                key = found.get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, histogram: str, where: Mapping[str, str] | None = None) -> Buckets:
        """A histogram's cumulative bucket counts (of the series matching `where`),
        summed over its other labels (`tool`, `worker`)."""
        counts = self.by_label(f"{histogram}_bucket", "le", where)
        return tuple(sorted((float(le), v) for le, v in counts.items()))  # "+Inf" -> inf


def parse_scrape(text: str) -> Scrape:
    """Prometheus text format to a `Scrape`; ValueError when it is not that format."""
    samples: dict[tuple[str, Labels], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not Prometheus text: {exc}") from None
    return Scrape(samples)


def increase(current: float, previous: float) -> float:
    """A counter's increase; a counter that went down was reset, so all of it is new."""
    return current - previous if current >= previous else current


def per_minute(current: float, previous: float | None, seconds: float | None) -> float | None:
    """A counter's rate over the window, per minute (None without a window)."""
    if previous is None or seconds is None or seconds <= 0:
        return None
    return increase(current, previous) / seconds * 60.0


def bucket_window(current: Buckets, previous: Buckets | None) -> Buckets:
    """The observations between two scrapes: bucket by bucket differences.

    If any bucket went down the histogram was reset (a restarted server), so the
    current counts are all new; a bucket missing before counted zero."""
    if previous is None:
        return current
    before = dict(previous)
    if any(count < before.get(bound, 0.0) for bound, count in current):
        return current
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in current)


def observations(buckets: Buckets) -> float:
    """How many observations a histogram holds: its `+Inf` bucket."""
    return buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else 0.0


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile (0 < q <= 1) of cumulative buckets, as PromQL's histogram_quantile.

    None when there is nothing to estimate from (no observations, no `+Inf`
    bucket). Within the bucket that holds the rank, values are assumed spread
    evenly (the first bucket starts at 0); a rank in the `+Inf` bucket gives the
    highest finite bound, since nothing is known above it."""
    if not 0 < q <= 1 or len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    bounds = [b for b, _ in buckets]
    counts: list[float] = []
    for _, c in buckets:  # scrapes are not atomic: keep the counts monotonic
        counts.append(max(c, counts[-1]) if counts else c)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(buckets) - 1:
        return bounds[-2]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    return start + (bounds[i] - start) * (rank - below) / (counts[i] - below)


# ------------------------------------------------------------------ one poll


@dataclass(frozen=True)
class Poll:
    """What one round of requests brought back; None where an endpoint failed."""

    at: float  # time.monotonic() of the round
    clock: str  # local wall time, for the header
    metrics: Scrape | None
    health: Mapping[str, Any] | None
    calls: Sequence[Mapping[str, Any]] | None
    errors: tuple[str, ...] = ()
    reached: bool = True  # some endpoint answered as an rtc-agent server does


# ------------------------------------------------------------------ the snapshot


@dataclass(frozen=True)
class WorkerRow:
    id: str
    pid: int | None
    calls: int | None
    capacity: int | None
    draining: bool
    cpu: float | None  # cores used (1.0 = one core busy)
    loop_lag_p95: float | None = None  # over the last interval when there is one


@dataclass(frozen=True)
class LatencyRow:
    """Quantiles (seconds) over the last window and since the server started."""

    name: str
    window_n: float | None  # None: no window yet
    window_p50: float | None
    window_p95: float | None
    total_n: float
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class EventRow:
    name: str
    total: float | None
    per_minute: float | None
    indent: bool = False  # a breakdown of the row above


@dataclass(frozen=True)
class CallRow:
    call_id: str
    worker: str
    duration_s: float | None
    turns: int | None
    last_turn_ms: int | None
    barge_ins: int | None
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class Snapshot:
    """Everything the view shows, derived from polls; `render` only lays it out."""

    url: str
    clock: str
    window_s: float | None  # seconds between the two scrapes compared (None: one so far)
    status: str | None
    node: str | None
    backend: str | None
    backend_state: str | None
    backend_restarts: int | None
    worker_restarts: int | None
    calls: int | None
    capacity: int | None
    registry: str | None
    cluster: Mapping[str, int] | None
    workers: tuple[WorkerRow, ...]
    latencies: tuple[LatencyRow, ...]
    events: tuple[EventRow, ...]
    live_calls: tuple[CallRow, ...] | None  # None: /calls not read
    errors: tuple[str, ...]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _latency(name: str, family: str, current: Scrape, previous: Scrape | None,
             windowed: bool) -> LatencyRow:
    now = current.buckets(family)
    window = bucket_window(now, previous.buckets(family) if previous else None)
    return LatencyRow(
        name=name,
        window_n=observations(window) if windowed else None,
        window_p50=quantile(0.5, window) if windowed else None,
        window_p95=quantile(0.95, window) if windowed else None,
        total_n=observations(now), p50=quantile(0.5, now), p95=quantile(0.95, now))


def _worker_lag(worker_id: str | None, current: Scrape | None,
                previous: Scrape | None) -> float | None:
    """p95 event-loop lag of one worker (`node/i` is labelled `worker="i"`), over the
    last interval when there is one, else since the worker started."""
    if current is None or not worker_id:
        return None
    where = {"worker": worker_id.rsplit("/", 1)[-1]}
    now = current.buckets(LOOP_LAG, where)
    if previous is not None:
        now = bucket_window(now, previous.buckets(LOOP_LAG, where))
    return quantile(0.95, now)


def _counter_rows(name: str, family: str, label: str | None, current: Scrape,
                  previous: Scrape | None, seconds: float | None) -> list[EventRow]:
    """A counter family's total and rate, then one indented row per label value."""
    total = current.value(family) or 0.0
    before = (previous.value(family) or 0.0) if previous else None
    rows = [EventRow(name, total, per_minute(total, before, seconds))]
    if label is not None:
        now = current.by_label(family, label)
        then = previous.by_label(family, label) if previous else {}
        for value in sorted(now):
            rows.append(EventRow(value, now[value], per_minute(
                now[value], then.get(value, 0.0) if previous else None, seconds), indent=True))
    return rows


def _started(current: Poll, previous: Poll | None, seconds: float | None) -> EventRow:
    """Calls started: the workers' own count (/healthz), else ended + change in active."""
    total = _float(current.health.get("calls_total")) if current.health else None
    if total is not None:
        before = _float(previous.health.get("calls_total")) if previous and previous.health \
            else None
        return EventRow("calls started", total, per_minute(total, before, seconds))
    rate = None
    if current.metrics and previous and previous.metrics and seconds:
        ended = increase(current.metrics.value(CALLS_ENDED) or 0.0,
                         previous.metrics.value(CALLS_ENDED) or 0.0)
        active = ((current.metrics.value(CALLS_ACTIVE) or 0.0)
                  - (previous.metrics.value(CALLS_ACTIVE) or 0.0))
        rate = max(0.0, ended + active) / seconds * 60.0
    return EventRow("calls started", None, rate)


def _call_row(entry: Mapping[str, Any]) -> CallRow:
    latencies = entry.get("turn_latency_ms")
    last = _int(latencies[-1]) if isinstance(latencies, list) and latencies else None
    given = entry.get("tokens")
    tokens: Mapping[str, Any] = given if isinstance(given, dict) else {}

    def tok(*kinds: str) -> int:
        return sum((_int(tokens.get(k)) or 0) for k in kinds)

    return CallRow(
        call_id=_str(entry.get("call_id")) or "?", worker=_str(entry.get("worker")) or "?",
        duration_s=_float(entry.get("duration_s")), turns=_int(entry.get("turns")),
        last_turn_ms=last, barge_ins=_int(entry.get("barge_ins")),
        tokens_in=tok("input_text", "input_audio"), tokens_out=tok("output_text", "output_audio"))


def summarize(url: str, current: Poll, previous: Poll | None = None) -> Snapshot:
    """The view's figures from this poll and (for windows and rates) the one before."""
    health = current.health or {}
    has_window = (previous is not None and previous.metrics is not None
                  and current.metrics is not None and current.at > previous.at)
    seconds = current.at - previous.at if previous is not None and has_window else None
    before = previous.metrics if previous is not None and has_window else None

    workers = tuple(
        WorkerRow(id=_str(w.get("id")) or "?", pid=_int(w.get("pid")), calls=_int(w.get("calls")),
                  capacity=_int(w.get("capacity")), draining=w.get("draining") is True,
                  cpu=_float(w.get("cpu")),
                  loop_lag_p95=_worker_lag(_str(w.get("id")), current.metrics, before))
        for w in health.get("workers") or [] if isinstance(w, dict))

    latencies: tuple[LatencyRow, ...] = ()
    events: list[EventRow] = []
    metrics = current.metrics
    if metrics is not None:
        latencies = tuple(_latency(name, family, metrics, before, has_window)
                          for name, family in LATENCIES)
        events.append(_started(current, previous if has_window else None, seconds))
        for name, family, label in (
            ("calls ended", CALLS_ENDED, "end_reason"),
            ("offers rejected", OFFERS_REJECTED, "code"),
            ("upstream reconnects", UPSTREAM_RECONNECTS, None),
            ("upstream errors", UPSTREAM_ERRORS, "code"),
            ("tool calls", TOOL_CALLS, "outcome"),
        ):
            events.extend(_counter_rows(name, family, label, metrics, before, seconds))

    calls = _int(health.get("calls"))
    if calls is None and metrics is not None and metrics.value(CALLS_ACTIVE) is not None:
        calls = round(metrics.value(CALLS_ACTIVE) or 0.0)
    registry = health.get("registry")
    registry_text = None
    if isinstance(registry, dict):
        registry_text = _str(registry.get("state")) or "?"
        if registry.get("error"):
            registry_text += f" ({registry['error']})"
    cluster = health.get("cluster")
    live = None
    if current.calls is not None:
        live = tuple(_call_row(c) for c in current.calls if isinstance(c, dict))
    return Snapshot(
        url=url, clock=current.clock, window_s=seconds,
        status=_str(health.get("status")), node=_str(health.get("node")),
        backend=_str(health.get("backend")), backend_state=_str(health.get("backend_state")),
        backend_restarts=_int(health.get("backend_restarts")),
        worker_restarts=_int(health.get("worker_restarts")),
        calls=calls, capacity=_int(health.get("capacity")),
        registry=registry_text,
        cluster={k: v for k, v in cluster.items() if isinstance(v, int)}
        if isinstance(cluster, dict) else None,
        workers=workers, latencies=latencies, events=tuple(events), live_calls=live,
        errors=current.errors)


# ------------------------------------------------------------------ rendering


def seconds_text(value: float | None) -> str:
    """A latency for people: ms below a second (a decimal below 10 ms), else seconds."""
    if value is None:
        return "–"
    if value >= 10:
        return f"{value:.1f} s"
    if value >= 1:
        return f"{value:.2f} s"
    ms = value * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def count_text(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def rate_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def duration_text(value: float | None) -> str:
    if value is None:
        return "–"
    minutes, secs = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _header(s: Snapshot) -> Panel:
    status_style = {"ok": "green", "draining": "yellow"}.get(s.status or "", "red")
    line = Text()
    line.append("node ", "dim").append(s.node or "?", "bold")
    if s.status:
        line.append("  status ", "dim").append(s.status, status_style)
    line.append("  workers ", "dim").append(str(len(s.workers)) if s.workers else "?")
    line.append("  calls ", "dim").append(
        f"{count_text(s.calls) if s.calls is not None else '?'}/"
        f"{s.capacity if s.capacity is not None else '?'}")
    if s.backend or s.backend_state:
        line.append("  backend ", "dim").append(f"{s.backend or '?'} ")
        line.append(s.backend_state or "?", "green" if s.backend_state == "up" else "red")
        if s.backend_restarts:
            plural = "s" if s.backend_restarts > 1 else ""
            line.append(f" ({s.backend_restarts} restart{plural})", "yellow")
    if s.worker_restarts:
        line.append("  worker restarts ", "dim").append(str(s.worker_restarts), "yellow")
    lines = [line]
    if s.registry is not None or s.cluster is not None:
        second = Text()
        if s.registry is not None:
            second.append("registry ", "dim").append(
                s.registry, "green" if s.registry == "ok" else "red")
        if s.cluster:
            c = s.cluster
            second.append("  cluster ", "dim").append(
                f"{c.get('nodes', '?')} nodes, {c.get('workers', '?')} workers, "
                f"calls {c.get('calls', '?')}/{c.get('capacity', '?')}, "
                f"{c.get('draining', 0)} draining")
        lines.append(second)
    every = f"last {s.window_s:.1f} s" if s.window_s is not None else "one scrape"
    return Panel(Group(*lines), title=f"rtc-agent top · {s.url}", title_align="left",
                 subtitle=f"{s.clock} · {every}", subtitle_align="right", box=box.ROUNDED)


def _latency_table(s: Snapshot) -> Table:
    window = f"last {s.window_s:.1f} s" if s.window_s is not None else "last interval"
    table = Table(title=f"latency: {window} | since start", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("")
    for column in ("last n", "p50", "p95", "total n", "p50", "p95"):
        table.add_column(column, justify="right")
    for r in s.latencies:
        table.add_row(r.name, count_text(r.window_n), seconds_text(r.window_p50),
                      seconds_text(r.window_p95), count_text(r.total_n), seconds_text(r.p50),
                      seconds_text(r.p95))
    return table


def _events_table(s: Snapshot) -> Table:
    table = Table(title="events", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("")
    table.add_column("total", justify="right")
    table.add_column("/min", justify="right")
    for r in s.events:
        name = Text(f"  {r.name}", "dim") if r.indent else Text(r.name)
        table.add_row(name, count_text(r.total), rate_text(r.per_minute))
    return table


def _workers_table(s: Snapshot) -> Table:
    table = Table(title="workers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (("id", "left"), ("pid", "right"), ("calls", "right"),
                            ("capacity", "right"), ("draining", "left"), ("cpu", "right"),
                            ("loop lag p95", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for w in s.workers:
        table.add_row(w.id, count_text(w.pid), count_text(w.calls), count_text(w.capacity),
                      Text("yes", "yellow") if w.draining else Text("no"),
                      "–" if w.cpu is None else f"{w.cpu * 100:.0f}%",
                      seconds_text(w.loop_lag_p95))
    return table


def _calls_table(s: Snapshot, calls: tuple[CallRow, ...]) -> Table:
    where = "cluster" if s.cluster is not None else "node"
    table = Table(title=f"live calls ({where}): {len(calls)}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (("call", "left"), ("worker", "left"), ("duration", "right"),
                            ("turns", "right"), ("last turn", "right"), ("barge-ins", "right"),
                            ("tokens in/out", "right")):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    ordered = sorted(calls, key=lambda c: (-(c.duration_s or 0.0), c.call_id))
    for c in ordered[:MAX_CALL_ROWS]:
        table.add_row(c.call_id, c.worker, duration_text(c.duration_s), count_text(c.turns),
                      "–" if c.last_turn_ms is None else seconds_text(c.last_turn_ms / 1000),
                      count_text(c.barge_ins), f"{c.tokens_in}/{c.tokens_out}")
    if len(ordered) > MAX_CALL_ROWS:
        table.caption = f"… and {len(ordered) - MAX_CALL_ROWS} more (longest first)"
    return table


def render(s: Snapshot) -> RenderableType:
    """The whole view of one snapshot, top to bottom."""
    parts: list[RenderableType] = [_header(s)]
    if s.errors:
        parts.append(Panel(Text("\n".join(s.errors), "red"), title="errors",
                           title_align="left", border_style="red", box=box.ROUNDED))
    if s.workers:
        parts.append(_workers_table(s))
    if s.latencies or s.events:
        grid = Table.grid(padding=(0, 4))
        grid.add_row(_latency_table(s), _events_table(s))
        parts.append(grid)
    if s.live_calls is not None:
        parts.append(_calls_table(s, s.live_calls))
    return Group(*parts)


# ------------------------------------------------------------------ I/O


def _unreachable(base: str, exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno).lower() if errno else str(exc.os_error)
        return f"cannot reach {base}: {reason}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"cannot reach {base}: no answer within {HTTP_TIMEOUT_S:g} s"
    return f"cannot reach {base}: {type(exc).__name__}: {exc}"


async def _get(session: aiohttp.ClientSession, url: str,
               token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        return response.status, await response.read()


async def poll(session: aiohttp.ClientSession, base: str, token: str | None,
               metrics_token: str | None) -> Poll:
    """One round: the three endpoints at once; every failure becomes a line in `errors`."""
    base = base.rstrip("/")
    at = time.monotonic()
    answers = await asyncio.gather(
        _get(session, f"{base}/metrics", metrics_token),
        _get(session, f"{base}/healthz", token),
        _get(session, f"{base}/calls", token),
        return_exceptions=True)
    errors: list[str] = []
    reached = False
    bodies: dict[str, bytes] = {}
    for path, answer in zip(("/metrics", "/healthz", "/calls"), answers, strict=True):
        if isinstance(answer, BaseException):
            errors.append(_unreachable(base, answer))
            continue
        status, body = answer
        reached = reached or status in (200, 401, 503)  # what rtc-agent's routes answer
        # /healthz answers 503 with its details while draining or when the backend is down
        if status == 200 or (path == "/healthz" and status == 503):
            bodies[path] = body
        elif status == 401:
            flag = "--metrics-token" if path == "/metrics" else "--token"
            errors.append(f"{path}: 401 unauthorized (give {flag})")
        else:
            errors.append(f"{path}: HTTP {status} {body[:80].decode(errors='replace')}")
    metrics = health = calls = None
    if "/metrics" in bodies:
        try:
            metrics = parse_scrape(bodies["/metrics"].decode(errors="replace"))
        except ValueError as exc:
            errors.append(f"/metrics: {exc}")
    health = _json_object(bodies.get("/healthz"), "/healthz", errors)
    if health is not None and "workers" not in health:  # liveness only: keep the status
        errors.append("/healthz: details need a valid --token")
        health = {"status": health.get("status")}
    listing = _json_object(bodies.get("/calls"), "/calls", errors)
    if listing is not None:
        if isinstance(listing.get("calls"), list):
            calls = listing["calls"]
        else:
            errors.append("/calls: no `calls` list in the answer")
    return Poll(at=at, clock=time.strftime("%H:%M:%S"), metrics=metrics, health=health,
                calls=calls, errors=tuple(dict.fromkeys(errors)), reached=reached)


def _json_object(body: bytes | None, path: str, errors: list[str]) -> dict[str, Any] | None:
    if body is None:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        errors.append(f"{path}: not JSON")
        return None
    if not isinstance(data, dict):
        errors.append(f"{path}: not a JSON object")
        return None
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080",
                        help="the node's base URL (default http://127.0.0.1:8080)")
    parser.add_argument("--token", default=os.environ.get("RTC_AGENT_TOKEN"),
                        help="the server's --token, for /calls and /healthz's details "
                             "(default: $RTC_AGENT_TOKEN)")
    parser.add_argument("--metrics-token", default=os.environ.get("RTC_AGENT_METRICS_TOKEN"),
                        help="the server's --metrics-token, for /metrics "
                             "(default: $RTC_AGENT_METRICS_TOKEN)")
    parser.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                        help="seconds between refreshes, and the window of rates and "
                             "quantiles (default 1.0)")
    parser.add_argument("--once", action="store_true",
                        help="print one view and exit: 0, or 1 if the server was not reached")


def _interval(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0.1:
        raise argparse.ArgumentTypeError("must be at least 0.1 seconds")
    return value


async def _watch(args: argparse.Namespace, console: Console) -> int:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if args.once:
            current = await poll(session, args.url, args.token, args.metrics_token)
            console.print(render(summarize(args.url, current)))
            return 0 if current.reached else 1
        previous: Poll | None = None
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                current = await poll(session, args.url, args.token, args.metrics_token)
                live.update(render(summarize(args.url, current, previous)), refresh=True)
                previous = current
                await asyncio.sleep(max(0.0, current.at + args.interval - time.monotonic()))


def run(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        print(f"rtc-agent top: --url must start with http:// or https://, not {args.url!r}",
              file=sys.stderr)
        return 2
    # Piped or redirected: plain text (rich drops styles off a terminal), wide enough
    # for the tables unless COLUMNS says otherwise.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    console = Console(width=width)
    try:
        return asyncio.run(_watch(args, console))
    except KeyboardInterrupt:
        return 0
