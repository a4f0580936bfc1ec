"""`rtc-agent loadtest` against a server whose Realtime service refuses its key.

The offline backend stands in for the cloud service and requires `right`; the
server is configured with `wrong`. Every call then ends from the server's side
with `call.ended {reason: upstream_failed}`, and the load tester must count it
so, with the service's message shown once, not as a connect `timeout`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import loopback_port

from .conftest import ROOT, offline_env, stop, wait_healthy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rtc-agent serve` pointed at a Realtime service that wants another key."""
    logs = tmp_path_factory.mktemp("refused")
    backend_log = logs / "backend.log"
    with backend_log.open("wb") as out:
        backend = subprocess.Popen(
            [sys.executable, "-m", "rtc_agent.cli", "realtime-server", "--host", "127.0.0.1",
             "--port", "0", "--api-key", "right"],
            stdout=out, stderr=subprocess.STDOUT, env=offline_env(), cwd=ROOT)
    serve: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        realtime_url = ""
        while not realtime_url:
            for line in backend_log.read_text().splitlines():
                if line.startswith("REALTIME_URL "):
                    realtime_url = line.split()[1]
            if backend.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"offline backend did not start:\n{backend_log.read_text()}")
            time.sleep(0.2)

        port = loopback_port()
        env = offline_env() | {"REALTIME_API_KEY": "wrong"}
        serve_log = logs / "serve.log"
        with serve_log.open("wb") as out:
            serve = subprocess.Popen(
                [sys.executable, "-m", "rtc_agent.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(port), "--ice-address", "127.0.0.1", "--workers", "1",
                 "--realtime-url", realtime_url],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        # up: /healthz answers (its verdict on the upstream is not ours)
        wait_healthy(url, serve, serve_log, "rtc-agent serve", 90, any_answer=True)
        yield url
    finally:
        if serve is not None:
            stop(serve)
        stop(backend)


def test_refused_key_is_counted_as_upstream_failed(refusing_server: str,
                                                   tmp_path: Path) -> None:
    from tests.speech import speak_wav

    prompt = speak_wav("what is nine plus four")
    out = tmp_path / "run.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rtc_agent.cli", "loadtest", "--url", refusing_server,
         "--calls", "2", "--duration", "3", "--prompts", str(prompt), "--json", str(out),
         "--connect-timeout", "15"],
        capture_output=True, text=True, timeout=150, cwd=ROOT, env=offline_env())
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())["summary"]
    calls = json.loads(out.read_text())["calls"]
    assert summary["failures"] == {"upstream_failed": 2}, summary["failures"]
    first = summary["failure_details"]["upstream_failed"]
    assert first["by_server"] is True and "401" in first["detail"], first
    for call in calls:
        (failure,) = call["failures"]
        assert failure["kind"] == "upstream_failed" and failure["by_server"] is True
        # told within 5 s of placing the call, not after the 15 s connect timeout
        assert failure["at_s"] - call["start_s"] < 5, call
    assert elapsed < 60
    assert "failures: upstream_failed x2" in proc.stdout
    assert proc.stdout.count(first["detail"]) == 1  # the service's message, once
    assert "timeout" not in proc.stdout
