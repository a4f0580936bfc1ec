"""Place N scripted WebRTC calls against an rtc-agent server and report latency.

Each call speaks a prompt, waits for the spoken reply and measures the heard turn
latency (end of the caller's speech -> first audible reply frame), again and
again until the duration ends. Exit status: 0 all good, 1 a call failed (or no
call was placed), 2 the turn latency p95 exceeded --max-p95-ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.text import Text

from rtc_agent.loadtest.metrics import CallResult, Failure, aggregate, percentile, run_document
from rtc_agent.loadtest.report import outcome_lines, summary_table, write_json, write_plot
from rtc_agent.loadtest.runner import RunSpec, run_calls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    parser.add_argument("--calls", type=int, default=2, help="concurrent calls (N)")
    parser.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                        help="start the N calls evenly over this many seconds")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS",
                        help="no new turn starts after this long (turns in flight finish)")
    parser.add_argument("--prompts", nargs="+", required=True, metavar="WAV",
                        help="16-bit PCM WAVs to speak, used in turn (any rate; 48 kHz best)")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="write every sample and the summary as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG: latency distribution and timeline")
    parser.add_argument("--procs", type=int, default=1,
                        help="spread the callers over this many processes")
    parser.add_argument("--barge-in-ms", type=float, default=None, metavar="MS",
                        help="talk over each reply this long after it becomes audible")
    parser.add_argument("--max-p95-ms", type=float, default=None, metavar="MS",
                        help="fail (exit 2) when the turn latency p95 exceeds this")
    parser.add_argument("--token", default=None, help="bearer token for POST /offer")
    parser.add_argument("--turn-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="a reply not audible this long after the prompt is a failure")
    parser.add_argument("--connect-timeout", type=float, default=15.0, metavar="SECONDS")
    parser.add_argument("--pause", type=float, default=0.3, metavar="SECONDS",
                        help="silence between the end of a reply and the next prompt")
    parser.add_argument("--jitter-prefetch", type=int, default=None, metavar="FRAMES",
                        help="callers' jitter buffer depth (default aiortc's 4 = ~80 ms; 0 "
                             "is closer to a browser on a clean network)")


class Progress:
    """Live counts for the terminal, fed by the callers' events."""

    def __init__(self, calls: int, duration_s: float, t0: float) -> None:
        self.calls, self.duration_s, self.t0 = calls, duration_s, t0
        self.started = self.connected = self.done = self.turns = 0
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []
        self.results: dict[int, CallResult] = {}

    def handle(self, event: dict[str, Any]) -> None:
        ev = event.get("ev")
        if ev == "start":
            self.started += 1
        elif ev == "connected":
            self.connected += 1
        elif ev == "turn":
            self.turns += 1
            self.latencies.append(event["latency_ms"])
        elif ev == "failure":
            self.failures[event["kind"]] = self.failures.get(event["kind"], 0) + 1
        elif ev == "done":
            self.done += 1
            self.results[event["index"]] = CallResult.from_dict(event["result"])

    def render(self) -> Text:
        elapsed = max(0.0, time.monotonic() - self.t0)
        n_fail = sum(self.failures.values())
        line = Text(f"{elapsed:5.1f}/{self.duration_s:g} s", style="bold")
        active = self.connected - self.done_connected()
        p50, p95 = percentile(self.latencies, 50), percentile(self.latencies, 95)
        line.append(
            f"  started {self.started}/{self.calls}  active {active}  done {self.done}"
            f"  turns {self.turns}  p50 {_ms(p50)}  p95 {_ms(p95)}  "
        )
        line.append(f"failures {n_fail}", style="red" if n_fail else "green")
        return line

    def done_connected(self) -> int:
        return sum(1 for r in self.results.values() if r.connected_s is not None)


class ProgressLine:
    """The run's live line on stderr, ended with a newline before the summary prints.

    On a terminal it is redrawn in place every `interval_s` (carriage return, line
    cleared, cut to the terminal's width so it never wraps into a second line);
    elsewhere (a pipe, a CI log) it is printed as a line every `log_every_s`.
    Leaving the block always prints the final state and ends the line, so the
    table that follows (on stdout, often the same terminal) starts a line of its
    own instead of running on from the progress line.
    """

    def __init__(self, console: Console, render: Callable[[], Text], *,
                 interval_s: float = 0.5, log_every_s: float = 10.0) -> None:
        self.console = console
        self.render = render
        self.live = console.is_terminal
        self.interval_s = interval_s if self.live else log_every_s
        self._task: asyncio.Task[None] | None = None

    def draw(self) -> None:
        """Show the current state: in place on a terminal, as a new line elsewhere."""
        line = self.render()
        if self.live:
            line.truncate(max(1, self.console.width - 1), overflow="ellipsis")
            self.console.file.write("\r\x1b[2K")
            self.console.print(line, end="", soft_wrap=True)
        else:
            self.console.print(line, soft_wrap=True)
        self.console.file.flush()

    def end(self) -> None:
        """The final state, and the newline that ends the live line."""
        self.draw()
        if self.live:
            self.console.file.write("\n")
            self.console.file.flush()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.draw()

    async def __aenter__(self) -> ProgressLine:
        if self.live:
            self.draw()
        self._task = asyncio.create_task(self._refresh())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.end()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


async def _run_worker(spec: RunSpec, handle: Any) -> None:
    """One worker process; its JSON lines feed `handle`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtc_agent.loadtest.runner",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(spec.to_json().encode())
    await proc.stdin.drain()
    proc.stdin.close()
    try:
        async with asyncio.timeout(max(1.0, spec.hard_end - time.monotonic() + 30)):
            async for line in proc.stdout:
                try:
                    handle(json.loads(line))
                except ValueError:
                    continue
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _run(args: argparse.Namespace, console: Console, err: Console) -> int:
    procs = max(1, min(args.procs, args.calls))
    # Worker processes need a moment to import aiortc before the first call is due.
    t0 = time.monotonic() + (3.0 if procs > 1 else 0.3)
    base = RunSpec(
        url=args.url, prompts=args.prompts, calls=args.calls,
        indices=[], t0=t0, duration_s=args.duration, ramp_s=args.ramp, token=args.token,
        barge_in_ms=args.barge_in_ms, turn_timeout_s=args.turn_timeout,
        connect_timeout_s=args.connect_timeout, pause_s=args.pause,
        jitter_prefetch=args.jitter_prefetch,
    )
    specs = [replace(base, proc=i, indices=list(range(i, args.calls, procs)))
             for i in range(procs)]
    progress = Progress(args.calls, args.duration, t0)
    wall0 = time.monotonic()
    async with ProgressLine(err, progress.render):
        if procs == 1:
            await run_calls(specs[0], progress.handle)
        else:
            await asyncio.gather(*(_run_worker(s, progress.handle) for s in specs))
    wall_s = time.monotonic() - wall0

    results = dict(progress.results)
    for spec in specs:  # a worker that died leaves its calls unreported: they failed
        for i in spec.indices:
            if i not in results:
                results[i] = CallResult(index=i, proc=spec.proc, failures=[
                    Failure("worker_died", "the worker process gave no result")])
    calls = [results[i] for i in sorted(results)]
    summary = aggregate(calls, args.max_p95_ms)
    console.print(summary_table(summary))
    for line in outcome_lines(summary):
        # Lines carry the server's own words: no rich markup, and not cut at 80
        # columns when piped, so a message stays one line that can be searched.
        console.print(line, markup=False, soft_wrap=True)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "token"}
    config["procs"] = procs
    if args.json_path:
        write_json(args.json_path, run_document(config, calls, summary, wall_s))
    if args.plot:
        write_plot(args.plot, calls, summary)
    return int(summary["exit_status"])


def run(args: argparse.Namespace) -> int:
    console = Console()
    err = Console(stderr=True)
    for p in args.prompts:
        if not Path(p).is_file():
            err.print(f"[red]no such prompt WAV: {p}[/red]")
            return 1
    if args.calls < 0 or args.procs < 1:
        err.print("[red]--calls must be >= 0 and --procs >= 1[/red]")
        return 1
    # absolute paths: worker processes may not share our working directory
    args.prompts = [str(Path(p).resolve()) for p in args.prompts]
    return asyncio.run(_run(args, console, err))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtc-agent loadtest", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
