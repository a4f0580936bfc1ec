"""Caller audio in: the caller's Opus -> pcm16 24 kHz mono, appended as it comes.

By default aiortc decodes on one worker thread per call at 48 kHz stereo and
hands each frame back to the event loop through two thread hops; with many
calls those hops and the GIL hand-offs cost more than the decoding itself.
`decode_on_loop` makes a receiver decode on the loop instead, to mono (half
the samples of aiortc's stereo); swresample then takes 48 kHz to 24 kHz.

It also replaces aiortc's audio jitter buffer, which holds four packets (80 ms)
before releasing one and stalls on a lost packet until 16 have piled up. Here
nothing plays the caller's audio out in real time (the Realtime service
buffers it anyway), so packets only need to be in order: `InOrderPackets`
passes each one on as it arrives and drops the rare late one.

Each decoded packet goes upstream at once, as whatever the resampler gave for it
(~20 ms; 16 samples fewer for the first, swresample's filter delay): the
Realtime API takes appends of any length. Cutting exact 20 ms chunks would hold
all but 16 samples of every packet back until the next one, 19 ms more before the
service hears the end of the caller's turn.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import queue
from collections.abc import Iterator
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

RATE = 24000


class InboundAudio:
    """Resample caller frames to 24 kHz mono pcm16, passing each on at once."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def push(self, frame: av.AudioFrame) -> Iterator[bytes]:
        """Feed one decoded frame; yield the pcm the resampler gives for it, at once."""
        for out in self._resampler.resample(frame):
            if out.samples:
                # A mono s16 plane may be padded past the samples it holds.
                yield bytes(memoryview(out.planes[0])[: out.samples * 2])


_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


def append_event(chunk: bytes) -> str:
    """The `input_audio_buffer.append` event as JSON text, without json.dumps.

    Base64 needs no escaping, so a string join is exact and saves a dict and a
    serialiser pass on a path that runs 50 times a second per call.
    """
    return _APPEND_PREFIX + base64.b64encode(chunk).decode("ascii") + '"}'


class _LoopDecoder(queue.Queue):
    """Stands in for an RTCRtpReceiver's decoder queue and decodes as frames arrive.

    aiortc's receiver calls `put((codec, encoded_frame))` from the event loop
    for each complete frame, and `put(None)` when it stops; the latter still
    goes through the queue so aiortc's idle worker thread ends as usual.
    """

    def __init__(self, track_queue: asyncio.Queue) -> None:
        super().__init__()
        self._track_queue = track_queue
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = 48000  # FFmpeg's Opus decoders always output 48 kHz
        self.decode_errors = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            return
        _codec_params, encoded = item
        packet = av.Packet(encoded.data)
        packet.pts = encoded.timestamp
        try:
            frames = self._codec.decode(packet)
        except av.FFmpegError as exc:
            # Keep the decoder's state; the next packet decodes normally.
            self.decode_errors += 1
            log.debug("dropping an undecodable Opus packet: %s", exc)
            return
        for frame in frames:
            self._track_queue.put_nowait(frame)


class InOrderPackets:
    """An audio 'jitter buffer' that adds no delay: one packet is one Opus frame.

    Stands in for aiortc's JitterBuffer (same `add` contract): a packet newer
    than the last one passed on is passed on at once, a gap is simply loss,
    and a packet older than what was already passed on is dropped.
    """

    def __init__(self) -> None:
        self._last: int | None = None
        self.late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            ahead = (seq - self._last) & 0xFFFF
            if ahead == 0 or ahead > 0x8000:  # a duplicate, or behind us
                self.late += 1
                return False, None
        self._last = seq
        # RTCRtpReceiver stores the depacketised payload in `_data`; aiortc's own
        # jitter buffer reads it the same way.
        payload: bytes = packet._data  # type: ignore[attr-defined]
        return False, JitterFrame(data=payload, timestamp=packet.timestamp)


def decode_on_loop(receiver: RTCRtpReceiver) -> bool:
    """Make an audio receiver pass packets on at once and decode on the event loop.

    Call before the receiver starts. Relies on aiortc 1.x internals (private
    attributes of RTCRtpReceiver); if they are not as expected, the receiver is
    left as it is and False returned.
    """
    track = getattr(receiver, "_track", None)
    queue_attr = "_RTCRtpReceiver__decoder_queue"
    buffer_attr = "_RTCRtpReceiver__jitter_buffer"
    if (track is None or not isinstance(getattr(receiver, queue_attr, None), queue.Queue)
            or not hasattr(receiver, buffer_attr)
            or getattr(receiver, "_RTCRtpReceiver__started", True)
            or not isinstance(getattr(track, "_queue", None), asyncio.Queue)):
        return False
    setattr(receiver, queue_attr, _LoopDecoder(track._queue))
    setattr(receiver, buffer_attr, InOrderPackets())
    return True
