"""`rtc-agent loadtest` end to end against a live `rtc-agent serve` (offline backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import loopback_port

from .conftest import ROOT, offline_env, stop, wait_healthy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prompt_wav() -> Path:
    from tests.speech import speak_wav

    return speak_wav("what is twelve times seven")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rtc-agent serve` on a free loopback port, at most 2 calls."""
    port = loopback_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtc_agent.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--ice-address", "127.0.0.1", "--max-calls", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=offline_env(), cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, "rtc-agent serve", 90)
        yield url
    finally:
        stop(proc)


def _loadtest(url: str, prompt: Path, out: Path, calls: int, duration: float,
              extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "rtc_agent.cli", "loadtest", "--url", url,
           "--calls", str(calls), "--duration", str(duration), "--prompts", str(prompt),
           "--json", str(out / "run.json"), "--plot", str(out / "run.png"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=ROOT,
                          env=offline_env())


def test_loadtest_two_calls(server: str, prompt_wav: Path, tmp_path: Path) -> None:
    proc = _loadtest(server, prompt_wav, tmp_path, calls=2, duration=4,
                     extra=("--max-p95-ms", "10000"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "heard turn latency" in proc.stdout
    doc = json.loads((tmp_path / "run.json").read_text())
    summary = doc["summary"]
    assert summary["calls"] == 2 and summary["calls_failed"] == 0 and summary["failures"] == {}
    assert len(doc["calls"]) == 2
    for call in doc["calls"]:
        assert call["failures"] == []
        assert call["call_id"]
        assert 0 < call["connect_ms"] < 15_000
        assert call["turns"], call
        for turn in call["turns"]:
            # heard the reply after the question ended, within the turn timeout
            assert 0 < turn["latency_ms"] < 20_000
            assert turn["user_text"] and turn["assistant_text"]
        assert "eighty" in call["turns"][0]["assistant_text"].lower()
        assert call["transcripts"]["user"] >= 1 and call["transcripts"]["assistant"] >= 1
        assert call["stats"]["in_packets_received"] > 100
        assert call["stats"]["in_jitter_ms"] is not None
    assert summary["turn_latency_ms"]["n"] == sum(len(c["turns"]) for c in doc["calls"])
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"


def test_loadtest_over_capacity_fails(server: str, prompt_wav: Path, tmp_path: Path) -> None:
    # three calls at once against --max-calls 2: one is refused with 503 at_capacity
    proc = _loadtest(server, prompt_wav, tmp_path, calls=3, duration=1)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["summary"]["failures"].get("at_capacity") == 1, doc["summary"]
    assert doc["summary"]["calls_failed"] == 1
    refused = [c for c in doc["calls"] if c["failures"]]
    assert refused[0]["failures"][0]["kind"] == "at_capacity"
    assert refused[0]["connect_ms"] is None
    assert "at_capacity x1" in proc.stdout
    assert (tmp_path / "run.png").exists()


def test_loadtest_barge_in(server: str, prompt_wav: Path, tmp_path: Path) -> None:
    # talk over the reply 300 ms after it becomes audible: the reply must stop
    proc = _loadtest(server, prompt_wav, tmp_path, calls=1, duration=2,
                     extra=("--barge-in-ms", "300"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    turn = doc["calls"][0]["turns"][0]
    assert turn["barge_in_at_s"] > turn["heard_s"] + 0.25
    assert 0 < turn["barge_in_stop_ms"] < 2000
    assert turn["interrupted"] is True
    assert doc["summary"]["barge_in_stop_ms"]["n"] == 1
