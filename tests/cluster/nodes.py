"""`rtc-agent serve` nodes as real processes, for the scale-out tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.ports import loopback_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cluster-test-secret"


def offline_env() -> dict[str, str]:
    """No cloud key or stray setting may leak in: each node starts its offline backend."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("RTC_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 20.0) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request; the status, the JSON body ({} if none) and the headers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, dict(error.headers)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"raw": raw[:200].decode(errors="replace")}
    return status, parsed, got


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    """Stop a `serve` for good: a second SIGTERM ends it at once (no drain), and it is
    killed if it still hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Node:
    """One node (`serve --workers N`) on a free loopback port, logging to a file."""

    def __init__(self, tmp: Path, name: str, *, workers: int = 2, max_calls: int = 20,
                 args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.workers = workers
        self.port = loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"node-{name}.log"
        self.cmd = [sys.executable, "-m", "rtc_agent.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--ice-address", "127.0.0.1",
                    "--workers", str(workers), "--node-id", name,
                    "--max-calls", str(max_calls), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> Node:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=offline_env(), cwd=ROOT)
        self.wait_workers(self.workers, timeout_s)
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body, _ = http("GET", f"{self.url}/healthz", timeout=5)
        return status, body

    def wait_workers(self, count: int, timeout_s: float = 30.0,
                     exclude_pids: set[int] | None = None) -> dict[str, Any]:
        """Until /healthz lists `count` workers (none of `exclude_pids`); the health body."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"node {self.name} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                status, body = self.health()
            except OSError:
                status = 0
            workers = body.get("workers", [])
            if (status == 200 and len(workers) == count
                    and not {w["pid"] for w in workers} & (exclude_pids or set())):
                return body
            time.sleep(0.2)
        pytest.fail(f"node {self.name}: not {count} workers in {timeout_s} s ({body}):\n"
                    f"{self.tail()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None:
            stop_node(self.proc)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
