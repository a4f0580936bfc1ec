"""The offline backend's child process: restarted when it dies, gone when its parent dies.

Real processes on loopback: `OfflineProcess` starts `rtc-agent realtime-server`
children (espeak, the quicker voice to load), and the tests kill them with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from rtc_agent.offline.process import OfflineProcess

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--tts", "espeak"]


async def session_created(url: str) -> str:
    async with websockets.connect(url + "?model=gpt-realtime", open_timeout=15) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 15))
        return str(first["type"])


async def until(predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def test_killed_child_is_restarted_on_the_same_url() -> None:
    backend = OfflineProcess(ARGS, start_timeout_s=30)
    assert backend.state == "down" and backend.restarts == 0 and backend.last_exit is None
    url = await backend.start()
    try:
        assert backend.state == "up" and backend.alive
        assert await session_created(url) == "session.created"
        first = backend.pid
        assert first is not None
        t0 = time.monotonic()
        os.kill(first, signal.SIGKILL)
        await until(lambda: backend.state == "restarting", 5)
        await until(lambda: backend.state == "up", 10)
        assert backend.pid != first and backend.alive
        assert backend.url == url
        assert await session_created(url) == "session.created"  # the same URL serves again
        assert time.monotonic() - t0 < 5  # inside the callers' reconnect window
        assert backend.restarts == 1 and backend.last_exit == -signal.SIGKILL
    finally:
        await backend.stop()
    assert backend.state == "down" and not backend.alive


async def test_a_caller_reconnecting_during_the_restart_is_served() -> None:
    """The parent keeps the listening socket: a connect while no child runs waits."""
    backend = OfflineProcess(ARGS, start_timeout_s=30)
    url = await backend.start()
    try:
        pid = backend.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: backend.state == "restarting", 5)
        assert await session_created(url) == "session.created"
    finally:
        await backend.stop()


async def test_a_child_that_keeps_dying_is_given_up() -> None:
    backend = OfflineProcess(ARGS, start_timeout_s=30, backoff_s=(0.05,), max_failures=2)
    url = await backend.start()
    try:
        for expected in (1, 2):
            pid = backend.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until(lambda n=expected: backend.restarts == n and backend.state == "up", 15)
        pid = backend.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: backend.state == "down", 10)
        assert backend.restarts == 2 and not backend.alive
        with pytest.raises(OSError):  # refused at once, not left hanging in a backlog
            await session_created(url)
    finally:
        await backend.stop()


async def test_a_child_that_cannot_start_fails_start() -> None:
    backend = OfflineProcess(["--tts", "no-such-voice"], start_timeout_s=30)
    with pytest.raises(RuntimeError, match="before ready"):
        await backend.start()
    assert backend.state == "down" and not backend.alive


PARENT = """
import asyncio, sys, threading, time
from rtc_agent.offline.process import OfflineProcess

async def main():
    backend = OfflineProcess(["--tts", "espeak"], start_timeout_s=30)
    await backend.start()
    print(backend.pid, flush=True)
    await asyncio.sleep(600)

if sys.argv[1] == "thread":  # asyncio forks from a worker thread: no parent-death signal
    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    time.sleep(600)
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_child_exits_when_its_parent_is_killed(where: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, where], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert running(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 8
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child), "the backend outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and running(child):
            os.kill(child, signal.SIGKILL)
