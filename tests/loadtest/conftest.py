"""Servers the load tester's end-to-end tests call: the bench's bare aiortc echo server."""

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
