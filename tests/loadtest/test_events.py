"""The caller's event log without a peer: the rules scripts rely on when they wait."""

from __future__ import annotations

import asyncio
import json

import pytest

from rtc_agent.loadtest.events import (
    INVALID,
    MAX_END_MESSAGE_CHARS,
    SERVER_ENDED,
    SESSION_READY,
    CallEnded,
    EventLog,
    call_ended,
)


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


def test_call_ended_is_classified_by_its_reason() -> None:
    refused = {"type": "call.ended", "reason": "upstream_failed",
               "message": "The agent's service refused the connection: HTTP 401\n invalid key"}
    assert call_ended(refused) == CallEnded(
        "upstream_failed", "The agent's service refused the connection: HTTP 401 invalid key")
    for reason in ("hangup", "server_shutdown", "max_duration", "connect_timeout", "error",
                   "idle"):
        assert call_ended({"type": "call.ended", "reason": reason}) == CallEnded(reason, "")
    # other messages are not endings, even an error that names an end reason
    assert call_ended({"type": "error", "code": "upstream_failed", "message": "x"}) is None
    assert call_ended({"type": SESSION_READY, "reason": "hangup"}) is None


def test_an_odd_reason_or_message_is_still_counted_safely() -> None:
    # a reason becomes a failure kind and a JSON key: anything but a short
    # snake_case word is counted as server_ended rather than trusted
    for reason in (None, "", 42, "Upstream Failed", "x" * 41, "ok\nno", ["hangup"]):
        ended = call_ended({"type": "call.ended", "reason": reason, "message": "why"})
        assert ended == CallEnded(SERVER_ENDED, "why"), reason
    long = call_ended({"type": "call.ended", "reason": "error", "message": "a" * 5000})
    assert long is not None and len(long.message) == MAX_END_MESSAGE_CHARS
    assert call_ended({"type": "call.ended", "reason": "error", "message": {"no": 1}}) == \
        CallEnded("error", "")


async def test_a_closed_log_fails_later_waits_at_once_with_the_first_reason() -> None:
    log = EventLog()
    log.on_message(json.dumps({"type": "pong", "t": 1}))
    log.close(lambda: RuntimeError("ended by the server"))
    log.close(lambda: KeyError("hung up"))  # a later close does not replace the reason
    with pytest.raises(RuntimeError, match="ended by the server"):
        await log.wait(lambda e: e["type"] == "transcript.done", timeout=5)
    # looking back still finds what had arrived
    assert (await log.wait(lambda e: e["type"] == "pong", timeout=5, start=0))["t"] == 1
