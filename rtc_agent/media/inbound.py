"""Caller audio in: decoded WebRTC frames -> 20 ms chunks of pcm16 24 kHz mono.

aiortc decodes Opus on its own worker thread and hands us 48 kHz stereo s16
frames; here they are downmixed and resampled (swresample, in C) and cut into
the 960-byte chunks that become `input_audio_buffer.append` events.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import av

RATE = 24000
CHUNK_BYTES = 960  # 20 ms of pcm16 mono at 24 kHz


class InboundAudio:
    """Resample caller frames and cut them into 20 ms chunks."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = bytearray()

    def push(self, frame: av.AudioFrame) -> Iterator[bytes]:
        """Feed one decoded frame; yield every complete 20 ms chunk it completes."""
        for out in self._resampler.resample(frame):
            # A mono s16 plane may be padded past the samples it holds.
            self._pending += memoryview(out.planes[0])[: out.samples * 2]
        while len(self._pending) >= CHUNK_BYTES:
            chunk = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            yield chunk


_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


def append_event(chunk: bytes) -> str:
    """The `input_audio_buffer.append` event as JSON text, without json.dumps.

    Base64 needs no escaping, so a string join is exact and saves a dict and a
    serialiser pass on a path that runs 50 times a second per call.
    """
    return _APPEND_PREFIX + base64.b64encode(chunk).decode("ascii") + '"}'
