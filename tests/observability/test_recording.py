"""A recorded call (--record-dir): both voices on their own channel, heard by
pocketsphinx, and the agent's channel cut where a barge-in cut it."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import av
import numpy as np
import pytest

from rtc_agent.loadtest.caller import ScriptedCaller
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.serve import running
from tests.agent.test_call import is_done, server_config, url
from tests.observability.test_metrics import barge_in
from tests.speech import hears, speak_wav

pytestmark = pytest.mark.slow

RATE = 48000  # what an Ogg Opus decoder gives


def decode(path: Path) -> np.ndarray:
    """(2, samples) int16: the caller's channel, then the agent's."""
    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.channels == 2
        for frame in container.decode(stream):
            assert frame.sample_rate == RATE
            data = frame.to_ndarray()
            if frame.format.is_planar:
                chunks.append(data)
            else:
                chunks.append(data.reshape(-1, 2).T)
    samples = np.concatenate(chunks, axis=1)
    if samples.dtype != np.int16:
        samples = np.clip(samples * 32767, -32768, 32767).astype(np.int16)
    return samples


def dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    return 20 * np.log10(max(rms, 1e-9) / 32768)


async def test_a_recorded_call_holds_both_voices_as_the_caller_heard_them(tmp_path: Path
                                                                         ) -> None:
    records = tmp_path / "recordings"
    question = Prompt.from_wav(speak_wav("what is twelve times seven"))
    story = Prompt.from_wav(speak_wav("tell me a story"))
    interruption = Prompt.from_wav(speak_wav("stop please"))
    async with running(server_config(record_dir=records)) as agent:
        async with ScriptedCaller(url(agent)) as caller:
            await caller.connect(timeout=20)
            ready = next(e for e in caller.events if e["type"] == "session.ready")
            assert ready["recorded"] is True
            call_id = caller.call_id
            recorder = agent.calls[call_id].recorder
            assert recorder is not None
            n = len(caller.events)
            await caller.speak(question)
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "eighty" in reply["text"]
            await asyncio.sleep(1.0)
            await barge_in(caller, story, interruption)
            await asyncio.sleep(1.0)
        assert await asyncio.to_thread(recorder.wait_closed, 10)
    audio, meta = records / f"{call_id}.ogg", records / f"{call_id}.json"
    for path in (audio, meta):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # personal data
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    left, right = decode(audio)
    notes = json.loads(meta.read_text())
    entries = notes["entries"]
    asked = next(e for e in entries if e.get("type") == "transcript.done"
                 and e.get("role") == "assistant" and not e.get("interrupted"))
    cut = next(e for e in entries if e.get("type") == "transcript.done"
               and e.get("role") == "assistant" and e.get("interrupted"))
    ended = next(e for e in entries if e.get("type") == "call.ended")
    assert ended["end_reason"] == "hangup" and cut["rec_ms"] > asked["rec_ms"]

    # The question is on the caller's side, the answer on the agent's, each alone.
    first = slice(0, int(asked["rec_ms"] / 1000 * RATE))
    assert hears(left[first], RATE, "twelve")
    assert hears(right[first], RATE, "eighty")
    assert not hears(left[first], RATE, "eighty")  # the answer did not leak to the caller's side

    # The barge-in: the story plays on the agent's side until the cut, then silence.
    at = int(cut["rec_ms"] / 1000 * RATE)
    before = right[at - int(0.8 * RATE): at - int(0.1 * RATE)]
    after = right[at + int(0.1 * RATE): at + int(0.6 * RATE)]
    assert dbfs(before) > -45, dbfs(before)
    assert dbfs(after) < -60, dbfs(after)
    # and the caller's interruption is on the left around it
    assert dbfs(left[at - int(0.5 * RATE): at + int(0.5 * RATE)]) > -45
