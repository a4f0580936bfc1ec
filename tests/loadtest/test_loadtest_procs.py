"""`rtc-agent loadtest --procs 2` against the bench's bare aiortc echo server.

Covers the multi-process path (worker processes reporting JSON lines) and the
echo server the per-call benchmark compares rtc-agent with.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.ports import loopback_port

from .test_loadtest_cli import ROOT, _offline_env

pytestmark = pytest.mark.slow


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[str]:
    port = loopback_port()
    log = tmp_path / "echo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=_offline_env(), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if json.load(resp)["ok"]:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"echo server did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _tone_wav(path: Path) -> Path:
    rate = 48000
    t = np.arange(int(0.6 * rate)) / rate
    tone = (6000 * np.sin(2 * np.pi * 330 * t)).astype(np.int16)
    pcm = np.concatenate([np.zeros(rate // 5, np.int16), tone, np.zeros(rate // 2, np.int16)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_two_worker_processes(echo_server: str, tmp_path: Path) -> None:
    wav = _tone_wav(tmp_path / "tone.wav")
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rtc_agent.cli", "loadtest", "--url", echo_server,
         "--calls", "3", "--procs", "2", "--ramp", "0.5", "--duration", "3",
         "--prompts", str(wav), "--json", str(out), "--turn-timeout", "5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=_offline_env())
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
