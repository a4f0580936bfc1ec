"""Servers the load tester's end-to-end tests call, and how those tests run processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.ports import loopback_port

ROOT = Path(__file__).resolve().parents[2]


def offline_env() -> dict[str, str]:
    """No cloud key may leak in: the server must start its offline backend."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("RTC_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, what: str,
                 timeout_s: float, *, any_answer: bool = False, poll_s: float = 0.5) -> None:
    """Poll url's /healthz until it says ok (with any_answer: until it answers at all,
    whatever its verdict); fail the test with the log if proc exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if any_answer or json.load(resp).get("ok"):
                    return
        except urllib.error.HTTPError:
            if any_answer:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not healthy in {timeout_s:g} s:\n{log.read_text()}")
        time.sleep(poll_s)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate proc, and kill it if it has not exited in 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[str]:
    port = loopback_port()
    log = tmp_path / "echo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=offline_env(), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, "echo server", 30, poll_s=0.3)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """A 0.6 s tone between silences: what the echo server plays back."""
    path = tmp_path / "tone.wav"
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
