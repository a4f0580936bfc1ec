"""A call outlives its peer connection: a caller that vanishes (its process killed,
so no DTLS close and no hang-up) comes back with `POST /calls/{id}/resume`, and the
conversation, the Realtime session and the call's identity carry on.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.agent.test_call import is_done, server_config, url
from tests.speech import speak_wav

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def until(check: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


class Vanishing:
    """tests/agent/vanishing_caller.py in its own process, to be killed mid-call."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, within_s: float = 40) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within_s)
        assert raw, "the caller process ended early"
        return json.loads(raw)  # type: ignore[no-any-return]

    async def kill(self) -> float:
        """SIGKILL: nothing more is sent; returns when it was killed."""
        os.kill(self.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await self.proc.wait()
        return killed


@pytest.fixture
async def vanishing() -> AsyncIterator[Any]:
    started: list[Vanishing] = []

    async def start(server: SignalingServer, *args: str) -> Vanishing:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.agent.vanishing_caller", url(server), *args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        started.append(Vanishing(proc))
        return started[-1]

    yield start
    for each in started:
        if each.proc.returncode is None:
            each.proc.kill()
            await each.proc.wait()


async def test_a_vanished_caller_resumes_the_same_call(vanishing: Any) -> None:
    async with running(server_config()) as server:
        gone = await vanishing(server)
        ready = await gone.line()
        call_id, token = ready["call_id"], ready["resume_token"]
        call = server.calls[call_id]
        killed = await gone.kill()
        # no close came: the server notices the silence in seconds, and waits
        await until(lambda: call.path_lost, 5, "the lost path noticed")
        noticed = time.monotonic() - killed
        assert noticed < 3.5, noticed
        assert not call.closed and list(server.calls) == [call_id]

        # a wrong token is refused, and changes nothing
        with pytest.raises(CallFailed) as refused:
            await ScriptedCaller(url(server)).connect(timeout=15, resume=(call_id, "x" * 32))
        assert refused.value.kind == "http_4xx" and "HTTP 403" in refused.value.detail
        assert not call.closed

        async with ScriptedCaller(url(server)) as back:
            await back.connect(timeout=20, resume=(call_id, token))
            assert back.call_id == call_id and back.events[0]["type"] == "session.resumed"
            assert back.events[0]["call_id"] == call_id
            assert list(server.calls) == [call_id] and server.calls[call_id] is call
            assert call.resumes == 1 and call.client.reconnects == 0  # the same session
            await until(lambda: not call.path_lost, 5, "audio flowing again")
            # the conversation goes on: typed, then spoken
            n = len(back.events)
            back.send({"type": "text", "text": "what is six times seven"})
            reply = await back.wait_event(is_done("assistant"), 30, start=n)
            assert "forty-two" in reply["text"]
            n = len(back.events)
            await back.speak(Prompt.from_wav(speak_wav("what is nine plus four")))
            reply = await back.wait_event(is_done("assistant"), 30, start=n)
            assert "thirteen" in reply["text"]
            assert call.record.summary()["resumes"] == 1
        await until(lambda: call.closed, 5, "the hang-up")
        assert call.record.end_reason == "hangup"


async def test_past_the_window_the_call_ends_and_a_resume_is_refused(vanishing: Any) -> None:
    async with running(server_config(resume_window_s=2.0)) as server:
        gone = await vanishing(server)
        ready = await gone.line()
        call = server.calls[ready["call_id"]]
        killed = await gone.kill()
        await until(lambda: call.closed, 8, "the call ended after the window")
        assert call.record.end_reason == "caller_gone"
        assert 3.0 < time.monotonic() - killed < 6.5  # ~2 s to notice + the 2 s window
        late = ScriptedCaller(url(server))
        with pytest.raises(CallFailed) as refused:
            await late.connect(timeout=15, resume=(ready["call_id"], ready["resume_token"]))
        assert refused.value.kind == "http_4xx" and "HTTP 404 call_ended" in refused.value.detail
        assert "This call has ended" in refused.value.detail


async def test_a_resume_mid_reply_marks_it_cut_where_it_was_heard(vanishing: Any) -> None:
    async with running(server_config()) as server:
        gone = await vanishing(server, "--story")
        ready = await gone.line()
        audible_at = (await gone.line())["audible_at"]
        await asyncio.sleep(1.5)  # the story plays for a while
        killed = await gone.kill()
        heard_s = killed - audible_at
        call = server.calls[ready["call_id"]]
        await until(lambda: call.path_lost, 5, "the lost path noticed")
        async with ScriptedCaller(url(server)) as back:
            await back.connect(timeout=20, resume=(ready["call_id"], ready["resume_token"]))
            done = await back.wait_event(is_done("assistant"), 10, start=0)
            assert done["interrupted"] is True
            # cut where the caller stopped hearing, not where the server noticed
            assert abs(done["heard_ms"] / 1000 - heard_s) < 0.6, (done["heard_ms"], heard_s)
            assert done["audio_ms"] > done["heard_ms"] + 1000
            assert done["text"].startswith(done["heard_text"]) and done["heard_text"]
            assert len(done["heard_text"]) < len(done["text"])
            # the agent is listening again, on the new connection
            state = await back.wait_event(lambda e: e["type"] == "state", 5, start=0)
            assert state["state"] == "listening"


def live_peers() -> int:
    gc.collect()
    return sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())


async def test_twenty_resumes_leave_nothing_behind() -> None:
    async with running(server_config()) as server:
        first = ScriptedCaller(url(server))
        await first.connect(timeout=20)
        ready = next(e for e in first.events if e["type"] == "session.ready")
        call_id, token = first.call_id, ready["resume_token"]
        call = server.calls[call_id]
        await asyncio.sleep(1)
        peers, tasks = live_peers(), len(asyncio.all_tasks())
        fds = len(os.listdir("/proc/self/fd"))
        current, first = first, None  # type: ignore[assignment]  # only `current` holds one
        replaced = []  # the server's side of each connection the call had
        for _ in range(20):
            # the page noticed first, its old connection still open: the server gives
            # that connection up itself (no close from the caller helps it)
            replaced.append(call.pc)
            nxt = ScriptedCaller(url(server))
            await nxt.connect(timeout=20, resume=(call_id, token))
            await until(lambda: replaced[-1].connectionState == "closed", 5, "old one closed")
            await current.hangup(delete=False)
            current = nxt
        await until(lambda: not call.path_lost, 5, "audio on the last connection")
        await asyncio.sleep(1)  # replaced connections finish closing
        assert call.resumes == 20 and not call.closed
        assert all(pc.connectionState == "closed" for pc in replaced)
        replaced.clear()  # hold none of them for the counts below
        assert live_peers() <= peers
        assert len(asyncio.all_tasks()) <= tasks + 2, [t.get_name() for t in asyncio.all_tasks()]
        assert len(os.listdir("/proc/self/fd")) <= fds + 4
        n = len(current.events)
        current.send({"type": "text", "text": "what is two plus two"})
        assert "four" in (await current.wait_event(is_done("assistant"), 30, start=n))["text"]
        await current.hangup()


async def test_what_was_sent_into_the_dead_path_is_sent_again() -> None:
    """Until the server notices the loss, it sends into a path that no longer
    reaches anyone: what a page can take twice goes out again after the resume."""
    async with running(server_config()) as server:
        gone = ScriptedCaller(url(server))
        await gone.connect(timeout=20)
        ready = next(e for e in gone.events if e["type"] == "session.ready")
        call = server.calls[gone.call_id]
        gone.send({"type": "text", "text": "what is two plus two"})
        usage = await gone.wait_event(lambda e: e["type"] == "usage", 20, start=0)
        gone.track.stop()  # its audio stops, as a dead path's does; the channel "works"
        await until(lambda: call.path_lost, 5, "the lost path noticed")
        async with ScriptedCaller(url(server)) as back:
            await back.connect(timeout=20, resume=(gone.call_id, ready["resume_token"]))
            again = await back.wait_event(lambda e: e["type"] == "usage", 5, start=0)
            assert again["tokens"] == usage["tokens"]
            await back.wait_event(lambda e: e["type"] == "state", 5, start=0)
            types = [e["type"] for e in back.events]
            assert types[0] == "session.resumed" and types.index("usage") < types.index(
                "state")
        await gone.hangup(delete=False)


async def test_resumes_have_a_rate_budget_of_their_own() -> None:
    """A phone on a flaky network may resume more often than anyone places calls; the
    budget is separate from offers' and refuses with Retry-After when spent."""
    from rtc_agent.signaling.app import RESUMES_PER_OFFER

    cfg = server_config(offers_per_minute=2, limit_exempt=[])
    async with running(cfg) as server:
        assert server.resume_limiter.per_minute == 2 * RESUMES_PER_OFFER
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            token = next(e for e in caller.events if e["type"] == "session.ready")[
                "resume_token"]
            statuses = []
            for _ in range(2 * RESUMES_PER_OFFER + 1):
                probe = ScriptedCaller(url(server))
                try:
                    await probe.connect(timeout=5, resume=(caller.call_id, "x" * len(token)))
                except CallFailed as exc:
                    statuses.append(exc.detail.split()[1])
            # every resume within the budget reached the token check (403); then 429
            assert statuses == ["403"] * (2 * RESUMES_PER_OFFER) + ["429"], statuses
            assert not server.calls[caller.call_id].closed


async def test_a_connection_whose_audio_never_came_counts_as_lost() -> None:
    """A path may die before its first packet of audio: counted from when it connected."""
    async with running(server_config(resume_window_s=1.0)) as server:
        mute = ScriptedCaller(url(server))
        mute.track.stop()  # connected, but not one packet of audio will come
        try:
            await mute.connect(timeout=20)
            call = server.calls[mute.call_id]
            connected = time.monotonic()
            await until(lambda: call.closed, 8, "the silent connection given up")
            assert call.record.end_reason == "caller_gone"
            assert time.monotonic() - connected < 5.0  # ~2 s to notice + the 1 s window
        finally:
            await mute.hangup()
