"""Opus encoders for tracks that hand aiortc ready packets, and a silence packet.

Both the agent's playout track and the load tester's caller encode Opus
themselves (skipping aiortc's encoder thread and its per-sample audio-level
loop) and send one cached packet of silence when they have nothing to say.
"""

from __future__ import annotations

import fractions

import av
from av.audio.codeccontext import AudioCodecContext

_SILENCE: bytes | None = None


def encoder(rate: int, bit_rate: int) -> AudioCodecContext:
    """A mono s16 libopus encoder for 20 ms frames at `rate` (any Opus rate)."""
    codec = av.CodecContext.create("libopus", "w")
    if not isinstance(codec, AudioCodecContext):
        raise TypeError(f"libopus gave a {type(codec).__name__}, not an audio codec")
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = bit_rate
    codec.options = {"application": "voip"}
    codec.time_base = fractions.Fraction(1, rate)
    return codec


def silence_packet() -> bytes:
    """One 20 ms Opus packet of digital silence, encoded once per process.

    Taken after a few frames, once the encoder's start-up has settled; any
    Opus decoder plays it, whatever rate the real packets were encoded at.
    """
    global _SILENCE
    if _SILENCE is None:
        codec = encoder(48000, 32000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.sample_rate = 48000
        frame.planes[0].update(bytes(960 * 2))
        payload = b""
        for i in range(10):
            frame.pts = i * 960
            for packet in codec.encode(frame):
                payload = bytes(packet)
        _SILENCE = payload
    return _SILENCE
