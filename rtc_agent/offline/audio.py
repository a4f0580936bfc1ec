"""The backend's framing of reply audio: base64, durations and delta chunks.

The format's facts and resampling live in rtc_agent.media.pcm.
"""

from __future__ import annotations

import base64

from rtc_agent.protocol import BYTES_PER_MS


def duration_ms(pcm24: bytes | bytearray) -> int:
    """Length in ms of pcm16 24 kHz audio."""
    return len(pcm24) // BYTES_PER_MS


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def chunks(pcm24: bytes, max_ms: int = 100) -> list[bytes]:
    """Split audio into deltas of at most max_ms (the cloud sends small deltas)."""
    step = max_ms * BYTES_PER_MS
    return [pcm24[i : i + step] for i in range(0, len(pcm24), step)]
