"""The scripted caller against a tiny in-test echo peer, and its pure helpers."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.loadtest.events import SESSION_READY
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.loadtest.received import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ReceivedAudio,
    first_audible_after,
    frame_dbfs,
    silent_from,
)

from .echo_peer import run_echo_peer


def tone(seconds: float, lead: float = 0.2, trail: float = 0.4, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    burst = (amp * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return np.concatenate([
        np.zeros(int(lead * SAMPLE_RATE), np.int16),
        burst,
        np.zeros(int(trail * SAMPLE_RATE), np.int16),
    ])


def test_prompt_frames_and_speech_end() -> None:
    p = Prompt.from_pcm(tone(0.5, lead=0.2, trail=0.4))
    # 1.1 s of audio = 55 frames, plus 2 frames of encoder tail
    assert p.n_frames == 57
    assert len(p.pcm) == 57 * FRAME_SAMPLES
    assert p.speech_frames == 35  # the tone ends at 0.7 s = frame 35
    assert all(isinstance(b, bytes) and 0 < len(b) < 400 for b in p.packets)


def test_prompt_from_wav_resamples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import wave

    path = tmp_path / "p.wav"
    pcm16k = (8000 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm16k.tobytes())
    p = Prompt.from_wav(path)
    assert abs(p.duration_s - 1.0) < 0.1
    assert p.name == "p.wav"


def test_frame_dbfs() -> None:
    assert frame_dbfs(np.zeros(960, np.int16)) == -120.0
    full = np.full(960, 32767, np.int16)
    assert abs(frame_dbfs(full)) < 0.01
    assert abs(frame_dbfs(full // 10) + 20) < 0.1


def test_first_audible_and_silent_from() -> None:
    times = [i * 0.02 for i in range(100)]
    levels = [-120.0] * 100
    for i in range(20, 50):
        levels[i] = -20.0
    assert first_audible_after(times, levels, 0.0, -50) == pytest.approx(0.4)
    assert first_audible_after(times, levels, 1.0, -50) is None
    # after 0.5 s the audio is loud until frame 50 (1.0 s) and then silent
    assert silent_from(times, levels, 0.5, -50, 0.3) == pytest.approx(1.0)
    # a short gap inside speech is not "stopped"
    levels[30] = -120.0
    assert silent_from(times, levels, 0.5, -50, 0.3) == pytest.approx(1.0)
    # not enough silence received yet
    assert silent_from(times[:55], levels[:55], 0.5, -50, 0.3) is None


def test_received_audio_ring_is_bounded() -> None:
    ra = ReceivedAudio(keep_s=0.1)  # 4800 samples
    for i in range(10):
        ra.add(i * 0.02, np.full(960, i, np.int16))
    s = ra.samples()
    assert len(s) == 4800
    assert list(s[::960]) == [5, 6, 7, 8, 9]
    assert len(ra.times) == 10


def test_stream_measures_count_dtx_gaps_as_time_and_lag_only_talk() -> None:
    """A server in DTX sends one packet every 400 ms while quiet: the media rate counts
    the gap as the time it stands for, and the lag is the talking frames' alone."""
    ra = ReceivedAudio(keep_s=0.1)
    loud = (np.ones(960) * 3000).astype(np.int16)
    quiet = np.zeros(960, np.int16)
    t = 100.0
    for i in range(100):  # 2 s of talk, on time
        ra.add(t + i * 0.02, loud, i * 0.02)
    for k in range(1, 6):  # then 2 s of DTX: one quiet frame every 400 ms, held 1.6 s late
        ra.add(t + 2.0 + k * 0.4 + 1.6, quiet, 2.0 + k * 0.4)
    assert ra.media_rate() == pytest.approx(1.0, abs=0.02)
    assert ra.lags_ms() and max(ra.lags_ms()) < 1.0  # the late quiet frames are not lag
    assert ra.lags_ms(skip_s=1.0) == ra.lags_ms()[50:]  # the first second left out
    behind = ReceivedAudio(keep_s=0.1)
    for i in range(100):  # a server that sends 20 ms of media every 25 ms
        behind.add(t + i * 0.025, loud, i * 0.02)
    assert behind.media_rate() == pytest.approx(0.8, abs=0.01)


async def test_caller_against_echo_peer() -> None:
    async with run_echo_peer() as (url, peer):
        caller = ScriptedCaller(url)
        await caller.connect(timeout=10)
        assert caller.call_id in peer.pcs
        assert 0 < caller.connect_ms <= caller.ready_ms < 10_000
        assert caller.events[0]["type"] == SESSION_READY
        assert "_t" in caller.events[0]

        # ping/pong over the data channel, with an already-received event found by index
        n = len(caller.events)
        caller.send({"type": "ping", "t": 42})
        pong = await caller.wait_event(lambda e: e["type"] == "pong", timeout=5, start=n)
        assert pong["t"] == 42

        prompt = Prompt.from_pcm(tone(0.6))
        t_start = time.monotonic()
        t_end = await caller.speak(prompt)
        # 0.2 s lead + 0.6 s tone: the speech ends ~0.8 s after it started
        assert 0.7 < t_end - t_start < 1.2
        heard = await caller.wait_audible(t_start, timeout=5)
        assert heard is not None
        # the echo comes back at least 0.2 s (the lead silence) after we started
        assert 0.15 < heard - t_start < 0.2 + 0.5
        stopped = await caller.wait_silent(t_end, timeout=5)
        assert stopped is not None and 0 <= stopped - t_end < 0.5

        audio = caller.received_audio()
        assert audio.dtype == np.int16 and len(audio) > SAMPLE_RATE // 2
        assert np.abs(audio).max() > 3000  # the tone came back at a similar level

        await asyncio.sleep(1.5)  # let an RTCP round trip happen
        st = await caller.stats()
        assert st["in_packets_received"] > 50
        assert st["in_packets_lost"] == 0
        assert st["out_packets_sent"] > 50

        # a wait still pending at hang-up ends with CallFailed("closed")
        pending = asyncio.ensure_future(caller.wait_event(lambda e: False, timeout=30))
        await asyncio.sleep(0)
        call_id = caller.call_id
        await caller.hangup()
        with pytest.raises(CallFailed) as closed:
            await pending
        assert closed.value.kind == "closed"
        await caller.hangup()  # idempotent
        assert peer.deleted == [call_id]
        assert caller.pc is not None and caller.pc.connectionState == "closed"


async def test_raw_frames_fallback_is_heard() -> None:
    async with run_echo_peer() as (url, _):
        async with ScriptedCaller(url) as caller:
            await caller.connect(timeout=10)
            prompt = Prompt.from_pcm(tone(0.4), encoded=False)
            t0 = time.monotonic()
            await caller.speak(prompt)
            assert await caller.wait_audible(t0, timeout=5) is not None


async def test_connect_failures() -> None:
    async with run_echo_peer(max_calls=0) as (url, _):
        caller = ScriptedCaller(url)
        with pytest.raises(CallFailed) as info:
            await caller.connect(timeout=5)
        assert info.value.kind == "at_capacity"
        assert "Retry-After 1" in info.value.detail
        await caller.hangup()  # harmless after a failed connect

    caller = ScriptedCaller("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(CallFailed) as info:
        await caller.connect(timeout=5)
    assert info.value.kind == "http_error"


async def test_jitter_prefetch_shortens_the_echo() -> None:
    """aiortc's audio jitter buffer holds 4 frames; prefetch 0 hears the echo ~60 ms sooner."""
    delays = {}
    async with run_echo_peer() as (url, _):
        for prefetch in (None, 0):
            async with ScriptedCaller(url, jitter_prefetch=prefetch) as caller:
                await caller.connect(timeout=10)
                prompt = Prompt.from_pcm(tone(0.3))
                t0 = time.monotonic()
                await caller.speak(prompt)
                heard = await caller.wait_audible(t0, timeout=5)
                assert heard is not None
                # the tone starts after 0.2 s of lead silence
                delays[prefetch] = heard - t0 - 0.2
    assert delays[0] < delays[None] - 0.03, delays
