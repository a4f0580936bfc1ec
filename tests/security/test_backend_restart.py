"""A crashed offline backend is restarted, and a call in progress carries on.

The real stack: `serve` in this process with its offline child; the child is
killed with SIGKILL mid-call. The call's Realtime client reconnects to the
restarted child (same socket, held by the parent) and replays the conversation.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest

from rtc_agent.loadtest.caller import ScriptedCaller
from rtc_agent.serve import running
from tests.agent.test_call import is_done, server_config, url

pytestmark = pytest.mark.slow


def children(parent: int, module: bytes) -> list[int]:
    """parent's child processes running `python -m module`."""
    found = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if module in cmdline:
                found.append(int(pid))
    return found


def running_pids(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def offline_children() -> list[int]:
    return children(os.getpid(), b"rtc_agent.offline.command")


async def test_a_call_survives_its_offline_backend_being_killed() -> None:
    async with running(server_config()) as agent:
        async with ScriptedCaller(url(agent)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "my name is Ada"})
            await caller.wait_event(is_done("assistant"), 30, start=n)
            (child,) = offline_children()
            n = len(caller.events)
            os.kill(child, signal.SIGKILL)
            await caller.wait_event(lambda e: e.get("code") == "upstream_reconnecting", 10,
                                    start=n)
            lost = await caller.wait_event(lambda e: e.get("state") == "reconnecting", 10,
                                           start=n)
            await caller.wait_event(lambda e: e.get("state") == "listening", 20,
                                    after=lost["_t"])
            assert offline_children() not in ([], [child])  # a new child took over
            n = len(caller.events)
            caller.send({"type": "text", "text": "what is two plus two"})
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "four" in reply["text"]
            assert caller.call_id in agent.calls  # the same call, never ended
        async with aiohttp.ClientSession() as http, http.get(f"{url(agent)}/healthz") as r:
            health = await r.json()
        assert r.status == 200 and health["backend_state"] == "up"
        assert health["backend_restarts"] == 1


async def test_a_call_survives_the_backends_recognition_processes_being_killed() -> None:
    """The backend decodes speech in worker processes of its own; killed, they are
    started again, the caller's next spoken turn is heard, and /healthz counts it."""
    import asyncio

    from rtc_agent.loadtest.microphone import Prompt
    from tests.speech import speak_wav

    async with running(server_config()) as agent:
        (backend,) = offline_children()
        for _ in range(600):  # the backend starts them after it listens
            workers = children(backend, b"rtc_agent.offline.recognizer_processes")
            if len(workers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        async with ScriptedCaller(url(agent)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            await caller.speak(Prompt.from_wav(speak_wav("what is twelve times seven")))
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "eighty" in reply["text"]
        now = children(backend, b"rtc_agent.offline.recognizer_processes")
        assert now and not set(now) & set(workers)
        async with aiohttp.ClientSession() as http, http.get(f"{url(agent)}/healthz") as r:
            health = await r.json()
        assert r.status == 200 and health["recognizer_restarts"] == 2
        assert health["backend_restarts"] == 0


async def test_a_supervised_backend_ignores_the_groups_signals_and_stops_when_told() -> None:
    """Ctrl-C in a terminal, or systemd stopping the unit, signals every process of the
    group: the backend must stay for the calls its parent drains, and stop when the
    parent closes its pipe, cleanly and at once."""
    import asyncio
    import time

    from rtc_agent.offline.process import OfflineProcess

    child = OfflineProcess([])
    await child.start()
    pid = child.pid
    assert pid is not None
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(pid, sig)
        await asyncio.sleep(1.5)
        assert child.state == "up" and child.restarts == 0 and child.pid == pid
        os.kill(pid, 0)  # still there
        workers = children(pid, b"rtc_agent.offline.recognizer_processes")
    finally:
        proc = child._proc
        started = time.monotonic()
        await child.stop()
    assert time.monotonic() - started < 4.5  # EOF stopped it; no 5 s wait and SIGKILL
    assert proc is not None and proc.returncode == 0  # a clean exit, not a kill
    assert workers and not running_pids(workers)  # its recognition workers went with it
