"""What `rtc-agent loadtest` prints and returns: the progress line ends before the
table, and the exit status honours `--max-p95-ms`."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from rtc_agent.loadtest.command import ProgressLine
from rtc_agent.loadtest.metrics import EXIT_OK, EXIT_P95_EXCEEDED

from .conftest import ROOT, offline_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _line(counter: list[int]) -> Text:
    counter[0] += 1
    return Text(f"{counter[0]:5.1f}/10 s  started 4/4  active 4  turns {counter[0]}  "
                "p50 812 ms  p95 990 ms  failures 0")


async def test_progress_line_on_a_terminal_is_redrawn_in_place_then_ended() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=50, color_system=None)
    counter = [0]
    async with ProgressLine(console, lambda: _line(counter), interval_s=0.01):
        await asyncio.sleep(0.1)
    console.print("TABLE")
    text = ANSI.sub("", out.getvalue())
    assert counter[0] >= 3  # redrawn while the run went on
    head, _, tail = text.rpartition("TABLE")
    assert tail == "\n" and head.endswith("\n")  # the table starts its own line
    # one terminal line, rewritten: carriage returns, never a newline until the end
    assert head.count("\n") == 1 and head.count("\r") >= 3
    # cut to the terminal's width, so it never wraps onto a second line
    assert all(len(part) < 50 for part in head.rstrip("\n").split("\r"))
    assert "failures" not in head.split("\r")[-1]  # the tail was cut with an ellipsis
    assert head.split("\r")[-1].rstrip("\n").endswith("…")


async def test_progress_line_in_a_log_is_printed_as_whole_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=50)
    counter = [0]
    async with ProgressLine(console, lambda: _line(counter), log_every_s=0.03):
        await asyncio.sleep(0.1)
    console.print("TABLE")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[-1] == "TABLE"
    # periodic lines plus the final state, each whole (not cut to the width)
    assert len(lines) >= 3
    assert all(line.endswith("failures 0") for line in lines[:-1])


@pytest.mark.slow
def test_exit_status_honours_max_p95_and_output_stays_apart(
    echo_server: str, tone_wav: Path, tmp_path: Path,
) -> None:
    """Against the echo server (the echo is heard some tens of ms after the prompt
    ends): a budget of 1 ms is blown (exit 2), one of 60 s is not (exit 0)."""
    def run(budget_ms: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        out = tmp_path / f"run-{budget_ms}.json"
        proc = subprocess.run(
            [sys.executable, "-m", "rtc_agent.cli", "loadtest", "--url", echo_server,
             "--calls", "2", "--duration", "2", "--prompts", str(tone_wav),
             "--turn-timeout", "5", "--max-p95-ms", budget_ms, "--json", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # as one terminal shows both
            text=True, timeout=120, cwd=ROOT, env=offline_env())
        return proc, json.loads(out.read_text())

    over, doc = run("1")
    assert over.returncode == EXIT_P95_EXCEEDED, over.stdout
    assert doc["summary"]["calls_failed"] == 0 and doc["summary"]["p95_exceeded"] is True
    assert doc["summary"]["turn_latency_ms"]["p95"] > 1
    assert "vs budget 1 ms: EXCEEDED" in over.stdout
    assert over.stdout.rstrip().endswith("exit status: 2")

    within, doc = run("60000")
    assert within.returncode == EXIT_OK, within.stdout
    assert doc["summary"]["p95_exceeded"] is False and doc["summary"]["exit_status"] == 0
    assert "vs budget 60000 ms: ok" in within.stdout

    # stdout and stderr in one stream: the progress line has ended before the table
    for proc in (over, within):
        lines = proc.stdout.splitlines()
        titles = [i for i, line in enumerate(lines) if line.strip() == "rtc-agent loadtest"]
        assert titles, proc.stdout  # before the fix: "...failures 0rtc-agent loadtest"
        progress = lines[titles[0] - 1]
        assert "started 2/2" in progress and progress.rstrip().endswith("failures 0")
