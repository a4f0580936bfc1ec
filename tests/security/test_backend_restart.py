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


def offline_children() -> list[int]:
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"rtc_agent.offline.command" in cmdline:
                found.append(int(pid))
    return found


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
    finally:
        proc = child._proc
        started = time.monotonic()
        await child.stop()
    assert time.monotonic() - started < 4.5  # EOF stopped it; no 5 s wait and SIGKILL
    assert proc is not None and proc.returncode == 0  # a clean exit, not a kill
