"""Runs scripted calls: the per-call script, one process's share of a run, and the
worker entry point (`python -m rtc_agent.loadtest.runner` reads a spec as JSON on
stdin and writes JSON lines: progress events, then one `done` per call).

Every loop here is bounded: calls start no later than the ramp, no turn starts
after the run's duration, and each call is cut at a hard deadline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from rtc_agent.datachannel import CallState
from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.loadtest.events import STATE, TRANSCRIPT_DONE
from rtc_agent.loadtest.metrics import CallResult, Failure, TurnSample, percentile
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.loadtest.received import FRAME_S

Emit = Callable[[dict[str, Any]], None]

# A reply is over once the received audio has been silent this long (piper's
# pauses between sentences are shorter).
REPLY_END_SILENCE_S = 1.0
BARGE_STOP_SILENCE_S = 0.3
PAUSE_BETWEEN_TURNS_S = 0.3
# The agent's states that split a turn's latency, and the TurnSample field each sets.
STATE_FIELDS: dict[str, str] = {
    CallState.THINKING: "thinking_ms",
    CallState.SPEAKING: "speaking_ms",
}


@dataclass
class RunSpec:
    url: str
    prompts: list[str]
    calls: int  # total calls in the run (all processes)
    indices: list[int]  # the calls this process places
    t0: float  # run start, time.monotonic() (system-wide clock)
    duration_s: float
    ramp_s: float = 0.0
    token: str | None = None
    barge_in_ms: float | None = None
    turn_timeout_s: float = 20.0
    connect_timeout_s: float = 15.0
    proc: int = 0
    keep_audio_s: float = 0.0  # received samples are not needed: levels suffice
    pause_s: float = PAUSE_BETWEEN_TURNS_S  # silence between a reply's end and the next turn
    jitter_prefetch: int | None = None  # callers' jitter buffer depth (None: aiortc's 4)

    def start_at(self, index: int) -> float:
        """Calls start evenly over the ramp."""
        if self.calls <= 1 or self.ramp_s <= 0:
            return self.t0
        return self.t0 + self.ramp_s * index / self.calls

    @property
    def hard_end(self) -> float:
        """No call runs past this, whatever the server does."""
        extra = self.turn_timeout_s * (4 if self.barge_in_ms else 2) + self.connect_timeout_s
        return self.t0 + max(self.duration_s, self.ramp_s) + extra + 10

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass
class _Ctx:
    spec: RunSpec
    prompts: list[Prompt]
    emit: Emit
    session: aiohttp.ClientSession
    results: dict[int, CallResult] = field(default_factory=dict)
    barge_prompts: dict[str, Prompt] = field(default_factory=dict)


async def _turn(
    ctx: _Ctx, caller: ScriptedCaller, res: CallResult, k: int, prompt: Prompt
) -> TurnSample:
    t0 = ctx.spec.t0
    n_events = len(caller.events)
    start = time.monotonic()
    ts = TurnSample(turn=k, prompt=prompt.name, start_s=start - t0)
    res.turns.append(ts)  # kept even when the server ends the call mid-turn
    try:
        await _measure_turn(ctx, caller, res, ts, prompt, n_events)
    except CallFailed as exc:
        ts.error = exc.kind
        raise
    return ts


async def _measure_turn(
    ctx: _Ctx, caller: ScriptedCaller, res: CallResult, ts: TurnSample, prompt: Prompt,
    n_events: int,
) -> None:
    spec, t0, k = ctx.spec, ctx.spec.t0, ts.turn
    t_end = await caller.speak(prompt)
    ts.speech_end_s = t_end - t0
    heard = await caller.wait_audible(t_end, timeout=spec.turn_timeout_s)
    if heard is None:
        ts.error = "no_reply"
        res.failures.append(
            Failure("no_reply", f"turn {k}: nothing audible {spec.turn_timeout_s:g} s after "
                    "the prompt", time.monotonic() - t0)
        )
        ctx.emit({"ev": "failure", "index": res.index, "kind": "no_reply"})
        return
    ts.heard_s = heard - t0
    ts.latency_ms = (heard - t_end) * 1000
    ctx.emit({"ev": "turn", "index": res.index, "latency_ms": ts.latency_ms, "t": ts.heard_s})

    last_audio = heard
    if spec.barge_in_ms is not None:
        last_audio = await _barge_in(ctx, caller, res, ts, heard, prompt)

    # Let the reply (to the prompt, or to the barge-in) play out before the next turn.
    await caller.wait_silent(last_audio, timeout=spec.turn_timeout_s,
                             min_silence_s=REPLY_END_SILENCE_S)
    for event in caller.events[n_events:]:
        if event.get("type") == STATE and event["_t"] > t_end:
            state = event.get("state")
            key = STATE_FIELDS.get(state) if isinstance(state, str) else None
            if key and getattr(ts, key) is None:
                setattr(ts, key, (event["_t"] - t_end) * 1000)
        if event.get("type") != TRANSCRIPT_DONE:
            continue
        if event.get("role") == "user" and ts.user_text is None:
            ts.user_text = event.get("text")
        elif event.get("role") == "assistant" and ts.assistant_text is None:
            ts.assistant_text = event.get("text")
            ts.interrupted = bool(event.get("interrupted"))


async def _barge_in(
    ctx: _Ctx, caller: ScriptedCaller, res: CallResult, ts: TurnSample, heard: float,
    prompt: Prompt,
) -> float:
    """Talk over the reply `barge_in_ms` after it became audible; time how long the
    reply takes to go silent. Returns when the caller last heard audio start."""
    spec, t0 = ctx.spec, ctx.spec.t0
    assert spec.barge_in_ms is not None
    await asyncio.sleep(max(0.0, heard + spec.barge_in_ms / 1000 - time.monotonic()))
    before = caller.track.speech_started_t
    done = caller.start_speaking(ctx.barge_prompts[prompt.name])
    for _ in range(200):  # the first frame goes out within 20 ms; give up after ~1 s
        if caller.track.speech_started_t != before:
            break
        await asyncio.sleep(0.005)
    tb = caller.track.speech_started_t
    if tb is None or tb == before:
        await done
        return heard
    ts.barge_in_at_s = tb - t0
    ended = caller.silent_from(heard, min_silence_s=BARGE_STOP_SILENCE_S)
    if (ended is not None and ended <= tb) or not _audible_within(caller, tb - 0.1, tb):
        # The reply was over (or in a pause) when the caller talked: no stop to time.
        await done
        return tb
    stop = await caller.wait_silent(tb, timeout=spec.turn_timeout_s,
                                    min_silence_s=BARGE_STOP_SILENCE_S)
    if stop is None:
        ts.error = "barge_in_ignored"
        res.failures.append(Failure("barge_in_ignored", f"turn {ts.turn}: reply still audible "
                                    f"{spec.turn_timeout_s:g} s after talking over it",
                                    time.monotonic() - t0))
        ctx.emit({"ev": "failure", "index": res.index, "kind": "barge_in_ignored"})
    else:
        ts.barge_in_stop_ms = (stop - tb) * 1000
        ctx.emit({"ev": "barge_in", "index": res.index, "stop_ms": ts.barge_in_stop_ms})
    end = await done
    # The agent answers what was said over it: wait for that reply to start.
    again = await caller.wait_audible(end, timeout=spec.turn_timeout_s)
    return again if again is not None else end


def _audible_within(caller: ScriptedCaller, start: float, end: float) -> bool:
    """Whether a received frame in (start, end] was audible."""
    audio = caller.audio
    for t, level in zip(reversed(audio.times), reversed(audio.levels), strict=True):
        if t <= start:
            return False
        if t <= end and level > caller.threshold_dbfs:
            return True
    return False


async def _call(ctx: _Ctx, index: int) -> CallResult:
    spec, t0 = ctx.spec, ctx.spec.t0
    res = CallResult(index=index, proc=spec.proc)
    ctx.results[index] = res
    await asyncio.sleep(max(0.0, spec.start_at(index) - time.monotonic()))
    res.start_s = time.monotonic() - t0
    ctx.emit({"ev": "start", "index": index})
    caller = ScriptedCaller(spec.url, token=spec.token, session=ctx.session,
                            keep_audio_s=spec.keep_audio_s,
                            jitter_prefetch=spec.jitter_prefetch)
    try:
        async with asyncio.timeout(max(0.0, spec.hard_end - time.monotonic())):
            try:
                await caller.connect(timeout=spec.connect_timeout_s)
            except CallFailed as exc:
                res.failures.append(Failure(exc.kind, exc.detail, time.monotonic() - t0,
                                            by_server=exc.by_server))
                ctx.emit({"ev": "failure", "index": index, "kind": exc.kind})
                return res
            res.call_id = caller.call_id
            res.backend = caller.backend
            res.connect_ms = caller.connect_ms
            res.ready_ms = caller.ready_ms
            res.connected_s = time.monotonic() - t0
            ctx.emit({"ev": "connected", "index": index, "connect_ms": caller.connect_ms})
            k = 0
            while True:  # at least one turn per call, none started after the duration
                prompt = ctx.prompts[(index + k) % len(ctx.prompts)]
                await _turn(ctx, caller, res, k, prompt)
                k += 1
                if time.monotonic() + spec.pause_s >= t0 + spec.duration_s:
                    break
                await asyncio.sleep(spec.pause_s)
            if caller.ended is not None:  # ended by the server after its last turn
                raise caller.ended_failure()
            await _collect(caller, res)
    except CallFailed as exc:  # the server ended the call and said why
        res.failures.append(Failure(exc.kind, exc.detail, time.monotonic() - t0,
                                    by_server=exc.by_server))
        ctx.emit({"ev": "failure", "index": index, "kind": exc.kind})
    except TimeoutError:
        res.failures.append(Failure("timeout", "call overran the run's hard deadline",
                                    time.monotonic() - t0))
        ctx.emit({"ev": "failure", "index": index, "kind": "timeout"})
    except Exception as exc:  # a broken call is a measured failure, not a crashed run
        res.failures.append(Failure("error", f"{type(exc).__name__}: {exc}",
                                    time.monotonic() - t0))
        ctx.emit({"ev": "failure", "index": index, "kind": "error"})
    finally:
        if res.connected_s is not None:
            res.end_s = time.monotonic() - t0
        await caller.hangup()
    return res


async def _collect(caller: ScriptedCaller, res: CallResult) -> None:
    """Per-call transcripts, RTCP stats and receive lag, read just before hang-up."""
    for event in caller.events:
        if event.get("type") == TRANSCRIPT_DONE and event.get("role") in res.transcripts:
            res.transcripts[event["role"]] += 1
    res.stats = await caller.stats()
    lags = caller.audio.lags_ms(skip_s=1.0)  # not the first second: the jitter buffer fills
    res.rx_lag_ms_p95 = percentile(lags, 95)
    res.rx_lag_ms_max = max(lags) if lags else None
    res.frames_received = len(caller.audio.times)
    rate = caller.audio.media_rate()
    if rate is not None:  # in frames of 20 ms a second, DTX gaps counted as what they stand for
        res.rx_fps = rate / FRAME_S


async def run_calls(spec: RunSpec, emit: Emit) -> list[CallResult]:
    """Place this process's calls; emits progress events and one `done` per call."""
    prompts = [Prompt.from_wav(p) for p in spec.prompts]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        ctx = _Ctx(spec, prompts, emit, session)
        ctx.barge_prompts = {p.name: p.without_lead() for p in prompts}

        async def one(index: int) -> CallResult:
            res = await _call(ctx, index)
            emit({"ev": "done", "index": index, "result": res.to_dict()})
            return res

        return list(await asyncio.gather(*(one(i) for i in spec.indices)))


def _worker_main() -> int:
    spec = RunSpec.from_json(sys.stdin.read())
    out = sys.stdout

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    asyncio.run(run_calls(spec, emit))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
