"""Resume after a network switch: how long a call is without audio when the browser moves.

One command, one run, same machine. It starts `rtc-agent serve` (offline backend) in
one network namespace and headless Chromium in another, joined by two links
(tests/web/roaming.py: link a 10.99.N.0/24, link b 10.98.N.0/24); every packet stays
inside the two namespaces, and everything is stopped and deleted at the end (also on
an error), by the process groups it created. The fake microphone plays silence, so
the offline backend does no speech work during the run; the server's audio (silence
packets every 20 ms) and the caller's flow all the time, as in any call.

One call, then `--switches` switches (default 10) of each kind, alternating links:

  break  the browser's address on its link is deleted (the call's path dies, nothing
         is sent), and `--gap` s later (default 3) it gets an address on the other
         link, on another subnet: a phone whose Wi-Fi went before the cellular network
         was up. The clock starts when the new address exists ("new path").
  make   the other link gets its address first, `--settle` s (default 3) before the
         old one is deleted: the cellular network was up before Wi-Fi went. The new
         path exists before the loss, so the clock starts at the loss; nothing but the
         silence tells the page (no online/offline event).

Per switch, on the page's clock (performance.now(); the page keeps a record of each
resume in rtcAgent.resumes, web/call.js), all from the start of the clock:
  noticed   the page decided the path was lost (its `why`: offline, audio, ...);
  offered   the resume's offer left (gathered on the new network);
  answered  the server's answer to POST /calls/{id}/resume arrived;
  connected ICE + DTLS up on the new connection;
  audio     the first packet of the agent's audio on it (the remote track's unmute):
            audio flowing again, toward the caller;
  resumed   `session.resumed` on the new data channel;
and, from the server's log (its clock, ms resolution, against the wall clock the
switch was timed on): `server audio`, the caller's first audio on the new connection
("audio flowing on the new connection"). Plus `after notice`: audio minus the later of
the page noticing the loss and the new path existing, i.e. the resume itself (the
issue's goal: under 1 s p95).

Usage:
    .venv/bin/python bench/resume.py --json bench/results/resume.json
    .venv/bin/python bench/resume.py --relay --json bench/results/resume-relay.json

`--relay` makes the call relay-only through coturn (?relay=1), as a caller behind a
network that only TURN gets through. The server runs with `--offers-per-minute 0`:
resumes share the offer rate limit (10 a minute per address), which is not what this
measures. Run it with nothing else on the machine; the load average at the start and
the end is in the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtc_agent.loadtest.metrics import percentile  # noqa: E402
from tests.web.netns import missing_tools  # noqa: E402
from tests.web.roaming import Roaming, roaming, wait_until  # noqa: E402

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
MARKS = ("noticed", "offered", "answered", "connected", "audio", "resumed")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*audio flowing on the new "
                      r"connection")


def silence(path: Path, seconds: int = 10) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(b"\0\0" * 48000 * seconds)
    return path


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def server_audio_times(log: str, after_line: int) -> list[float]:
    """Wall-clock times of the server's 'audio flowing on the new connection' lines."""
    out = []
    for line in log.splitlines()[after_line:]:
        m = LOG_TIME.match(line)
        if m:
            out.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def log_lines(stack: Roaming) -> tuple[str, int]:
    log = stack.server_log()
    return log, len(log.splitlines())


def one_switch(page: Any, stack: Roaming, kind: str, n: int, args: argparse.Namespace) -> dict:
    """One switch of `kind`; the figures (ms) from the start of its clock."""
    _, lines_before = log_lines(stack)
    old, new = stack.on, stack.other()
    if kind == "break":
        lost = page.evaluate("performance.now()")
        stack.leave()
        wait_until(lambda: page.evaluate("rtcAgent.state") == "resuming", 10, "the page to notice")
        time.sleep(args.gap)
        stack.join(new)
        wall, start = time.time(), page.evaluate("performance.now()")
    else:
        stack.join(new)
        time.sleep(args.settle)
        # the clock starts before the address goes (the command's few ms count)
        wall, start = time.time(), page.evaluate("performance.now()")
        stack.leave(old)
        lost = start
    wait_until(lambda: page.evaluate("rtcAgent.resumes.length") >= n, 20, f"resume {n}")
    rec = page.evaluate(f"rtcAgent.resumes[{n - 1}]")
    if rec.get("outcome") != "resumed":
        raise RuntimeError(f"switch {n} did not resume: {rec}")
    # the server logs the caller's first audio on the new connection
    stamps: list[float] = []
    deadline = time.monotonic() + 5
    while not stamps and time.monotonic() < deadline:
        stamps = server_audio_times(stack.server_log(), lines_before)
        time.sleep(0.05)
    attempt = rec["attempts"][-1]
    page_marks = {
        "noticed": rec["noticedAt"], "offered": attempt.get("offered"),
        "answered": attempt.get("answered"), "connected": rec.get("connectedAt"),
        "audio": rec.get("audioAt"), "resumed": rec.get("resumedAt"),
    }
    row: dict[str, Any] = {
        "n": n, "kind": kind, "from": old, "to": new, "why": rec["why"],
        "attempts": len(rec["attempts"]), "attempt_errors": [a.get("error") for a in
                                                               rec["attempts"] if a.get("error")],
        "detect_ms": rec["noticedAt"] - lost,
        **{k: (v - start if v is not None else None) for k, v in page_marks.items()},
        "server_audio": (stamps[-1] - wall) * 1000 if stamps else None,
    }
    row["after_notice"] = rec["audioAt"] - max(rec["noticedAt"], start)
    return row


def run(args: argparse.Namespace, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:], "cores": os.cpu_count(), "loadavg_start": loadavg(),
        "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                   capture_output=True, text=True).stdout.strip(),
        "relay": args.relay, "gap_s": args.gap, "settle_s": args.settle, "rows": [],
    }
    mic = silence(work / "silence.wav")
    serve_args = ["--offers-per-minute", "0", *args.serve_arg]
    with roaming(work, args=serve_args, turn=args.relay) as stack, sync_playwright() as pw:
        flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic}",
                 *stack.browser_args()]
        browser = pw.chromium.launch(executable_path=str(stack.ns.chromium_wrapper(work)),
                                     headless=True, args=flags, timeout=60_000)
        try:
            page = browser.new_page()
            page.goto(stack.url("/?raw=1" + ("&relay=1" if args.relay else "")))
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            page.click("#call")
            wait_until(lambda: page.evaluate(
                "rtcAgent.events.some(e => e.type === 'session.ready')"), 30, "the call")
            time.sleep(2)
            n = 0
            for _ in range(args.switches):
                for kind in args.kinds:
                    n += 1
                    row = one_switch(page, stack, kind, n, args)
                    results["rows"].append(row)
                    print(f"{n:3d} {kind:5s} {row['from']}->{row['to']} why={row['why']:8s} "
                          f"detect {row['detect_ms']:6.0f}  " + "  ".join(
                              f"{k} {row[k]:6.0f}" for k in (*MARKS[1:], "server_audio",
                                                            "after_notice")
                              if row[k] is not None), flush=True)
                    time.sleep(args.pause)
            results["call_id"] = page.evaluate("rtcAgent.callId")
            health = stack.healthz()
            results["healthz_after"] = {k: health.get(k) for k in ("calls", "calls_total")}
            page.click("#call")
        finally:
            browser.close()
    results["loadavg_end"] = loadavg()
    results["summary"] = summarize(results["rows"], args.kinds)
    return results


def summarize(rows: list[dict], kinds: list[str]) -> dict:
    out: dict[str, Any] = {}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        out[kind] = {}
        for key in ("detect_ms", *MARKS[1:], "server_audio", "after_notice"):
            values = [r[key] for r in mine if r[key] is not None]
            if values:
                out[kind][key] = {"n": len(values),
                                  "p50": round(percentile(values, 50) or 0.0, 1),
                                  "p95": round(percentile(values, 95) or 0.0, 1),
                                  "max": round(max(values), 1),
                                  "mean": round(statistics.fmean(values), 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--switches", type=int, default=10, help="switches of each kind")
    ap.add_argument("--kinds", nargs="+", choices=("break", "make"), default=["break", "make"])
    ap.add_argument("--gap", type=float, default=3.0,
                    help="break: seconds without any address before the new one")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="make: seconds the new link is up before the old goes")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between switches")
    ap.add_argument("--relay", action="store_true", help="relay-only ICE through coturn")
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="an extra argument for rtc-agent serve (repeatable)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"needs {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        results = run(args, Path(tmp))
    print(json.dumps(results["summary"], indent=1))
    print(f"load average: start {results['loadavg_start']}, end {results['loadavg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
