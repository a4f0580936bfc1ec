"""Soak: N calls talking for M minutes; do the server's processes hold steady?

Starts `rtc-agent serve` on the offline backend, runs `rtc-agent loadtest` with N
concurrent scripted callers for M minutes, and samples the RSS, open file
descriptors and threads of both server processes (the agent and its offline
child) every few seconds. After a warm-up, a least-squares line through the
samples gives each quantity's slope per hour: a leak shows as a slope, a bounded
process as a flat line. Idle samples after the calls end show what is returned.

Usage: .venv/bin/python bench/soak.py [--calls 4] [--minutes 15] [--json out.json]
Record the figures in docs/benchmarks.md, taken with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from call_cost import ROOT, free_port, process, wait_healthy

sys.path.insert(0, str(ROOT))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
    return {"rss_mb": rss_kb / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mx) * (v - my) for t, v in points) / var * 3600


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            row: dict[str, Any] = {"t": time.monotonic() - self.t0}
            for name, pid in self.pids.items():
                try:
                    row[name] = sample(pid)
                except (OSError, StopIteration):
                    row[name] = None
            self.rows.append(row)
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def summarize(rows: list[dict[str, Any]], name: str, start_s: float,
              end_s: float) -> dict[str, Any]:
    window = [r for r in rows if start_s <= r["t"] <= end_s and r.get(name)]
    out: dict[str, Any] = {}
    for key in ("rss_mb", "fds", "threads"):
        points = [(r["t"], r[name][key]) for r in window]
        out[key] = {
            "first": points[0][1] if points else None,
            "last": points[-1][1] if points else None,
            "max": max((v for _, v in points), default=None),
            "slope_per_h": slope_per_hour(points),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--warmup-frac", type=float, default=0.2,
                        help="leave out this first share of the run from the slopes")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds to keep sampling after the calls end")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    from tests.speech import speak_wav

    prompt = speak_wav("what is twelve times seven")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rtc = str(ROOT / ".venv" / "bin" / "rtc-agent")
        with process([rtc, "serve", "--port", str(port), "--max-calls", str(args.calls + 2),
                      "--log-level", "WARNING"], tmp / "serve.log") as serve:
            wait_healthy(url, serve, tmp / "serve.log")
            (child,) = children(serve.pid)
            sampler = Sampler({"agent": serve.pid, "offline": child}, args.every)
            sampler.start()
            duration = args.minutes * 60
            report = tmp / "loadtest.json"
            with process([rtc, "loadtest", "--url", url, "--calls", str(args.calls),
                          "--ramp", "5", "--duration", str(duration), "--prompts", str(prompt),
                          "--json", str(report)], tmp / "loadtest.log") as load:
                load.wait(timeout=duration + 300)
            calls_end = sampler.rows[-1]["t"] if sampler.rows else 0.0
            time.sleep(args.idle)
            sampler.stop()
            doc = json.loads(report.read_text()) if report.exists() else {}
    rows = sampler.rows
    start = duration * args.warmup_frac
    result = {
        "calls": args.calls, "minutes": args.minutes, "warmup_s": start,
        "turns": doc.get("summary", {}).get("turns"),
        "failures": doc.get("summary", {}).get("failures"),
        "processes": {name: summarize(rows, name, start, calls_end)
                      for name in ("agent", "offline")},
        "idle_after": {name: rows[-1].get(name) for name in ("agent", "offline")} if rows else {},
        "samples": rows,
    }
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    print(f"{args.calls} calls, {args.minutes:g} min, slopes after {start:.0f} s of warm-up "
          f"(turns: {result['turns']}, failures: {result['failures']})")
    print("| process | RSS first -> last (MB) | RSS slope (MB/h) | fds slope (/h) | "
          "threads slope (/h) | idle after: RSS, fds, threads |")
    print("|---|---|---|---|---|---|")
    for name, s in result["processes"].items():
        idle = result["idle_after"].get(name) or {}

        def f(v: float | None, nd: int = 1) -> str:
            return "-" if v is None else f"{v:.{nd}f}"

        print(f"| {name} | {f(s['rss_mb']['first'])} -> {f(s['rss_mb']['last'])} | "
              f"{f(s['rss_mb']['slope_per_h'])} | {f(s['fds']['slope_per_h'])} | "
              f"{f(s['threads']['slope_per_h'])} | {f(idle.get('rss_mb'))}, "
              f"{idle.get('fds', '-')}, {idle.get('threads', '-')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
