"""What the caller hears, and the questions a script asks of it.

Built for load: aiortc decodes the server's Opus (one decode per frame, the
cheap direction) and the caller keeps only an arrival time and a level for
every 20 ms frame, plus the samples of the last few seconds. "When did the
reply become audible" and "when did it stop" are answered from the levels
alone, so a long call costs no more than a short one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

# The caller's audio, both ways: mono int16 at 48 kHz (Opus's rate) in 20 ms frames.
SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
# A 20 ms frame is "audible" above this RMS level (dB relative to int16 full scale).
# Opus-decoded digital silence sits far below (-90 dBFS or exactly zero); quiet
# speech sits around -40..-20 dBFS.
DEFAULT_THRESHOLD_DBFS = -50.0


def frame_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf-safe: silence gives -120)."""
    if samples.size == 0:
        return -120.0
    x = samples.astype(np.float32)
    ms = float(np.dot(x, x)) / x.size
    if ms <= 1.0:
        return -120.0
    return 10.0 * math.log10(ms / (32768.0 * 32768.0))


class ReceivedAudio:
    """Frames heard from the server: arrival time and level of every frame (bounded),
    and the samples of the most recent `keep_s` seconds in a ring buffer."""

    def __init__(self, keep_s: float = 30.0, max_frames: int = 50 * 3600) -> None:
        self.times: deque[float] = deque(maxlen=max_frames)
        self.levels: deque[float] = deque(maxlen=max_frames)
        # arrival minus media time (RTP timestamp): its growth is how far the
        # stream fell behind real time (a sender that cannot keep up)
        self.offsets: deque[float] = deque(maxlen=max_frames)
        self._cap = max(0, int(keep_s * SAMPLE_RATE))
        self._ring = np.zeros(self._cap, np.int16)
        self._written = 0  # total samples ever written

    def add(self, t: float, mono: np.ndarray, media_t: float | None = None) -> None:
        self.times.append(t)
        self.levels.append(frame_dbfs(mono))
        # one per frame, NaN when the frame has no media time (kept in step with levels)
        self.offsets.append(t - media_t if media_t is not None else math.nan)
        if self._cap == 0:
            return
        n = len(mono)
        if n >= self._cap:
            self._ring[:] = mono[-self._cap :]
            self._written += n
            return
        start = self._written % self._cap
        first = min(n, self._cap - start)
        self._ring[start : start + first] = mono[:first]
        if first < n:
            self._ring[: n - first] = mono[first:]
        self._written += n

    async def record(self, track: MediaStreamTrack) -> None:
        """Drain the server's audio track until it ends, keeping the left channel.

        Media times come from the RTP timestamps (unwrapped), so `lags_ms` can
        tell a server that falls behind from a network that delays.
        """
        add = self.add
        wraps = 0
        last_pts: int | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            # aiortc decodes a remote audio track into AudioFrames, never packets
            assert isinstance(frame, av.AudioFrame), f"audio track gave {type(frame).__name__}"
            arr = frame.to_ndarray()
            # packed s16: shape (1, samples * channels), interleaved
            ch = len(frame.layout.channels)
            mono = arr.reshape(-1)[::ch] if ch > 1 else arr.reshape(-1)
            if frame.sample_rate != SAMPLE_RATE:  # aiortc's Opus decoder gives 48 kHz
                continue
            pts = frame.pts
            if pts is not None:
                # RTP timestamps start at random and wrap at 2**32
                if last_pts is not None and pts < last_pts - (1 << 31):
                    wraps += 1
                last_pts = pts
                pts += wraps << 32
            add(t, mono, pts / SAMPLE_RATE if pts is not None else None)

    def lags_ms(self, skip_s: float = 0.0, threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
                ) -> list[float]:
        """Per-frame lag behind the stream's best-seen schedule, in ms, of the audible
        frames (the agent talking) that arrived `skip_s` or more after the first frame.

        0 means a frame arrived as early, relative to its timestamp, as the best
        frame did; a server that falls behind shows a growing lag. Quiet frames are
        left out: a server in DTX sends one every 400 ms, and a jitter buffer that
        waits for a few packets before releasing one holds those for seconds.
        """
        if not self.times:
            return []
        after = self.times[0] + skip_s
        offs = [o for t, o, level in zip(self.times, self.offsets, self.levels, strict=True)
                if t >= after and level > threshold_dbfs and not math.isnan(o)]
        if not offs:
            return []
        base = min(offs)
        return [(o - base) * 1000 for o in offs]

    def media_rate(self, threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS) -> float | None:
        """Seconds of media received per second, from the RTP timestamps: 1.0 when the
        server keeps up, below when its stream falls behind real time.

        Taken between the first and the last audible frame (any frames if fewer than
        two are audible): a DTX gap then counts as the time it stands for, which a
        count of packets cannot, and quiet frames that a jitter buffer held back for
        seconds (waiting for more packets in DTX) do not read as the server's delay.
        """
        marks = [(t, o) for t, o, level in zip(self.times, self.offsets, self.levels,
                                               strict=True)
                 if level > threshold_dbfs and not math.isnan(o)]
        if len(marks) < 2:
            marks = [(t, o) for t, o in zip(self.times, self.offsets, strict=True)
                     if not math.isnan(o)]
        if len(marks) < 2:
            return None
        (t0, o0), (t1, o1) = marks[0], marks[-1]
        wall = t1 - t0
        return (wall - (o1 - o0)) / wall if wall > 0 else None

    def samples(self) -> np.ndarray:
        """The kept samples in arrival order (a copy)."""
        if self._written <= self._cap:
            return self._ring[: self._written].copy()
        start = self._written % self._cap
        return np.concatenate([self._ring[start:], self._ring[:start]])


def first_audible_after(
    times: Sequence[float], levels: Sequence[float], t: float, threshold_dbfs: float
) -> float | None:
    """Arrival time of the first frame after `t` louder than the threshold."""
    for ft, lv in zip(times, levels, strict=True):
        if ft > t and lv > threshold_dbfs:
            return ft
    return None


def silent_from(
    times: Sequence[float],
    levels: Sequence[float],
    t: float,
    threshold_dbfs: float,
    min_silence_s: float,
) -> float | None:
    """Start of the first run of silent frames after `t` lasting at least `min_silence_s`.

    Frames that stop arriving also count as silence (a server may send nothing
    when it has nothing to say), so a run may end at a gap: what matters is that
    no audible frame arrives within `min_silence_s` of the run's start. Returns
    None when no such run is known yet.
    """
    run_start: float | None = None
    last_t: float | None = None
    for ft, lv in zip(times, levels, strict=True):
        if ft <= t:
            continue
        if lv > threshold_dbfs:
            if run_start is not None and ft - run_start >= min_silence_s:
                return run_start
            run_start = None
        elif run_start is None:
            run_start = ft
        last_t = ft
    if run_start is not None and last_t is not None and last_t - run_start >= min_silence_s:
        return run_start
    return None
