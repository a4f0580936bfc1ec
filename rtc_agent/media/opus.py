"""Opus encoders for tracks that hand aiortc ready packets; silence and DTX packets.

Both the agent's playout track and the load tester's caller encode Opus
themselves (skipping aiortc's encoder thread and its per-sample audio-level
loop) and send one cached packet of silence when they have nothing to say.
The playout track can instead go quiet the way Opus DTX does: a one-byte packet
(a table-of-contents byte and an empty frame, RFC 6716 3.2.1) now and then,
which every Opus decoder takes as "nothing sent" and WebRTC receivers as DTX.
"""

from __future__ import annotations

import fractions

import av
from av.audio.codeccontext import AudioCodecContext

_SILENCE: dict[int, bytes] = {}


def encoder(rate: int, bit_rate: int, frame_ms: int = 20) -> AudioCodecContext:
    """A mono s16 libopus encoder for `frame_ms` frames (10 or 20) at `rate` (any Opus rate)."""
    codec = av.CodecContext.create("libopus", "w")
    if not isinstance(codec, AudioCodecContext):
        raise TypeError(f"libopus gave a {type(codec).__name__}, not an audio codec")
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = bit_rate
    codec.options = {"application": "voip", "frame_duration": str(frame_ms)}
    codec.time_base = fractions.Fraction(1, rate)
    return codec


def silence_packet(frame_ms: int = 20) -> bytes:
    """One Opus packet of `frame_ms` of digital silence, encoded once per process.

    Taken after a few frames, once the encoder's start-up has settled; any
    Opus decoder plays it, whatever rate the real packets were encoded at.
    """
    payload = _SILENCE.get(frame_ms)
    if payload is None:
        samples = 48 * frame_ms
        codec = encoder(48000, 32000, frame_ms)
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.sample_rate = 48000
        frame.planes[0].update(bytes(samples * 2))
        payload = b""
        for i in range(10):
            frame.pts = i * samples
            for packet in codec.encode(frame):
                payload = bytes(packet)
        _SILENCE[frame_ms] = payload
    return payload


def dtx_packet(frame_ms: int = 20) -> bytes:
    """A one-byte Opus packet: the silence packet's TOC byte with code 0 (one frame)
    and no frame data, as libopus emits in DTX. It decodes to `frame_ms` of
    concealment (silence after silence); WebRTC receivers treat packets of two
    bytes or fewer as DTX and play comfort noise until real audio comes."""
    return bytes([silence_packet(frame_ms)[0] & 0xFC])
