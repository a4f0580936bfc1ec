"""`rtc-agent loadtest --procs 2` against the bench's bare aiortc echo server.

Covers the multi-process path (worker processes reporting JSON lines) and the
echo server the per-call benchmark compares rtc-agent with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, offline_env

pytestmark = pytest.mark.slow


def test_two_worker_processes(echo_server: str, tone_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rtc_agent.cli", "loadtest", "--url", echo_server,
         "--calls", "3", "--procs", "2", "--ramp", "0.5", "--duration", "3",
         "--prompts", str(tone_wav), "--json", str(out), "--turn-timeout", "5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=offline_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["procs"] == 2
    calls = doc["calls"]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert sorted(c["proc"] for c in calls) == [0, 0, 1]
    for c in calls:
        assert c["failures"] == [] and c["turns"]
        # the echo of the prompt's tail is heard right after the prompt ends
        assert all(0 <= t["latency_ms"] < 500 for t in c["turns"])
        assert c["rx_fps"] > 45
    # calls started over the ramp, in order
    starts = [c["start_s"] for c in calls]
    assert starts == sorted(starts) and starts[-1] - starts[0] >= 0.25
