"""Call recordings: real Opus encoding and decoding with PyAV, real files, real crashes."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from rtc_agent.media.recorder import FRAME_BYTES, CallRecorder

RATE = 24000
OUT_RATE = 48000  # what Ogg Opus decodes to
TICK = 960  # one 20 ms frame at 48 kHz: where tick k lands in the decoded file
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ helpers


def tone(freq: float, frames: int, first: int = 0, amp: float = 8000) -> list[bytes]:
    """`frames` 20 ms frames of a phase-continuous sine, starting at frame `first`."""
    t = (np.arange(frames * 480) + first * 480) / RATE
    pcm = (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)
    return [pcm[i * 480:(i + 1) * 480].tobytes() for i in range(frames)]


def record(directory: Path, name: str, caller: list[bytes | None], agent: list[bytes | None],
           **kwargs: Any) -> CallRecorder:
    """Tick through both lists (caller chunk first, as if it arrived just before the tick)."""
    recorder = CallRecorder(directory, name, **kwargs)
    for chunk, frame in zip(caller, agent, strict=True):
        if chunk is not None:
            recorder.caller_audio(chunk)
        recorder.agent_frame(frame)
    recorder.close()
    assert recorder.wait_closed(20)
    return recorder


def decode(path: Path) -> np.ndarray:
    """The whole file as (2, samples) at 48 kHz, scaled like int16."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
        assert frames[0].shape[0] == 2 and container.streams.audio[0].rate == OUT_RATE
    return np.concatenate(frames, axis=1) * 32768


def ogg_length(path: Path) -> int:
    """Samples a player shows (RFC 7845): the last page's granule position minus pre-skip."""
    data = path.read_bytes()
    assert data[28:36] == b"OpusHead"
    pre_skip = struct.unpack_from("<H", data, 28 + 10)[0]
    last = data.rindex(b"OggS")
    return struct.unpack_from("<q", data, last + 6)[0] - pre_skip


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * OUT_RATE / len(x))


def onsets(x: np.ndarray, threshold: float = 2000, gap: int = 4 * TICK) -> list[int]:
    """Where each loud stretch of a channel begins (stretches closer than `gap` merge)."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        return []
    starts = [int(loud[0])]
    starts += [int(b) for a, b in itertools.pairwise(loud) if b - a > gap]
    return starts


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def run_child(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# ------------------------------------------------------------------ audio


def test_caller_left_agent_right_and_the_length_is_the_ticks(tmp_path: Path) -> None:
    ticks = 150
    recorder = record(tmp_path, "tones", tone(440, ticks), tone(1000, ticks))
    assert recorder.error is None and recorder.dropped_ms == 0
    assert recorder.duration_s == pytest.approx(3.0)
    pcm = decode(recorder.audio_path)
    # Decoders and players agree on the length: exactly the ticks.
    assert pcm.shape[1] == ticks * TICK == ogg_length(recorder.audio_path)
    left, right = pcm[0, 5 * TICK:], pcm[1, 5 * TICK:]
    assert abs(peak_hz(left) - 440) < 5 and abs(peak_hz(right) - 1000) < 5

    def level_at(x: np.ndarray, hz: float) -> float:
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        k = round(hz * len(x) / OUT_RATE)
        return float(spectrum[k - 3:k + 4].max())

    # Each tone is 40 dB or more down in the other channel.
    assert level_at(right, 440) < level_at(left, 440) / 100
    assert level_at(left, 1000) < level_at(right, 1000) / 100


def test_two_voices_at_once_stay_apart_in_the_high_bands(tmp_path: Path) -> None:
    """Both talking at once (a barge-in). At 48 kbit/s libopus codes the bands above
    ~3 kHz of both channels as one signal (intensity stereo): each voice's upper
    partials turn up in the other's channel. Measured on two harmonic voices, 130
    and 210 Hz, as the other voice's partials over one's own, 3-11 kHz: ~-8 dB at
    48 kbit/s, ~-15 dB at 64 kbit/s, ~-17 dB for two separately coded channels
    (the codec's own noise floor)."""
    rng = np.random.default_rng(1)
    n = 150 * 480
    t = np.arange(n) / RATE

    def voice(f0: float) -> np.ndarray:
        s = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h ** 0.5
                for h in range(1, int(11000 / f0)))
        return np.asarray(s / np.abs(s).max() * 8000, dtype=np.int16)

    def partials(x: np.ndarray, f0: float, other: float) -> float:
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        bins = [round(f0 * h * len(x) / OUT_RATE) for h in range(1, int(11000 / f0) + 1)
                if f0 * h >= 3000 and abs(f0 * h - other * round(f0 * h / other)) > 20]
        return float(sum(spectrum[k - 3:k + 4].sum() for k in bins))

    caller, agent = voice(130), voice(210)
    frames = range(150)
    recorder = record(tmp_path, "voices", [caller[i * 480:(i + 1) * 480].tobytes() for i in frames],
                      [agent[i * 480:(i + 1) * 480].tobytes() for i in frames])
    left, right = decode(recorder.audio_path)[:, 5 * TICK:]
    crosstalk_db = 5 * np.log10(partials(left, 210, 130) / partials(left, 130, 210)
                                * partials(right, 130, 210) / partials(right, 210, 130))
    assert crosstalk_db < -11.5


def test_an_agent_frame_at_tick_k_plays_at_k_times_20_ms(tmp_path: Path) -> None:
    ticks = 200
    agent: list[bytes | None] = [None] * ticks
    caller: list[bytes | None] = [None] * ticks
    for k in (10, 73, 140):
        agent[k:k + 3] = tone(1000, 3)
    for k in (31, 111):
        caller[k:k + 3] = tone(440, 3)
    recorder = record(tmp_path, "align", caller, agent)
    pcm = decode(recorder.audio_path)
    right, left = onsets(pcm[1]), onsets(pcm[0])
    assert len(right) == 3 and len(left) == 2
    for found, k in zip(right + left, [10, 73, 140, 31, 111], strict=True):
        assert abs(found - k * TICK) <= TICK, (found / TICK, k)


def test_10_ms_ticks_record_what_20_ms_ones_do(tmp_path: Path) -> None:
    """--ptime 10: the playout ticks every 10 ms. Fed as 10 ms ticks (frames, and
    None for silence), the same audio must make the same file as fed as 20 ms
    ticks: not each 10 ms padded to 20, nor the clock counting double."""
    ticks = 150  # 3 s of 20 ms ticks; 300 of 10 ms
    caller = np.frombuffer(b"".join(tone(440, ticks)), dtype=np.int16)
    agent = np.zeros_like(caller)
    bursts = [(21, 60), (145, 190), (250, 300)]  # in 10 ms, some off the 20 ms grid
    for a, b in bursts:
        agent[a * 240:b * 240] = np.frombuffer(b"".join(tone(1000, ticks)),
                                               dtype=np.int16)[a * 240:b * 240]

    def frames(x: np.ndarray, ms: int) -> list[bytes | None]:
        n = ms * 24
        return [x[i:i + n].tobytes() if x[i:i + n].any() else None for i in range(0, len(x), n)]

    twenty = record(tmp_path, "twenty", frames(caller, 20), frames(agent, 20))
    ten = CallRecorder(tmp_path, "ten")
    for k, (chunk, frame) in enumerate(zip(frames(caller, 10), frames(agent, 10), strict=True)):
        if k == 145:
            ten.note({"role": "assistant", "text": "here"})
        assert chunk is not None
        ten.caller_audio(chunk)
        ten.agent_frame(frame, 10)
    ten.close()
    assert ten.wait_closed(20)

    assert ten.error is None and ten.duration_s == pytest.approx(3.0)
    pcm = decode(ten.audio_path)
    assert pcm.shape[1] == ticks * TICK == ogg_length(ten.audio_path)
    doc = json.loads(ten.json_path.read_text())
    assert doc["duration_ms"] == 3000 and doc["entries"][0]["rec_ms"] == 1450
    # The same samples went to the encoder, so the same file decodes.
    assert np.array_equal(pcm, decode(twenty.audio_path))
    # And they are where the source has them (480 samples in 10 ms at 48 kHz).
    found = onsets(pcm[1])
    assert len(found) == len(bursts)
    for at, (a, _) in zip(found, bursts, strict=True):
        assert abs(at - a * 480) <= 120, (at / 480, a)
    assert abs(peak_hz(pcm[0, 5 * TICK:]) - 440) < 5


def test_silent_ticks_record_silence_and_keep_the_clock(tmp_path: Path) -> None:
    # 47 and 155: neither ends on a batch of ten ticks handed to the writer.
    agent: list[bytes | None] = [*tone(1000, 47), *[None] * 53, *tone(1000, 55, first=100)]
    recorder = record(tmp_path, "quiet", [None] * 155, agent)
    pcm = decode(recorder.audio_path)
    assert pcm.shape[1] == 155 * TICK
    right = pcm[1]
    assert rms(right[5 * TICK:46 * TICK]) > 3000
    assert rms(right[49 * TICK:98 * TICK]) < 30  # None is silence, not the last frame again
    assert rms(right[102 * TICK:]) > 3000
    assert rms(right[150 * TICK:]) > 3000  # the last, partial batch is in the file
    assert np.abs(pcm[0]).max() < 30  # no caller audio at all: a silent left channel


def test_caller_audio_short_of_a_frame_is_recorded_at_once_then_silence(tmp_path: Path) -> None:
    caller: list[bytes | None] = [None] * 100
    caller[50] = tone(440, 1)[0][:480]  # only 10 ms has come when tick 50 is due
    recorder = record(tmp_path, "partial", caller, [None] * 100)
    left = decode(recorder.audio_path)[0]
    assert onsets(left) == [pytest.approx(50 * TICK, abs=60)]
    assert rms(left[50 * TICK + 60:50 * TICK + 420]) > 3000  # the 10 ms there was
    assert rms(left[50 * TICK + 600:53 * TICK]) < 100  # then silence, not the next tick's


def test_the_playout_track_s_reused_buffer_can_be_passed(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "scratch")
    scratch = bytearray(FRAME_BYTES)  # what PlayoutTrack hands its on_frame hook
    for frame in tone(1000, 50):
        scratch[:] = frame
        recorder.agent_frame(scratch)
        recorder.caller_audio(scratch)
        scratch[:] = bytes(FRAME_BYTES)  # the track reuses it at once
    recorder.close()
    assert recorder.wait_closed(20)
    pcm = decode(recorder.audio_path)
    assert rms(pcm[1, 2 * TICK:]) > 3000 and rms(pcm[0, 2 * TICK:]) > 3000


def test_caller_audio_in_bursts_of_odd_sizes_plays_without_gaps(tmp_path: Path) -> None:
    ticks = 150
    stream = b"".join(tone(440, ticks))
    recorder = CallRecorder(tmp_path, "bursts")
    sent = 0
    cuts = [74, 1000, 2, 337 * 2, 3000]  # byte counts, each even, none a whole frame
    for k in range(ticks):
        if k % 5 == 4:  # nothing for four ticks, then 100 ms at once, in pieces
            end = min(len(stream), (k + 1) * FRAME_BYTES)
            i = 0
            while sent < end:
                piece = min(cuts[i % len(cuts)], end - sent)
                recorder.caller_audio(stream[sent:sent + piece])
                sent += piece
                i += 1
        recorder.agent_frame(None)
    recorder.close()
    assert recorder.wait_closed(20)
    left = decode(recorder.audio_path)[0]
    # The first burst comes at tick 4; from then on the tone never breaks off.
    windows = left[5 * TICK:(ticks - 1) * TICK].reshape(-1, 240)  # 5 ms windows
    levels = np.sqrt(np.mean(np.square(windows), axis=1))
    assert levels.min() > 0.5 * 8000 / np.sqrt(2)
    assert abs(peak_hz(left[5 * TICK:]) - 440) < 5
    assert recorder.resync_ms == 0  # jitter, not a standing backlog


def test_caller_audio_piling_up_keeps_only_the_last_second(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "pileup")
    for chunk in [*tone(300, 100), *tone(700, 50, first=100)]:  # 3 s before any tick
        recorder.caller_audio(chunk)
    for _ in range(60):
        recorder.agent_frame(None)
    recorder.close()
    assert recorder.wait_closed(20)
    left = decode(recorder.audio_path)[0]
    assert abs(peak_hz(left[2 * TICK:48 * TICK]) - 700) < 5  # the newest second, not the oldest
    assert rms(left[52 * TICK:]) < 30  # and nothing more
    doc = json.loads(recorder.json_path.read_text())
    assert doc["caller_dropped_ms"] == 2000 and doc["resync_ms"] == 0


def test_a_standing_caller_backlog_is_caught_up_with_agent_silence(tmp_path: Path) -> None:
    """A stalled loop: the caller's audio arrives 200 ms late, all at once. The
    recorder adds agent silence (within a second or two) rather than keep the
    caller 200 ms behind for the rest of the call, or drop what they said."""
    ticks = 160
    caller = [bytes(FRAME_BYTES)] * ticks
    caller[10:13] = tone(440, 3)
    caller[120:123] = tone(440, 3)
    agent: list[bytes | None] = [None] * ticks
    agent[120:123] = tone(1000, 3)
    recorder = CallRecorder(tmp_path, "resync")
    for k in range(ticks):
        if k == 30:  # ticks 20-29 saw nothing from the caller: here it all comes
            for chunk in caller[20:31]:
                recorder.caller_audio(chunk)
        elif not 20 <= k < 30:
            recorder.caller_audio(caller[k])
        recorder.agent_frame(agent[k])
    recorder.close()
    assert recorder.wait_closed(20)
    assert recorder.resync_ms == 180  # 200 ms stood a whole second; 20 ms is kept as slack
    pcm = decode(recorder.audio_path)
    assert pcm.shape[1] == (ticks + 9) * TICK
    caller_at, agent_at = onsets(pcm[0]), onsets(pcm[1])
    assert len(caller_at) == 2 and len(agent_at) == 1  # nothing the caller said is lost
    assert abs(caller_at[0] - 10 * TICK) <= TICK
    # Caller and agent at tick 120 are within 40 ms again (200 ms without the catch-up).
    assert abs(caller_at[1] - agent_at[0]) <= 2 * TICK
    assert json.loads(recorder.json_path.read_text())["resync_ms"] == 180


def test_a_writer_that_falls_behind_drops_batches_but_not_the_timeline(tmp_path: Path) -> None:
    """Two floods of 20 s of ticks, each fed in a few milliseconds: the writer keeps
    the first 5 s of each (its queue's bound), and the rest is silence in its place."""
    recorder = CallRecorder(tmp_path, "flood")
    frame = tone(1000, 1)[0]
    fed_in = 0.0
    for flood in range(2):
        started = time.perf_counter()
        for _ in range(1000):
            recorder.caller_audio(frame)
            recorder.agent_frame(frame)
        fed_in = max(fed_in, time.perf_counter() - started)
        if flood == 0:
            time.sleep(0.5)  # the writer catches up
    recorder.close()
    assert recorder.wait_closed(30)
    assert fed_in < 0.5  # the loop's side never waited for the writer
    # Bounded: about 3/4 of each flood dropped and counted (the writer may free a
    # slot or two while a flood runs).
    assert 20_000 <= recorder.dropped_ms <= 30_000
    pcm = decode(recorder.audio_path)
    assert pcm.shape[1] == 2000 * TICK
    levels = np.sqrt(np.mean(np.square(pcm[1].reshape(2000, TICK)), axis=1))
    loud = levels > 3000
    assert abs(int(loud.sum()) - (2000 - recorder.dropped_ms // 20)) <= 4
    assert loud[2:250].all() and loud[1001:1250].all()  # each flood's first 5 s, in its place
    doc = json.loads(recorder.json_path.read_text())
    assert doc["dropped_ms"] == recorder.dropped_ms and doc["duration_ms"] == 40_000


def test_max_s_closes_the_recording_at_the_bound(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "bounded", max_s=1.0)
    frames = tone(1000, 80)
    for k, frame in enumerate(frames):
        recorder.caller_audio(frame)
        recorder.agent_frame(frame)
        recorder.note({"k": k})
        assert recorder.closed == (k >= 49)
    assert recorder.duration_s == pytest.approx(1.0)
    recorder.close()  # idempotent
    assert recorder.wait_closed(20)
    assert decode(recorder.audio_path).shape[1] == 50 * TICK
    doc = json.loads(recorder.json_path.read_text())
    assert (doc["ended"], doc["duration_ms"], len(doc["entries"])) == ("max_s", 1000, 49)


def test_odd_inputs_never_raise_into_the_call(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "odd")
    recorder.caller_audio(b"\x01\x02\x03")  # an odd byte count: the last byte is dropped
    recorder.caller_audio(b"")
    for chunk in tone(450, 3):  # so the samples after it stay whole
        recorder.caller_audio(chunk)
    recorder.agent_frame(b"")
    recorder.agent_frame(b"\x10" * 961)  # too long: cut to 20 ms
    recorder.agent_frame(b"\x10" * 101)  # too short: padded with silence
    recorder.agent_frame(bytearray(FRAME_BYTES))
    recorder.note({"when": Path("/x"), "ids": {1, 2}})  # not JSON: written as strings
    recorder.note({("a", "b"): 1})  # keys JSON cannot have: dropped, counted
    recorder.close()
    assert recorder.wait_closed(20)
    assert recorder.error is None and recorder.notes_dropped == 1
    pcm = decode(recorder.audio_path)
    assert pcm.shape[1] == 4 * TICK
    spectrum = np.abs(np.fft.rfft(pcm[0, :3 * TICK])) ** 2
    near = np.abs(np.fft.rfftfreq(3 * TICK, 1 / OUT_RATE) - 450) < 60
    assert spectrum[near].sum() > 0.9 * spectrum.sum()  # a clean tone, not byte-shifted noise
    entry = json.loads(recorder.json_path.read_text())["entries"][0]
    assert entry["when"] == "/x" and entry["ids"] in ("{1, 2}", "{2, 1}")


def test_a_bug_on_the_loop_s_side_stops_the_recording_not_the_call(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = CallRecorder(tmp_path, "bug")
    for _ in range(30):
        recorder.agent_frame(None)
    with caplog.at_level(logging.ERROR, logger="rtc_agent.media.recorder"):
        recorder.caller_audio(None)  # type: ignore[arg-type]  # what no caller should pass
        recorder.caller_audio(b"\x00" * FRAME_BYTES)
        recorder.agent_frame(None)
    assert recorder.ended == "error"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert recorder.wait_closed(20)
    assert decode(recorder.audio_path).shape[1] == 30 * TICK  # what came before is kept
    assert json.loads(recorder.json_path.read_text())["ended"] == "error"


def test_a_recorder_dropped_without_close_finishes_its_files(tmp_path: Path) -> None:
    import gc

    recorder = CallRecorder(tmp_path, "forgotten")
    for frame in tone(1000, 60):
        recorder.agent_frame(frame)
    del recorder
    gc.collect()
    deadline = time.monotonic() + 20
    path = tmp_path / "forgotten.json"  # replaced whole, but written first by the writer thread
    while not (path.exists() and json.loads(path.read_text())["complete"]):
        assert time.monotonic() < deadline, "the files were never finished"
        time.sleep(0.02)
    assert decode(tmp_path / "forgotten.ogg").shape[1] == 60 * TICK


# ------------------------------------------------------------------ the JSON and the files


def test_the_json_holds_the_transcript_on_the_recording_s_clock(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "AbC-123_x")
    for k in range(100):
        if k == 25:
            recorder.note({"t_ms": 1234, "role": "user", "text": "Grüß Gott, \"quoted\"\n"})
        if k == 60:
            recorder.note({"t_ms": 2000, "role": "assistant", "text": "hello", "interrupted": True})
        recorder.agent_frame(None)
    recorder.close()
    assert recorder.wait_closed(20)
    doc = json.loads(recorder.json_path.read_text(encoding="utf-8"))
    assert doc["call_id"] == "AbC-123_x" and doc["complete"] is True and doc["ended"] == "closed"
    assert doc["audio"]["file"] == "AbC-123_x.ogg"
    assert doc["audio"]["channels"] == {"left": "caller", "right": "agent"}
    assert doc["duration_ms"] == 2000 and doc["dropped_ms"] == 0
    assert doc["started_at"] <= doc["first_tick_at"]
    assert doc["entries"] == [
        {"t_ms": 1234, "role": "user", "text": "Grüß Gott, \"quoted\"\n", "rec_ms": 500},
        {"t_ms": 2000, "role": "assistant", "text": "hello", "interrupted": True, "rec_ms": 1200},
    ]
    # Personal data: owner-only files, and no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AbC-123_x.json", "AbC-123_x.ogg"]
    for path in (recorder.audio_path, recorder.json_path):
        assert path.stat().st_mode & 0o777 == 0o600


def test_notes_are_bounded(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, "chatty")
    for k in range(1500):  # 1.5 MB of transcript: more than an hour of talk
        recorder.note({"k": k, "text": "x" * 1000})
    recorder.close()
    assert recorder.wait_closed(20)
    doc = json.loads(recorder.json_path.read_text())
    assert 1000 <= len(doc["entries"]) < 1100 and doc["notes_dropped"] == 1500 - len(doc["entries"])
    assert recorder.json_path.stat().st_size < 1.1e6


@pytest.mark.parametrize("call_id", ["", "../etc", "a/b", "a.b", "..", "x" * 65, "caf\u00e9",
                                     "a b", "a\x00b", "a\n", None, 42])
def test_call_ids_that_could_escape_the_directory_are_refused(tmp_path: Path, call_id: Any) -> None:
    with pytest.raises(ValueError):
        CallRecorder(tmp_path, call_id)
    assert list(tmp_path.iterdir()) == []


def test_the_longest_allowed_call_id_records(tmp_path: Path) -> None:
    recorder = record(tmp_path, "A" * 64, [None], [None])
    assert recorder.error is None and recorder.audio_path.exists()


def test_an_existing_file_is_never_overwritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "taken.ogg").write_bytes(b"precious")
    with caplog.at_level(logging.ERROR, logger="rtc_agent.media.recorder"):
        recorder = record(tmp_path, "taken", [None] * 20, [None] * 20)
    assert (tmp_path / "taken.ogg").read_bytes() == b"precious"
    assert recorder.error is not None and "File exists" in recorder.error
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


# ------------------------------------------------------------------ crashes and disk errors

CRASH_CHILD = """
    import sys, time
    from pathlib import Path
    import numpy as np
    from rtc_agent.media.recorder import CallRecorder

    recorder = CallRecorder(Path(sys.argv[1]), "crash")
    recorder.note({"role": "user", "text": "before the crash"})
    t = np.arange(480) / 24000
    frame = (np.sin(2 * np.pi * 450 * t) * 8000).astype(np.int16).tobytes()  # 9 whole cycles
    start = time.monotonic()
    for k in range(10**6):  # paced like the playout track: one tick every 20 ms
        recorder.caller_audio(frame)
        recorder.agent_frame(frame)
        if k % 10 == 9:
            print(k + 1, flush=True)
        time.sleep(max(0.0, start + (k + 1) * 0.02 - time.monotonic()))
"""


def test_a_process_killed_mid_call_leaves_files_that_still_play(tmp_path: Path) -> None:
    child = run_child(CRASH_CHILD, str(tmp_path))
    assert child.stdout is not None
    try:
        fed = 0
        for line in child.stdout:
            fed = int(line)
            if fed >= 260:  # 5.2 s
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    fed_s = fed * 0.02
    pcm = decode(tmp_path / "crash.ogg")
    got_s = pcm.shape[1] / OUT_RATE
    assert fed_s - 3 <= got_s <= fed_s + 0.5, (fed_s, got_s)
    assert got_s >= fed_s - 1.5  # pages every 0.5 s, batches of 0.2 s: about a second at most
    assert abs(peak_hz(pcm[0, TICK:]) - 450) < 5 and abs(peak_hz(pcm[1, TICK:]) - 450) < 5
    doc = json.loads((tmp_path / "crash.json").read_text())  # whole, though the writer was killed
    assert doc["complete"] is False
    assert doc["entries"][0]["text"] == "before the crash"


DISK_CHILD = """
    import json, logging, os, resource, signal, sys, time
    from pathlib import Path
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s %(message)s")
    import numpy as np
    from rtc_agent.media.recorder import CallRecorder

    mode = sys.argv[2]
    if mode == "read-only" and os.geteuid() == 0:  # root writes anywhere: be nobody
        os.setgid(65534)  # (after the imports: this Python may live in root's home)
        os.setuid(65534)
    if mode == "disk-full":  # the file system refuses more than 40 kB a file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    recorder = CallRecorder(Path(sys.argv[1]), "call")
    t = np.arange(480) / 24000
    frame = (np.sin(2 * np.pi * 450 * t) * 8000).astype(np.int16).tobytes()
    ticks = 0
    for k in range(500):  # 10 s, fed 10 times faster than real time
        recorder.caller_audio(frame)
        recorder.agent_frame(frame)
        recorder.note({"k": k})
        ticks += 1
        time.sleep(0.002)
    recorder.close()
    recorder.close()
    print(json.dumps({"ticks": ticks, "error": recorder.error,
                      "finished": recorder.wait_closed(20), "closed": recorder.closed}))
"""


def run_disk_child(directory: Path, mode: str) -> tuple[dict[str, Any], list[str]]:
    child = run_child(DISK_CHILD, str(directory), mode)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    errors = [line for line in err.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    return json.loads(out), errors


def test_a_read_only_directory_logs_one_error_and_the_call_goes_on() -> None:
    directory = Path(tempfile.mkdtemp(prefix="rtc-agent-ro-"))  # /tmp: nobody can reach it
    try:
        directory.chmod(0o555)
        result, errors = run_disk_child(directory, "read-only")
        assert list(directory.iterdir()) == []
    finally:
        directory.chmod(0o755)
        directory.rmdir()
    assert result["ticks"] == 500 and result["finished"] and result["closed"]
    assert result["error"] and "Permission denied" in result["error"]
    assert len(errors) == 1 and "call call: recording stopped" in errors[0], errors


def test_a_full_disk_mid_call_logs_one_error_and_keeps_what_was_written(tmp_path: Path) -> None:
    result, errors = run_disk_child(tmp_path, "disk-full")
    assert result["ticks"] == 500 and result["finished"] and result["closed"]
    assert result["error"] and "File too large" in result["error"]
    assert len(errors) == 1 and "recording stopped" in errors[0], errors
    size = (tmp_path / "call.ogg").stat().st_size
    assert 39_000 < size <= 40_000  # written up to the limit, then stopped
    pcm = decode(tmp_path / "call.ogg")  # and what is there plays: 40 kB is ~4 s at 64 kbit/s
    assert pcm.shape[1] / OUT_RATE > 3.0
    assert abs(peak_hz(pcm[0, TICK:]) - 450) < 5
    assert json.loads((tmp_path / "call.json").read_text())["complete"] is False
