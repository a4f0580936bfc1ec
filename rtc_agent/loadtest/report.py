"""The load test's outputs: the final table (rich), the JSON document, the PNG plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from rtc_agent.loadtest.metrics import CallResult, active_timeline

# (summary key, label) rows of the final table, each a summarize() dict
METRIC_ROWS: list[tuple[str, str]] = [
    ("connect_ms", "connect (offer -> connected), ms"),
    ("ready_ms", "offer -> session.ready, ms"),
    ("turn_latency_ms", "heard turn latency, ms"),
    ("thinking_ms", "  speech end -> state thinking, ms"),
    ("speaking_ms", "  speech end -> state speaking, ms"),
    ("barge_in_stop_ms", "barge-in stop, ms"),
    ("in_loss_pct", "inbound packet loss, %"),
    ("in_jitter_ms", "inbound jitter, ms"),
    ("rtt_ms", "RTT (RTCP), ms"),
    ("rx_lag_ms", "received stream lag (max per call), ms"),
    ("rx_fps", "received frames/s per call"),
]


def _fmt(v: float | int | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


def summary_table(summary: dict[str, Any]) -> Table:
    """p50/p95/p99/max of every measured quantity."""
    table = Table(title="rtc-agent loadtest", title_justify="left")
    table.add_column("metric")
    for col in ("n", "p50", "p95", "p99", "max"):
        table.add_column(col, justify="right")
    for key, label in METRIC_ROWS:
        s = summary.get(key) or {}
        table.add_row(label, *(_fmt(s.get(c)) for c in ("n", "p50", "p95", "p99", "max")))
    return table


def outcome_lines(summary: dict[str, Any]) -> list[str]:
    """Counts and the verdict under the table."""
    lines = [
        f"calls: {summary['calls']} ({summary['calls_ok']} ok, {summary['calls_failed']} failed)"
        f"; turns: {summary['turns']} ({summary['turns_ok']} answered)",
        f"transcripts received: user {summary['transcripts']['user']}, "
        f"assistant {summary['transcripts']['assistant']}",
    ]
    if summary["failures"]:
        kinds = ", ".join(f"{k} x{n}" for k, n in summary["failures"].items())
        lines.append(f"failures: {kinds}")
        for kind, first in summary.get("failure_details", {}).items():
            if first.get("detail") or first.get("by_server"):
                who = " (the server ended the call)" if first.get("by_server") else ""
                lines.append(f"  {kind}{who}: {first.get('detail') or '-'}")
    hint = bottleneck_line(summary.get("bottleneck"))
    if hint:
        lines.append(hint)
    if summary.get("max_p95_ms") is not None:
        p95 = summary["turn_latency_ms"]["p95"]
        verdict = "EXCEEDED" if summary["p95_exceeded"] else "ok"
        lines.append(f"turn latency p95 {_fmt(p95)} ms vs budget {summary['max_p95_ms']:g} ms: "
                     f"{verdict}")
    lines.append(f"exit status: {summary['exit_status']}")
    return lines


def bottleneck_line(bottleneck: dict[str, Any] | None) -> str | None:
    """What to do when the offline backend, not the media server, set the latency."""
    if not bottleneck or bottleneck.get("stage") != "offline_backend":
        return None
    return (f"bottleneck: the offline backend. Speech end -> thinking took "
            f"{bottleneck['thinking_p50_ms']:.0f} ms of the {bottleneck['heard_p50_ms']:.0f} ms "
            f"heard latency (p50, {100 * bottleneck['share']:.0f} %): its speech detection and "
            "recognition fell behind. Start calls gradually (--ramp), place fewer, or "
            "use a cloud backend to measure the media server itself.")


def write_json(path: str | Path, document: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")


def write_plot(path: str | Path, calls: Sequence[CallResult], summary: dict[str, Any]) -> None:
    """Latency distribution (histogram + CDF) and a timeline of active calls and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (heard at, latency) of every answered turn
    answered = [(t.heard_s, t.latency_ms) for c in calls for t in c.turns
                if t.latency_ms is not None]
    lat = [ms for _, ms in answered]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 8))

    if lat:
        ax1.hist(lat, bins=min(40, max(5, len(lat) // 2)), color="tab:blue", alpha=0.7,
                 label="heard turn latency")
        for key, style in (("p50", "--"), ("p95", ":"), ("p99", "-.")):
            v = summary["turn_latency_ms"][key]
            if v is not None:
                ax1.axvline(v, color="black", linestyle=style, label=f"{key} {v:.0f} ms")
        cdf = ax1.twinx()
        xs = sorted(lat)
        cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], color="tab:red")
        cdf.set_ylabel("CDF")
        cdf.set_ylim(0, 1.02)
    else:
        ax1.text(0.5, 0.5, "no turn latency measured", ha="center", transform=ax1.transAxes)
    barge = [t.barge_in_stop_ms for c in calls for t in c.turns if t.barge_in_stop_ms is not None]
    if barge:
        ax1.hist(barge, bins=min(40, max(5, len(barge) // 2)), color="tab:green", alpha=0.5,
                 label="barge-in stop")
    ax1.set_xlabel("ms")
    ax1.set_ylabel("turns")
    ax1.set_title(f"latency distribution ({len(lat)} turns, {summary['calls']} calls)")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="upper left", fontsize="small")

    times, counts = active_timeline(calls)
    ax2.step(times, counts, where="post", color="tab:gray", label="active calls")
    ax2.set_xlabel("s since start")
    ax2.set_ylabel("active calls")
    if answered:
        lat_ax = ax2.twinx()
        lat_ax.scatter([s for s, _ in answered], lat, s=10, color="tab:blue",
                       label="turn latency")
        lat_ax.set_ylabel("turn latency, ms")
        lat_ax.set_ylim(bottom=0)
    failures = [f.at_s for c in calls for f in c.failures if f.at_s is not None]
    if failures:
        ax2.scatter(failures, [0] * len(failures), marker="x", color="tab:red", label="failure")
    ax2.set_title("timeline")
    ax2.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
