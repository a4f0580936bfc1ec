"""A call the server ends (`call.ended`) is counted under the server's reason.

Before `call.ended`, a call whose Realtime service refused the key waited for
`session.ready` until the connect timeout and was counted as `timeout`. These
tests drive the scripted caller and the runner against the in-test echo peer,
which ends calls as the server does (notice, then hang-up).
"""

from __future__ import annotations

import json
import time
import wave

import numpy as np
import pytest

from rtc_agent.datachannel import call_ended
from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.loadtest.metrics import aggregate
from rtc_agent.loadtest.received import SAMPLE_RATE
from rtc_agent.loadtest.report import outcome_lines
from rtc_agent.loadtest.runner import RunSpec, run_calls

from .echo_peer import run_echo_peer

REFUSED = ("upstream_failed",
           "The agent's service refused the connection: HTTP 401 invalid_api_key")


async def test_a_notice_fails_every_wait_at_once_unless_we_hung_up() -> None:
    caller = ScriptedCaller("http://127.0.0.1:9")  # no call placed: the notice alone
    caller._on_message(json.dumps(call_ended(*REFUSED)))
    assert caller.ended is not None and caller.ended.reason == "upstream_failed"
    t0 = time.monotonic()
    with pytest.raises(CallFailed) as audible:
        await caller.wait_audible(t0, timeout=5)
    with pytest.raises(CallFailed) as silent:
        await caller.wait_silent(t0, timeout=5)
    with pytest.raises(CallFailed) as event:
        await caller.wait_event(lambda e: e["type"] == "transcript.done", timeout=5)
    for info in (audible, silent, event):
        assert (info.value.kind, info.value.detail, info.value.by_server) == (*REFUSED, True)
    assert time.monotonic() - t0 < 1  # not after the waits' timeouts
    await caller.hangup()

    # the notice of a hang-up we asked for is no failure
    ours = ScriptedCaller("http://127.0.0.1:9")
    await ours.hangup()
    ours._on_message(json.dumps(call_ended("hangup", "The caller hung up.")))
    assert ours.ended is None
    assert ours.events[-1]["type"] == "call.ended"  # still kept, like any message


async def test_a_call_refused_before_ready_fails_with_the_reason_not_a_timeout() -> None:
    async with run_echo_peer(end=REFUSED) as (url, _):
        caller = ScriptedCaller(url)
        t0 = time.monotonic()
        with pytest.raises(CallFailed) as info:
            await caller.connect(timeout=10)
        assert time.monotonic() - t0 < 5
        assert info.value.kind == "upstream_failed" and info.value.by_server
        assert "HTTP 401" in info.value.detail
        assert caller.ready_ms != caller.ready_ms  # NaN: never ready


async def test_the_runner_counts_a_server_ending_under_its_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a 3 s prompt; the peer ends the call 1 s after session.ready, mid-prompt
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    wav = tmp_path / "long.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16).tobytes())
    limit = ("max_duration", "The call reached its 1 s limit.")
    events: list[dict] = []
    async with run_echo_peer(end=limit, end_after_s=1.0) as (url, _):
        t0 = time.monotonic()
        spec = RunSpec(url=url, prompts=[str(wav)], calls=2, indices=[0, 1], t0=t0,
                       duration_s=10, turn_timeout_s=8, connect_timeout_s=8)
        results = await run_calls(spec, events.append)
    assert time.monotonic() - t0 < 8  # ended by the notice, not by a timeout
    for res in results:
        assert [(f.kind, f.detail, f.by_server) for f in res.failures] == [(*limit, True)]
        assert res.backend == "custom"  # session.ready's backend
        assert len(res.turns) == 1 and res.turns[0].error == "max_duration"
    kinds = [e["kind"] for e in events if e["ev"] == "failure"]
    assert kinds == ["max_duration", "max_duration"]
    summary = aggregate(results)
    assert summary["failures"] == {"max_duration": 2}
    assert summary["failure_details"] == {
        "max_duration": {"detail": limit[1], "by_server": True}}
    lines = outcome_lines(summary)
    assert "failures: max_duration x2" in lines
    # the server's message is shown once, not once per call
    assert sum(limit[1] in line for line in lines) == 1
    assert summary["exit_status"] == 1
