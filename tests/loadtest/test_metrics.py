"""Pure statistics and report code of the load test."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from rtc_agent.loadtest.metrics import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_P95_EXCEEDED,
    SCHEMA,
    CallResult,
    Failure,
    TurnSample,
    active_timeline,
    aggregate,
    exit_status,
    failure_details,
    failures_by_kind,
    loss_pct,
    offline_bottleneck,
    percentile,
    run_document,
    summarize,
)
from rtc_agent.loadtest.report import (
    bottleneck_line,
    outcome_lines,
    summary_table,
    write_json,
    write_plot,
)


def test_percentile_interpolates_between_ranks() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 95) == pytest.approx(4.8)
    assert percentile([10.0, 0.0], 25) == pytest.approx(2.5)  # order does not matter
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert percentile([math.nan, 3.0], 50) == 3.0


def test_percentile_matches_numpy_linear() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    xs = rng.exponential(300, 257).tolist()
    for p in (50, 95, 99):
        assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)))


def test_summarize_skips_missing() -> None:
    s = summarize([100.0, None, 300.0, math.nan])
    assert s["n"] == 2 and s["mean"] == 200.0 and s["max"] == 300.0 and s["p50"] == 200.0
    assert s["min"] == 100.0
    empty = summarize([])
    assert empty == {"n": 0, "mean": None, "min": None, "p50": None, "p95": None, "p99": None,
                     "max": None}


def _call(index: int, latencies: list[float | None], failures: list[str] = (),  # type: ignore[assignment]
          connected: float | None = 1.0, end: float | None = 5.0) -> CallResult:
    turns = [TurnSample(turn=k, prompt="p.wav", start_s=1.0 + k, latency_ms=lat,
                        heard_s=None if lat is None else 2.0 + k,
                        error=None if lat is not None else "no_reply")
             for k, lat in enumerate(latencies)]
    return CallResult(index=index, connected_s=connected, end_s=end, connect_ms=80.0 + index,
                      turns=turns, failures=[Failure(k, "x", 3.0) for k in failures],
                      transcripts={"user": len(latencies), "assistant": 1},
                      stats={"in_packets_received": 99, "in_packets_lost": 1,
                             "in_jitter_ms": 2.0, "rtt_ms": 1.5})


def test_failure_counting_and_exit_status() -> None:
    calls = [
        _call(0, [900.0, 1100.0]),
        _call(1, [None], failures=["no_reply"]),
        _call(2, [], failures=["at_capacity"], connected=None, end=None),
        _call(3, [], failures=["at_capacity"], connected=None, end=None),
    ]
    assert failures_by_kind(calls) == {"at_capacity": 2, "no_reply": 1}
    s = aggregate(calls)
    assert s["calls"] == 4 and s["calls_ok"] == 1 and s["calls_failed"] == 3
    assert s["turns"] == 3 and s["turns_ok"] == 2
    assert s["turn_latency_ms"]["n"] == 2 and s["turn_latency_ms"]["p50"] == 1000.0
    assert s["transcripts"] == {"user": 3, "assistant": 4}
    assert s["exit_status"] == EXIT_FAILURES


def test_p95_budget() -> None:
    calls = [_call(0, [float(v) for v in range(100, 2100, 100)])]  # 100 .. 2000 ms
    ok = aggregate(calls, max_p95_ms=2000)
    assert ok["p95_exceeded"] is False and ok["exit_status"] == EXIT_OK
    over = aggregate(calls, max_p95_ms=1500)
    assert over["turn_latency_ms"]["p95"] == pytest.approx(1905.0)
    assert over["p95_exceeded"] is True and over["exit_status"] == EXIT_P95_EXCEEDED
    # failures dominate a blown budget; an empty run is a failure, not a pass
    assert exit_status(1, True) == EXIT_FAILURES
    assert exit_status(0, False, calls=0) == EXIT_FAILURES
    assert aggregate([])["exit_status"] == EXIT_FAILURES


def test_loss_pct() -> None:
    assert loss_pct({"in_packets_received": 99, "in_packets_lost": 1}) == pytest.approx(1.0)
    assert loss_pct({"in_packets_received": 0, "in_packets_lost": 0}) is None
    assert loss_pct({}) is None


def test_active_timeline() -> None:
    calls = [_call(0, [], connected=1.0, end=3.0), _call(1, [], connected=2.0, end=4.0),
             _call(2, [], connected=None, end=None)]
    times, counts = active_timeline(calls, step_s=1.0)
    assert dict(zip(times, counts, strict=True)) == {0.0: 0, 1.0: 1, 2.0: 2, 3.0: 1, 4.0: 0,
                                                     5.0: 0}


def test_json_document_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls = [_call(1, [500.0]), _call(0, [None], failures=["no_reply"])]
    summary = aggregate(calls, max_p95_ms=800)
    doc = run_document({"calls": 2}, calls, summary, wall_s=12.5)
    path = tmp_path / "out.json"
    write_json(path, doc)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert [c["index"] for c in data["calls"]] == [0, 1]
    assert set(data["summary"]) >= {"calls", "calls_failed", "failures", "turn_latency_ms",
                                    "connect_ms", "barge_in_stop_ms", "in_loss_pct",
                                    "in_jitter_ms", "rtt_ms", "exit_status"}
    turn = data["calls"][1]["turns"][0]
    assert set(turn) >= {"turn", "prompt", "start_s", "speech_end_s", "heard_s", "latency_ms",
                         "barge_in_at_s", "barge_in_stop_ms", "user_text", "assistant_text"}
    back = [CallResult.from_dict(c) for c in data["calls"]]
    assert back[0].failures[0].kind == "no_reply"
    assert back[1].turns[0].latency_ms == 500.0


def test_table_lines_and_plot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls = [_call(0, [400.0, 600.0]), _call(1, [None], failures=["no_reply"])]
    calls[0].turns[0].barge_in_stop_ms = 120.0
    summary = aggregate(calls, max_p95_ms=500)
    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "heard turn latency" in text and "590.0" in text  # p95 of 400, 600
    lines = outcome_lines(summary)
    assert any("no_reply x1" in line for line in lines)
    assert any("EXCEEDED" in line for line in lines)
    assert lines[-1] == "exit status: 1"
    png = tmp_path / "plot.png"
    write_plot(png, calls, summary)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    empty = tmp_path / "empty.png"
    write_plot(empty, [], aggregate([]))
    assert empty.stat().st_size > 1000


def test_offline_bottleneck_rule() -> None:
    offline = {"offline": 6}
    # 6 calls on a shared 2-core machine (measured): end of turn 3.4 s of 4.2 s heard
    verdict = offline_bottleneck(3432.0, 4160.0, offline)
    assert verdict is not None and verdict["stage"] == "offline_backend"
    assert verdict["share"] == pytest.approx(3432 / 4160)
    # one unloaded call: the VAD's silence window dominates, but that is no bottleneck
    assert offline_bottleneck(682.0, 1133.0, {"offline": 1}) is None
    # slow, but the end of turn is not what dominates (the way back is)
    assert offline_bottleneck(1100.0, 3000.0, offline) is None
    # the boundaries: half the heard latency and 1000 ms both count
    assert offline_bottleneck(1000.0, 2000.0, offline) is not None
    assert offline_bottleneck(999.0, 1500.0, offline) is None
    # only the offline backend: a cloud service's end of turn is not ours to blame
    assert offline_bottleneck(3432.0, 4160.0, {"openai": 6}) is None
    assert offline_bottleneck(3432.0, 4160.0, {"offline": 3, "custom": 3}) is None
    assert offline_bottleneck(3432.0, 4160.0, {}) is None
    # nothing measured, nothing said
    assert offline_bottleneck(None, 4160.0, offline) is None
    assert offline_bottleneck(3432.0, None, offline) is None


def _staged(index: int, thinking: float, heard: float, backend: str = "offline") -> CallResult:
    call = _call(index, [heard])
    call.backend = backend
    call.turns[0].thinking_ms = thinking
    return call


def test_summary_names_the_offline_backend_as_the_bottleneck() -> None:
    calls = [_staged(i, 2500.0 + 100 * i, 3000.0 + 100 * i) for i in range(4)]
    summary = aggregate(calls, max_p95_ms=1500)
    assert summary["backends"] == {"offline": 4}
    assert summary["bottleneck"]["stage"] == "offline_backend"
    line = bottleneck_line(summary["bottleneck"])
    assert line is not None and "--ramp" in line and "cloud backend" in line
    assert "2650 ms of the 3150 ms" in line
    lines = outcome_lines(summary)
    assert line in lines
    assert lines[-1] == "exit status: 2"  # the budget still decides the exit status
    json.dumps(summary, allow_nan=False)  # and it is written as JSON

    # the same latencies through a cloud backend: no such claim
    cloud = aggregate([_staged(i, 2500.0, 3000.0, "openai") for i in range(4)])
    assert cloud["bottleneck"] is None
    assert not any(line.startswith("bottleneck") for line in outcome_lines(cloud))
    # a fast offline run: none either
    fast = aggregate([_staged(i, 650.0, 900.0) for i in range(4)])
    assert fast["bottleneck"] is None and bottleneck_line(None) is None


def test_each_failure_message_is_shown_once() -> None:
    refused = "The agent's service refused the connection: HTTP 401 invalid_api_key"
    calls = [_call(i, []) for i in range(5)]
    for c in calls:
        c.failures = [Failure("upstream_failed", refused, 1.0, by_server=True)]
    calls[4].failures = [Failure("timeout", "no session.ready after 15 s", 16.0)]
    assert failure_details(calls) == {
        "timeout": {"detail": "no session.ready after 15 s", "by_server": False},
        "upstream_failed": {"detail": refused, "by_server": True},
    }
    summary = aggregate(calls)
    assert summary["failures"] == {"timeout": 1, "upstream_failed": 4}
    lines = outcome_lines(summary)
    assert "failures: timeout x1, upstream_failed x4" in lines
    assert sum(refused in line for line in lines) == 1
    assert f"  upstream_failed (the server ended the call): {refused}" in lines
    assert "  timeout: no session.ready after 15 s" in lines
    # by_server survives the JSON round trip of the worker processes and --json
    back = CallResult.from_dict(json.loads(json.dumps(calls[0].to_dict())))
    assert back.failures[0].by_server is True
