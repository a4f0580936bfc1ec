"""pcm16 mono arrays and whole-signal resampling (PyAV's libswresample).

Shared by the agent's media path, the offline backend and the load tester. The
format's facts (24 kHz, 48 bytes per ms) live in `rtc_agent.protocol`.
"""

from __future__ import annotations

import av
import numpy as np


def as_int16(pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """View bytes (little-endian s16) or an array as a 1-D int16 array."""
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.int16, copy=False).reshape(-1)
    return np.frombuffer(bytes(pcm), dtype="<i2")


def resample(pcm: bytes | np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole mono s16 signal with libswresample (good quality, no state kept).

    For utterances, sentences and prompts, not streams: a fresh resampler per
    call keeps it thread-safe, and flushing returns the tail so no samples are lost.
    """
    samples = as_int16(pcm)
    if src_rate == dst_rate or samples.size == 0:
        return samples.copy()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = src_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst_rate)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
