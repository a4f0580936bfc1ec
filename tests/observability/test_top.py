"""`rtc-agent top` and the Grafana dashboard.

The pure parts (quantiles from buckets, windows, rates, the snapshot, its
rendering) are tested on known data; the command itself against a real server
with a real call. The rendering is compared with `top_snapshot.txt`; to change
the view on purpose, run with RTC_AGENT_UPDATE_SNAPSHOT=1 once and review the
file's diff.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from rich.console import Console

from rtc_agent.loadtest.caller import ScriptedCaller
from rtc_agent.observability import top
from rtc_agent.observability.top import (
    CallRow,
    EventRow,
    LatencyRow,
    Poll,
    Snapshot,
    WorkerRow,
    bucket_window,
    parse_scrape,
    per_minute,
    quantile,
    render,
    summarize,
)
from rtc_agent.serve import running
from tests.agent.test_call import is_done, server_config, url
from tests.ports import loopback_port

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SNAPSHOT = HERE / "top_snapshot.txt"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
INF = math.inf

# ------------------------------------------------------------------ quantiles

# 100 observations: 10 up to 0.1 s, 20 in (0.1, 0.2], 60 in (0.2, 0.5], 10 above 0.5
KNOWN = ((0.1, 10.0), (0.2, 30.0), (0.5, 90.0), (INF, 100.0))


@pytest.mark.parametrize(("q", "expected"), [
    (0.10, 0.1),                       # the 10th observation: the top of the first bucket
    (0.05, 0.05),                      # half way into the first bucket, which starts at 0
    (0.25, 0.1 + 0.1 * 15 / 20),       # 15 of the 20 in (0.1, 0.2]
    (0.50, 0.2 + 0.3 * 20 / 60),       # 20 of the 60 in (0.2, 0.5]
    (0.90, 0.5),
    (0.95, 0.5),                       # in the +Inf bucket: the highest finite bound
    (1.00, 0.5),
])
def test_quantiles_interpolate_within_the_bucket_as_prometheus_does(
    q: float, expected: float,
) -> None:
    assert quantile(q, KNOWN) == pytest.approx(expected)


def test_quantiles_of_nothing_are_unknown() -> None:
    assert quantile(0.5, ((0.1, 0.0), (INF, 0.0))) is None  # no observations
    assert quantile(0.5, ((0.1, 1.0), (0.2, 2.0))) is None  # no +Inf bucket
    assert quantile(0.5, ()) is None
    assert quantile(0.0, KNOWN) is None and quantile(1.5, KNOWN) is None


def test_a_scrape_torn_between_buckets_is_made_monotonic() -> None:
    # a bucket read a moment before its neighbour can hold fewer than the one below it
    torn = ((0.1, 10.0), (0.2, 8.0), (0.5, 20.0), (INF, 20.0))
    assert quantile(0.5, torn) == pytest.approx(0.1)  # read as (10, 10, 20, 20)
    assert quantile(0.75, torn) == pytest.approx(0.2 + 0.3 * 5 / 10)


def test_real_histogram_text_parses_to_buckets_and_a_window() -> None:
    """Through prometheus-client's own exposition: the single observation of 0.53 s
    lies in (0.5, 0.6], so its median is read as the middle of that bucket."""
    registry = CollectorRegistry()
    latency = Histogram("rtc_agent_turn_latency_seconds", "t", buckets=(0.1, 0.5, 0.6, 1),
                        registry=registry)
    tools = Histogram("rtc_agent_tool_seconds", "t", ["tool"], buckets=(1, 2),
                      registry=registry)
    errors = Counter("rtc_agent_upstream_errors", "e", ["code"], registry=registry)
    latency.observe(0.53)
    tools.labels("search").observe(0.5)
    tools.labels("weather").observe(1.5)
    errors.labels("rate_limited").inc(3)
    first = parse_scrape(generate_latest(registry).decode())
    assert first.buckets("rtc_agent_turn_latency_seconds") == (
        (0.1, 0.0), (0.5, 0.0), (0.6, 1.0), (1.0, 1.0), (INF, 1.0))
    assert quantile(0.5, first.buckets("rtc_agent_turn_latency_seconds")) == \
        pytest.approx(0.55)
    # labelled histograms are summed over their other labels
    assert first.buckets("rtc_agent_tool_seconds") == ((1.0, 1.0), (2.0, 2.0), (INF, 2.0))
    assert first.by_label("rtc_agent_upstream_errors_total", "code") == {"rate_limited": 3.0}
    assert first.value("rtc_agent_upstream_errors_total") == 3.0
    assert first.value("rtc_agent_no_such_family") is None

    for _ in range(4):
        latency.observe(0.15)
    second = parse_scrape(generate_latest(registry).decode())
    window = bucket_window(second.buckets("rtc_agent_turn_latency_seconds"),
                           first.buckets("rtc_agent_turn_latency_seconds"))
    assert window == ((0.1, 0.0), (0.5, 4.0), (0.6, 4.0), (1.0, 4.0), (INF, 4.0))
    assert quantile(0.5, window) == pytest.approx(0.1 + 0.4 * 2 / 4)


def test_not_prometheus_text_is_refused() -> None:
    with pytest.raises(ValueError, match="not Prometheus text"):
        parse_scrape("<html>rtc_agent_calls_active{oops 1</html>\n")


def test_a_window_after_a_reset_is_the_new_counts() -> None:
    before = ((0.1, 5.0), (INF, 9.0))
    assert bucket_window(((0.1, 7.0), (INF, 12.0)), before) == ((0.1, 2.0), (INF, 3.0))
    # the server restarted: fewer than before means everything counted is new
    assert bucket_window(((0.1, 1.0), (INF, 2.0)), before) == ((0.1, 1.0), (INF, 2.0))
    assert bucket_window(((0.1, 1.0), (INF, 2.0)), None) == ((0.1, 1.0), (INF, 2.0))


def test_rates_per_minute_and_after_a_reset() -> None:
    assert per_minute(130.0, 100.0, 30.0) == pytest.approx(60.0)
    assert per_minute(100.0, 100.0, 30.0) == 0.0
    assert per_minute(5.0, 100.0, 10.0) == pytest.approx(30.0)  # reset: 5 new in 10 s
    assert per_minute(5.0, None, 10.0) is None  # one scrape: no rate yet
    assert per_minute(5.0, 1.0, 0.0) is None


# ------------------------------------------------------------------ snapshots from polls


def exposition(ended: dict[str, int], turns: list[float], active: int,
               rejected: dict[str, int] | None = None) -> str:
    """Prometheus text shaped like a node's, written by prometheus-client."""
    registry = CollectorRegistry()
    Gauge("rtc_agent_calls_active", "a", registry=registry).set(active)
    calls = Counter("rtc_agent_calls", "c", ["end_reason"], registry=registry)
    for reason, n in ended.items():
        calls.labels(reason).inc(n)
    offers = Counter("rtc_agent_offers_rejected", "o", ["code"], registry=registry)
    for code, n in (rejected or {}).items():
        offers.labels(code).inc(n)
    latency = Histogram("rtc_agent_turn_latency_seconds", "t",
                        buckets=(0.2, 0.4, 0.6, 0.8, 1.0), registry=registry)
    for t in turns:
        latency.observe(t)
    return generate_latest(registry).decode()


def poll(at: float, text: str, health: dict[str, Any] | None = None,
         calls: list[dict[str, Any]] | None = None) -> Poll:
    return Poll(at=at, clock="12:00:00", metrics=parse_scrape(text), health=health,
                calls=calls)


def rows(snapshot: Snapshot) -> dict[str, EventRow]:
    return {("  " if r.indent else "") + r.name: r for r in snapshot.events}


def test_a_snapshot_windows_the_latencies_and_rates_between_two_polls() -> None:
    first = poll(100.0, exposition({"hangup": 2}, [0.3] * 10, active=3),
                 health={"calls_total": 5, "workers": []})
    second = poll(130.0, exposition({"hangup": 4, "error": 1}, [0.3] * 10 + [0.7] * 4,
                                    active=4, rejected={"at_capacity": 6}),
                  health={"calls_total": 9, "workers": []})

    one = summarize("http://x", first)
    assert one.window_s is None
    turn = next(r for r in one.latencies if r.name == "turn latency")
    assert turn.window_n is None and turn.total_n == 10
    assert turn.p50 == pytest.approx(0.3)  # 10 of 10 in (0.2, 0.4]: half way
    assert rows(one)["calls ended"].per_minute is None

    two = summarize("http://x", second, first)
    assert two.window_s == 30.0
    turn = next(r for r in two.latencies if r.name == "turn latency")
    assert (turn.window_n, turn.total_n) == (4, 14)
    assert turn.window_p50 == pytest.approx(0.7)  # only the four new turns, in (0.6, 0.8]
    assert turn.p50 == pytest.approx(0.2 + 0.2 * 7 / 10)  # since start: all fourteen
    events = rows(two)
    assert (events["calls started"].total, events["calls started"].per_minute) == (9, 8.0)
    assert (events["calls ended"].total, events["calls ended"].per_minute) == (5, 6.0)
    assert events["  hangup"].per_minute == pytest.approx(4.0)
    assert events["  error"].per_minute == pytest.approx(2.0)  # new since the last poll
    assert (events["offers rejected"].total, events["  at_capacity"].per_minute) == (6, 12.0)
    assert events["tool calls"].total == 0


def test_calls_started_without_health_come_from_ended_and_active() -> None:
    first = poll(0.0, exposition({"hangup": 1}, [], active=2))
    second = poll(60.0, exposition({"hangup": 3}, [], active=5))  # 2 ended, 3 more active
    started = rows(summarize("http://x", second, first))["calls started"]
    assert started.total is None and started.per_minute == pytest.approx(5.0)


def loop_lag(per_worker: dict[str, list[float]]) -> str:
    registry = CollectorRegistry()
    lag = Histogram("rtc_agent_event_loop_lag_seconds", "l", ["worker"],
                    buckets=(0.001, 0.01, 0.1), registry=registry)
    for worker, values in per_worker.items():
        for v in values:
            lag.labels(worker).observe(v)
    return generate_latest(registry).decode()


def test_each_worker_shows_its_own_loop_lag_over_the_last_interval() -> None:
    health = {"workers": [{"id": "n1/0"}, {"id": "n1/1"}, {"id": "n1/2"}]}
    first = poll(0.0, loop_lag({"0": [0.0005] * 20, "1": [0.0005] * 20}), health)
    # worker 1 stalls in the next interval; worker 0 stays quick; worker 2 has no samples
    second = poll(1.0, loop_lag({"0": [0.0005] * 22, "1": [0.0005] * 20 + [0.05] * 2}),
                  health)
    alone = summarize("http://x", first)
    assert alone.workers[0].loop_lag_p95 == pytest.approx(0.00095)  # since start
    s = summarize("http://x", second, first)
    quick, stalled, silent = s.workers
    assert quick.loop_lag_p95 == pytest.approx(0.00095)
    assert stalled.loop_lag_p95 == pytest.approx(0.01 + 0.09 * 0.95)  # only the two stalls
    assert silent.loop_lag_p95 is None
    row = next(line for line in rendered(s).splitlines() if line.lstrip().startswith("n1/1"))
    assert row.rstrip().endswith("96 ms"), row


def test_the_snapshot_reads_health_and_calls_defensively() -> None:
    health = {"status": "draining", "node": "n1", "calls": 1, "capacity": 8,
              "backend": "offline", "backend_state": "up", "backend_restarts": 0,
              "workers": [{"id": "n1/0", "pid": 42, "calls": 1, "capacity": 8,
                           "draining": True, "cpu": 0.25}, "not a worker",
                          {"id": "n1/1", "pid": "7", "draining": "false", "cpu": "high"}],
              "registry": {"state": "unavailable", "error": "connection refused"}}
    calls = [{"call_id": "abc", "worker": "n1/0", "duration_s": 61.5, "turns": 2,
              "turn_latency_ms": [400, 512], "barge_ins": 1,
              "tokens": {"input_text": 1, "input_audio": 2, "output_text": 3,
                         "output_audio": 4, "cached": 99}},
             {"call_id": "def", "tokens": None, "turn_latency_ms": "x"}]
    s = summarize("http://x", poll(0.0, exposition({}, [], 1), health, calls))
    assert s.workers == (WorkerRow("n1/0", 42, 1, 8, True, 0.25),
                         WorkerRow("n1/1", None, None, None, False, None))
    assert s.registry == "unavailable (connection refused)" and s.cluster is None
    assert s.live_calls == (CallRow("abc", "n1/0", 61.5, 2, 512, 1, 3, 7),
                            CallRow("def", "?", None, None, None, None, 0, 0))


def fixed_snapshot() -> Snapshot:
    return Snapshot(
        url="http://10.0.0.5:8080", clock="12:34:56", window_s=1.0, status="ok",
        node="node-a", backend="offline", backend_state="up", backend_restarts=1,
        worker_restarts=0, calls=3, capacity=40, registry="ok",
        cluster={"nodes": 2, "workers": 4, "calls": 5, "capacity": 80, "draining": 1},
        workers=(WorkerRow("node-a/0", 4101, 2, 20, False, 0.314, 0.0021),
                 WorkerRow("node-a/1", 4102, 1, 20, True, 0.05, 0.048)),
        latencies=(LatencyRow("turn latency", 2, 0.55, 0.595, 120, 0.512, 1.37),
                   LatencyRow("barge-in", 0, None, None, 7, 0.061, 0.098),
                   LatencyRow("call setup", 1, 0.075, 0.0975, 40, 0.15, 0.42),
                   LatencyRow("event-loop lag", 4, 0.0009, 0.004, 9000, 0.0012, 0.012)),
        events=(EventRow("calls started", 40, 6.0), EventRow("calls ended", 37, 4.5),
                EventRow("hangup", 35, 4.5, indent=True),
                EventRow("caller_gone", 2, 0.0, indent=True),
                EventRow("offers rejected", 3, 0.0),
                EventRow("rate_limited", 3, 0.0, indent=True),
                EventRow("upstream reconnects", 0, 0.0), EventRow("upstream errors", 0, 0.0),
                EventRow("tool calls", 12, 1.5), EventRow("ok", 11, 1.5, indent=True),
                EventRow("timeout", 1, 0.0, indent=True)),
        live_calls=(CallRow("wzEL4fnYdGaT", "node-a/0", 12.3, 3, 504, 1, 310, 2200),
                    CallRow("Qk2v9xTmPa0b", "node-b/1", 3725.0, 41, None, 0, 0, 0),
                    CallRow("h7fzivn8JhCL", "node-a/1", 2.0, 0, None, 0, 8, 21)),
        errors=("/metrics: 401 unauthorized (give --metrics-token)",))


def rendered(snapshot: Snapshot) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(snapshot))
    # trailing blanks are layout padding: kept out of the checked-in file
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def test_the_view_of_a_fixed_snapshot_is_unchanged() -> None:
    text = rendered(fixed_snapshot())
    if os.environ.get("RTC_AGENT_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text(), (
        "the view changed; if on purpose, rerun with RTC_AGENT_UPDATE_SNAPSHOT=1 and review "
        f"{SNAPSHOT.name}'s diff. Now:\n{text}")


def test_the_view_shows_only_what_it_has() -> None:
    lost = Snapshot(
        url="http://127.0.0.1:9", clock="12:00:00", window_s=None, status=None, node=None,
        backend=None, backend_state=None, backend_restarts=None, worker_restarts=None,
        calls=None, capacity=None, registry=None, cluster=None, workers=(), latencies=(),
        events=(), live_calls=None,
        errors=("cannot reach http://127.0.0.1:9: connection refused",))
    text = rendered(lost)
    assert "cannot reach http://127.0.0.1:9: connection refused" in text
    assert "workers" not in text.split("errors")[1] and "live calls" not in text


# ------------------------------------------------------------------ the dashboard

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "inf", "nan"}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def metric_names(expr: str) -> set[str]:
    """Every metric name in a PromQL expression: identifiers that are not functions,
    aggregations, keywords, or inside label matchers, ranges and `by (...)` lists."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group() in PROMQL_WORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression groups or matches by."""
    found: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        found.update(x.strip() for x in group.split(",") if x.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        found.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return found


def exposed_series() -> dict[str, set[str]]:
    """Series names a real server exposes, with their labels: Metrics() in a fresh
    process (single-process mode), its exposition read back by prometheus-client."""
    code = (
        "import json\n"
        "from prometheus_client.metrics import MetricWrapperBase\n"
        "from prometheus_client.parser import text_string_to_metric_families\n"
        "from rtc_agent.observability.metrics import Metrics\n"
        "m = Metrics()\n"
        "labels = {f.describe()[0].name: list(f._labelnames) for f in vars(m).values()\n"
        "          if isinstance(f, MetricWrapperBase)}\n"
        "families = text_string_to_metric_families(m.exposition().decode())\n"
        "print(json.dumps([[f.name, f.type, labels[f.name]] for f in families]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env)
    suffixes = {"counter": ("_total",), "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum")}
    series: dict[str, set[str]] = {}
    for name, kind, labels in json.loads(out.stdout):
        for suffix in suffixes[kind]:
            series[name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    return series


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for t in inner.get("targets", []):
                found.append((inner["title"], t["expr"]))
    return found


def problems(exprs: list[tuple[str, str]], series: dict[str, set[str]]) -> list[str]:
    wrong = []
    for title, expr in exprs:
        names = metric_names(expr)
        if not names:
            wrong.append(f"{title}: no metric in {expr!r}")
        for name in sorted(names - set(series)):
            wrong.append(f"{title}: {name} is not exposed")
        known = set().union(*(series.get(n, set()) for n in names)) | TARGET_LABELS
        for label in sorted(label_names(expr) - known):
            wrong.append(f"{title}: label {label} is not on {sorted(names)}")
    return wrong


def test_the_checker_finds_names_and_labels_and_catches_a_wrong_one() -> None:
    expr = ('histogram_quantile(0.95, sum by (instance, le) (rate('
            'rtc_agent_turn_latency_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')
    assert metric_names(expr) == {"rtc_agent_turn_latency_seconds_bucket"}
    assert label_names(expr) == {"instance", "le"}
    assert metric_names("sum(rate(a_total[5m])) / sum(rate(b_total[5m])) * 60") == \
        {"a_total", "b_total"}
    series = {"rtc_agent_calls_total": {"end_reason"}}
    assert problems([("p", "sum by (end_reason) (rate(rtc_agent_calls_total[1m]))")],
                    series) == []
    assert problems([("p", "sum(rate(rtc_agent_call_total[1m]))")], series) == [
        "p: rtc_agent_call_total is not exposed"]
    assert problems([("p", "sum by (code) (rate(rtc_agent_calls_total[1m]))")], series) == [
        "p: label code is not on ['rtc_agent_calls_total']"]


def test_the_dashboard_uses_only_exposed_metrics_and_shows_every_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    series = exposed_series()
    exprs = dashboard_exprs(dashboard)
    assert problems(exprs, series) == []
    for variable in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)",
                                     variable["query"]["query"]).groups()
        assert metric in series and label in series[metric] | TARGET_LABELS
    # every family the server exposes is on some panel
    used = set().union(*(metric_names(e) for _, e in exprs))
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in series}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families - shown == set()
    # panels: unique ids, the datasource input everywhere, on the 24-column grid
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["type"] == "row" or p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("calls active", "ended", "rejected", "setup", "turn latency", "barge-in",
                   "upstream", "tool", "tokens", "late frames", "packets lost", "jitter",
                   "event-loop lag"):
        assert wanted in titles, wanted


# ------------------------------------------------------------------ the command, live


async def run_top(*args: str) -> tuple[int, str]:
    """`rtc-agent top` as a subprocess, without blocking the loop the server runs on."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RTC_AGENT_") and k != "COLUMNS"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtc_agent.cli", "top", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"no line with {needle!r} in:\n{text}"
    return lines[0]


@pytest.mark.slow
async def test_once_shows_a_live_call_its_worker_and_its_turn_latency() -> None:
    cfg = server_config(token="caller-token", metrics_token="metrics-token")
    async with running(cfg) as server:
        base = url(server)
        async with ScriptedCaller(base, token="caller-token") as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "what is two plus three"})
            await caller.wait_event(is_done("assistant"), 30, start=n)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/calls", headers={
                        "Authorization": "Bearer caller-token"}) as response:
                    (record,) = (await response.json())["calls"]
                async with http.get(f"{base}/metrics", headers={
                        "Authorization": "Bearer metrics-token"}) as response:
                    scraped = parse_scrape(await response.text())

            code, out = await run_top("--url", base, "--token", "caller-token",
                                      "--metrics-token", "metrics-token", "--once")
            assert code == 0, out
            assert "\x1b[" not in out  # not a terminal: plain text
            worker = record["worker"]
            assert f"node {record['node']}" in out and "calls 1/20" in out, out
            assert str(os.getpid()) in line_with(out, worker)  # the worker table: this process
            row = line_with(out, caller.call_id)
            last_turn = top.seconds_text(record["turn_latency_ms"][-1] / 1000)
            assert worker in row and last_turn in row, row
            assert "live calls (node): 1" in out
            # one turn: its median is the middle of the bucket its latency fell in
            latency = scraped.value("rtc_agent_turn_latency_seconds_sum")
            assert latency is not None
            bounds = [0.0, *(b for b, _ in scraped.buckets("rtc_agent_turn_latency_seconds"))]
            low, high = next((lo, hi) for lo, hi in itertools.pairwise(bounds)
                             if lo < latency <= hi)
            p50 = top.seconds_text(low + (high - low) / 2)
            assert re.search(rf"turn latency\s+–\s+–\s+–\s+1\s+{p50}\s+\d", out), out

            # without the tokens: the refusals are in the view, and the server was reached
            code, out = await run_top("--url", base, "--once")
            assert code == 0, out
            assert "/metrics: 401 unauthorized (give --metrics-token)" in out
            assert "/calls: 401 unauthorized (give --token)" in out
            assert "/healthz: details need a valid --token" in out
            assert "status ok" in out and caller.call_id not in out
            assert "Traceback" not in out


async def test_once_against_a_closed_port_says_so_and_exits_1() -> None:
    port = loopback_port()
    code, out = await run_top("--url", f"http://127.0.0.1:{port}", "--once")
    assert code == 1, out
    assert f"cannot reach http://127.0.0.1:{port}: connection refused" in out
    assert "Traceback" not in out


async def test_once_against_a_server_that_is_not_rtc_agent_exits_1() -> None:
    """Something answers, but none of rtc-agent's routes: as good as unreachable."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        code, out = await run_top("--url", f"http://127.0.0.1:{port}", "--once")
    finally:
        await runner.cleanup()
    assert code == 1, out
    assert "/metrics: HTTP 404" in out and "/calls: HTTP 404" in out


def test_the_command_is_registered() -> None:
    from rtc_agent.cli import build_parser

    args = build_parser().parse_args(["top", "--url", "http://h:1", "--interval", "2", "--once"])
    assert args._module is top and (args.url, args.interval, args.once) == ("http://h:1", 2.0,
                                                                             True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["top", "--interval", "0"])
