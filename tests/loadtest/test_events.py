"""The caller's event log without a peer: the rules scripts rely on when they wait."""

from __future__ import annotations

import asyncio
import json

import pytest

from rtc_agent.loadtest.events import INVALID, SESSION_READY, EventLog


async def test_waits_look_back_only_when_asked() -> None:
    log = EventLog()
    log.on_message(json.dumps({"type": SESSION_READY}))
    n = len(log.events)
    log.on_message(json.dumps({"type": "pong", "t": 1}))
    found = await log.wait(lambda e: e["type"] == "pong", timeout=1, start=n)
    assert found["t"] == 1 and "_t" in found
    # without start/after, an event already received does not count
    with pytest.raises(TimeoutError):
        await log.wait(lambda e: e["type"] == "pong", timeout=0.05)


async def test_bad_messages_and_broken_predicates_stay_contained() -> None:
    log = EventLog()
    broken = log.future(lambda e: e["missing"])
    good = log.future(lambda e: e["type"] == INVALID)
    log.on_message("{not json")
    log.on_message("[1, 2]")
    assert [e["type"] for e in log.events] == [INVALID, INVALID]
    with pytest.raises(KeyError):
        await broken
    assert (await good)["raw"] == "{not json"


async def test_close_fails_each_pending_wait() -> None:
    log = EventLog()
    waits = [asyncio.ensure_future(log.wait(lambda e: False, timeout=5)) for _ in range(2)]
    await asyncio.sleep(0)
    log.close(lambda: RuntimeError("hung up"))
    errors = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in errors)
    assert errors[0] is not errors[1]
