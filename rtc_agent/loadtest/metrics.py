"""Load-test measurements and their statistics, free of I/O so they can be unit-tested.

A run is a list of `CallResult`s (one per scripted call), each with its turns.
Times inside a result are seconds since the run's start (`t0`), so results
from several worker processes share one time axis (CLOCK_MONOTONIC is
system-wide on Linux).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "rtc-agent-loadtest/1"

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_P95_EXCEEDED = 2


@dataclass
class Failure:
    kind: str  # at_capacity, http_4xx, http_5xx, http_error, ice_failed, timeout, no_reply, ...
    detail: str = ""
    at_s: float | None = None
    # The server ended the call and said why (`call.ended`): `kind` is its end
    # reason (upstream_failed, max_duration, server_shutdown, ...), `detail` its message.
    by_server: bool = False


@dataclass
class TurnSample:
    turn: int
    prompt: str
    start_s: float  # the caller started playing the prompt
    speech_end_s: float | None = None  # its last audible frame went out
    heard_s: float | None = None  # first audible reply frame arrived
    latency_ms: float | None = None  # heard - speech_end: the heard turn latency
    barge_in_at_s: float | None = None  # the caller's first audible frame over the reply
    barge_in_stop_ms: float | None = None  # from barge_in_at to the reply going silent
    # when the server's `state` went to thinking / speaking, ms after speech end
    # (splits the latency into end-of-turn detection and the reply's way back)
    thinking_ms: float | None = None
    speaking_ms: float | None = None
    user_text: str | None = None
    assistant_text: str | None = None
    interrupted: bool | None = None
    error: str | None = None  # a failure kind when this turn failed


@dataclass
class CallResult:
    index: int
    proc: int = 0
    call_id: str = ""
    backend: str = ""  # session.ready's `backend`: offline, openai, azure, custom, ...
    start_s: float = 0.0
    connected_s: float | None = None
    end_s: float | None = None
    connect_ms: float | None = None
    ready_ms: float | None = None
    turns: list[TurnSample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    transcripts: dict[str, int] = field(default_factory=lambda: {"user": 0, "assistant": 0})
    stats: dict[str, Any] = field(default_factory=dict)
    rx_lag_ms_p95: float | None = None  # received stream behind its schedule
    rx_lag_ms_max: float | None = None
    frames_received: int = 0
    # 20 ms frames of media received a second, by RTP time (50 when the server keeps up;
    # a DTX gap counts as the time it stands for)
    rx_fps: float | None = None

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallResult:
        d = dict(d)
        d["turns"] = [TurnSample(**t) for t in d.get("turns", [])]
        d["failures"] = [Failure(**f) for f in d.get("failures", [])]
        return cls(**d)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation between ranks; None if empty."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0])
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (rank - lo))


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """n, mean, min, p50, p95, p99, max (None where there is nothing to summarise)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    return {
        "n": len(xs),
        "mean": sum(xs) / len(xs) if xs else None,
        "min": min(xs) if xs else None,
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "p99": percentile(xs, 99),
        "max": max(xs) if xs else None,
    }


def failures_by_kind(calls: Iterable[CallResult]) -> dict[str, int]:
    counts = Counter(f.kind for c in calls for f in c.failures)
    return dict(sorted(counts.items()))


def failure_details(calls: Iterable[CallResult]) -> dict[str, dict[str, Any]]:
    """Each failure kind's first detail, once: a wrong key fails every call with the
    same message, which the summary shows once rather than N times."""
    details: dict[str, dict[str, Any]] = {}
    for c in sorted(calls, key=lambda c: c.index):
        for f in c.failures:
            if f.kind not in details:
                details[f.kind] = {"detail": f.detail, "by_server": f.by_server}
    return dict(sorted(details.items()))


# When the offline backend is the bottleneck (see `offline_bottleneck`).
BOTTLENECK_SHARE = 0.5
# The offline backend waits out 500 ms of silence (its default VAD silence) before
# it calls a turn over, and an unloaded one reports `thinking` 0.6-0.9 s after the
# caller's speech ended (docs/benchmarks.md; docs/loadtest.md). Past this the
# end-of-turn stage is the backend falling behind, not the silence it waits for.
BOTTLENECK_MIN_THINKING_MS = 1000.0


def offline_bottleneck(
    thinking_p50: float | None,
    heard_p50: float | None,
    backends: dict[str, int],
    *,
    share: float = BOTTLENECK_SHARE,
    min_thinking_ms: float = BOTTLENECK_MIN_THINKING_MS,
) -> dict[str, Any] | None:
    """The offline backend as the run's bottleneck, or None.

    It is when every ready call ran on the offline backend (session.ready's
    `backend`), the caller's speech end -> the agent's `thinking` (the backend's
    end-of-turn detection and the way in) takes at least `share` of the heard turn
    latency (p50 of each), and that stage's p50 is at least `min_thinking_ms`.
    The offline backend runs speech detection, recognition and synthesis for
    every call in one process: when it falls behind, the media server is not
    what the latency measures.
    """
    if not backends or set(backends) != {"offline"}:
        return None
    if thinking_p50 is None or heard_p50 is None or heard_p50 <= 0:
        return None
    ratio = thinking_p50 / heard_p50
    if ratio < share or thinking_p50 < min_thinking_ms:
        return None
    return {"stage": "offline_backend", "thinking_p50_ms": thinking_p50,
            "heard_p50_ms": heard_p50, "share": ratio}


def loss_pct(stats: dict[str, Any]) -> float | None:
    """Inbound packet loss in percent from a caller's stats (None before any packet)."""
    got = stats.get("in_packets_received") or 0
    lost = stats.get("in_packets_lost") or 0
    if got + lost <= 0:
        return None
    return 100.0 * max(lost, 0) / (got + max(lost, 0))


def aggregate(calls: Sequence[CallResult], max_p95_ms: float | None = None) -> dict[str, Any]:
    """Overall statistics of a run, and its exit status."""
    turns = [t for c in calls for t in c.turns]
    latency = summarize(t.latency_ms for t in turns)
    failed = [c for c in calls if c.failed]
    thinking = summarize(t.thinking_ms for t in turns)
    backends = dict(sorted(Counter(c.backend for c in calls if c.backend).items()))
    p95 = latency["p95"]
    p95_exceeded = bool(max_p95_ms is not None and p95 is not None and p95 > max_p95_ms)
    summary: dict[str, Any] = {
        "calls": len(calls),
        "calls_ok": len(calls) - len(failed),
        "calls_failed": len(failed),
        "failures": failures_by_kind(calls),
        "failure_details": failure_details(calls),
        "backends": backends,
        "turns": len(turns),
        "turns_ok": sum(1 for t in turns if t.latency_ms is not None and t.error is None),
        "connect_ms": summarize(c.connect_ms for c in calls),
        "ready_ms": summarize(c.ready_ms for c in calls),
        "turn_latency_ms": latency,
        "barge_in_stop_ms": summarize(t.barge_in_stop_ms for t in turns),
        "thinking_ms": thinking,
        "speaking_ms": summarize(t.speaking_ms for t in turns),
        "transcripts": {
            "user": sum(c.transcripts.get("user", 0) for c in calls),
            "assistant": sum(c.transcripts.get("assistant", 0) for c in calls),
        },
        "in_loss_pct": summarize(loss_pct(c.stats) for c in calls if c.stats),
        "in_jitter_ms": summarize(c.stats.get("in_jitter_ms") for c in calls if c.stats),
        "rtt_ms": summarize(c.stats.get("rtt_ms") for c in calls if c.stats),
        "rx_lag_ms": summarize(c.rx_lag_ms_max for c in calls),
        "rx_fps": summarize(c.rx_fps for c in calls),
        "max_p95_ms": max_p95_ms,
        "p95_exceeded": p95_exceeded,
        "bottleneck": offline_bottleneck(thinking["p50"], latency["p50"], backends),
    }
    summary["exit_status"] = exit_status(len(failed), p95_exceeded, len(calls))
    return summary


def exit_status(calls_failed: int, p95_exceeded: bool, calls: int = 1) -> int:
    """Non-zero when any call failed (1), else when the latency budget was blown (2).

    A run that placed no call at all proves nothing and counts as failed.
    """
    if calls_failed or calls == 0:
        return EXIT_FAILURES
    if p95_exceeded:
        return EXIT_P95_EXCEEDED
    return EXIT_OK


def active_timeline(
    calls: Sequence[CallResult], step_s: float = 0.5
) -> tuple[list[float], list[int]]:
    """Number of connected calls at each step of the run (for the timeline plot)."""
    spans = [
        (c.connected_s, c.end_s if c.end_s is not None else c.connected_s)
        for c in calls
        if c.connected_s is not None
    ]
    end = max((e for _, e in spans if e is not None), default=0.0)
    times: list[float] = []
    counts: list[int] = []
    n = int(end / step_s) + 2 if spans else 0
    for i in range(n):
        t = i * step_s
        times.append(t)
        counts.append(sum(1 for s, e in spans if s is not None and e is not None and s <= t < e))
    return times, counts


def run_document(
    config: dict[str, Any], calls: Sequence[CallResult], summary: dict[str, Any], wall_s: float
) -> dict[str, Any]:
    """The JSON written by `--json`: the configuration, the summary and every sample."""
    return {
        "schema": SCHEMA,
        "config": config,
        "wall_s": wall_s,
        "summary": summary,
        "calls": [c.to_dict() for c in sorted(calls, key=lambda c: c.index)],
    }
