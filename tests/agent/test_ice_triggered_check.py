"""A peer's check on a pair whose own check is in flight triggers ours at once.

Two real aioice agents on 127.0.0.1. The controlling one (the caller) drops
every request that comes before it has itself sent one, as a TURN server drops
packets to a relayed address before its owner has made a permission: our first
check is lost. Its own check then arrives; with `answer_checks_at_once` we
resend ours at once and connect, without it aioice waits for its 0.5 s
retransmission. The test runs both, so it also shows the premise holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aioice
import aioice.ice
import pytest

from rtc_agent.ice import answer_checks_at_once, restrict_host_addresses

CALLER_STARTS_AFTER_S = 0.1


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    restrict_host_addresses(["127.0.0.1"])
    yield
    restrict_host_addresses(None)
    answer_checks_at_once(False)


async def connect_time() -> float:
    """How long the answering agent takes to connect when its first check is lost."""
    server = aioice.Connection(ice_controlling=False, components=1)
    caller = aioice.Connection(ice_controlling=True, components=1)
    permitted = False
    caller_request_received = caller.request_received

    def like_a_turn_relay(message, addr, protocol):  # type: ignore[no-untyped-def]
        if permitted:
            caller_request_received(message, addr, protocol)

    caller.request_received = like_a_turn_relay  # type: ignore[method-assign]
    try:
        await server.gather_candidates()
        await caller.gather_candidates()
        for a, b in ((server, caller), (caller, server)):
            for candidate in b.local_candidates:
                await a.add_remote_candidate(candidate)
            await a.add_remote_candidate(None)
            a.remote_username, a.remote_password = b.local_username, b.local_password

        async def caller_side() -> None:
            nonlocal permitted
            await asyncio.sleep(CALLER_STARTS_AFTER_S)
            permitted = True  # its first check opens the way back, as a permission would
            await caller.connect()

        t0 = time.monotonic()
        caller_task = asyncio.create_task(caller_side())
        await asyncio.wait_for(server.connect(), 5)
        took = time.monotonic() - t0
        await asyncio.wait_for(caller_task, 5)
        return took
    finally:
        await server.close()
        await caller.close()


async def test_the_callers_check_triggers_ours_at_once() -> None:
    answer_checks_at_once(False)
    waited = await connect_time()
    answer_checks_at_once(True)
    at_once = await connect_time()
    # Without: aioice's first retransmission, 0.5 s after the lost check.
    assert waited >= 0.45, waited
    # With: as soon as the caller's check arrives (it starts 0.1 s in).
    assert at_once < 0.35, at_once


async def test_aioice_still_has_what_the_resend_relies_on() -> None:
    """A guard: if aioice renames these, the resend silently does nothing."""
    import aioice.stun

    assert hasattr(aioice.ice.Connection, "check_incoming")
    assert hasattr(aioice.ice.CandidatePair.State, "IN_PROGRESS")
    transaction = aioice.stun.Transaction(
        aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST),
        ("127.0.0.1", 9), protocol=None)  # type: ignore[arg-type]
    assert hasattr(transaction, "_Transaction__request")
    assert hasattr(transaction, "_Transaction__addr")
