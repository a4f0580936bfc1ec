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
