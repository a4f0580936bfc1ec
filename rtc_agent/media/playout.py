"""Agent audio out: the outbound track that paces the model's reply to the caller.

The Realtime service sends reply audio faster than real time; this track holds
it in a bounded buffer and releases one 20 ms frame per tick, sending silence
when idle. It encodes Opus itself, straight from the service's 24 kHz pcm16,
and hands aiortc ready packets: no 24->48 kHz resample, no thread-pool hop, and
no pure-Python audio-level loop (aiortc runs that only on raw frames). Idle
ticks reuse one pre-encoded silence packet.

The audio and the books barge-in needs (which item is on air, how many
milliseconds of it have been sent) live in the pure `PlayoutBuffer`; this
module adds the clock, the Opus encoder and aiortc.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext

from rtc_agent.media import opus
from rtc_agent.media.opus import silence_packet
from rtc_agent.media.playout_buffer import FRAME_BYTES, Flushed, PlayoutBuffer
from rtc_agent.protocol import REALTIME_RATE

log = logging.getLogger(__name__)

RATE = REALTIME_RATE
FRAME_SAMPLES = FRAME_BYTES // 2  # 480: 20 ms at 24 kHz
FRAME_S = 0.020
RTP_CLOCK = 48000  # Opus RTP timestamps always count at 48 kHz
RTP_STEP = 960
RTP_TIME_BASE = fractions.Fraction(1, RTP_CLOCK)
WARMUP_SILENCE_FRAMES = 5  # encode a few real silent frames so the codec state decays


class PlayoutTrack(MediaStreamTrack):
    """An audio track fed with pcm16 24 kHz chunks, paced at 20 ms frames."""

    kind = "audio"

    def __init__(
        self,
        *,
        max_buffer_ms: int = 120_000,
        on_item_started: Callable[[str], None] | None = None,
        on_item_finished: Callable[[str, float], None] | None = None,
        on_frame: Callable[[bytearray | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        buffer: PlayoutBuffer | None = None,
        encoder: AudioCodecContext | None = None,
    ) -> None:
        super().__init__()
        self._silence = silence_packet()
        self._encoder: AudioCodecContext | None = encoder or opus.encoder(RATE, 32000)
        self._frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        self._frame.sample_rate = RATE
        self._scratch = bytearray(FRAME_BYTES)
        self.buffer = buffer or PlayoutBuffer(max_buffer_ms=max_buffer_ms,
                                              on_item_started=on_item_started,
                                              on_item_finished=on_item_finished)
        self._clock = clock
        # Told of every tick: the 20 ms of pcm sent (valid during the call only), or
        # None for silence. For the call's books (barge-in timing) and recordings.
        self._on_frame = on_frame
        self._start: float | None = None
        self._ticks = 0
        self._timestamp = 0
        self._encoded_pts = 0
        self._quiet_frames = WARMUP_SILENCE_FRAMES
        self.late_frames = 0
        self._detached = False  # handed over to a successor: silent, touches nothing

    # ------------------------------------------------------------ feeding

    @property
    def buffered_ms(self) -> float:
        return self.buffer.buffered_ms

    @property
    def current_item(self) -> str | None:
        return self.buffer.current_item

    @property
    def sent_ms(self) -> float:
        return self.buffer.sent_ms

    @property
    def dropped_ms(self) -> float:
        return self.buffer.dropped_ms

    def enqueue(self, item_id: str, pcm: bytes) -> None:
        self.buffer.enqueue(item_id, pcm)

    def end_item(self, item_id: str) -> None:
        self.buffer.end_item(item_id)

    def flush(self) -> Flushed:
        return self.buffer.flush()

    def successor(self) -> PlayoutTrack:
        """The track for a call's new connection (a resume), taking over this one's
        queue, encoder, callbacks and counts.

        aiortc's sender stops its track when its connection closes, and a call's
        playout must outlive its connections. From now on this track only sends
        silence, so its closing connection cannot take frames meant for the new one.
        The successor paces from its own first pull: the gap is not lateness."""
        nxt = PlayoutTrack(on_frame=self._on_frame, clock=self._clock, buffer=self.buffer,
                           encoder=self._encoder)
        nxt.late_frames = self.late_frames
        nxt._encoded_pts = self._encoded_pts
        self._detached = True
        self._encoder = None
        self._on_frame = None
        return nxt

    # ------------------------------------------------------------ sending

    async def _pace(self) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
            return
        self._ticks += 1
        due = self._start + self._ticks * FRAME_S
        wait = due - now
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.1:
            # We fell behind (a stalled loop): start a new timeline rather than
            # bursting frames to catch up, which the caller would hear as a skip.
            self.late_frames += 1
            self._start = now - self._ticks * FRAME_S

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pace()
        if self._detached:
            return self._packet(None)
        filled = self.buffer.fill(self._scratch)
        payload: bytes | None = None
        if filled:
            self._quiet_frames = 0
            payload = self._encode(self._scratch)
        elif self._quiet_frames < WARMUP_SILENCE_FRAMES:
            self._quiet_frames += 1
            self._scratch[:] = bytes(FRAME_BYTES)
            payload = self._encode(self._scratch)
        if self._on_frame is not None:
            try:
                self._on_frame(self._scratch if filled else None)
            except Exception:  # an observer's fault must not stop the sender
                log.exception("playout frame observer failed")
        return self._packet(payload)

    def _packet(self, payload: bytes | None) -> av.Packet:
        packet = av.Packet(payload or self._silence)
        packet.pts = self._timestamp
        packet.time_base = RTP_TIME_BASE
        self._timestamp += RTP_STEP
        return packet

    def stop(self) -> None:
        """End the track and free its encoder now.

        libopus keeps two native threads per encoder; the call that owns this
        track sits in reference cycles, so waiting for the collector would keep
        them alive long after the hang-up.
        """
        super().stop()
        self._encoder = None

    def _encode(self, pcm: bytearray) -> bytes | None:
        encoder = self._encoder
        if encoder is None:  # stopped while a frame was being paced
            return None
        frame = self._frame
        frame.pts = self._encoded_pts
        self._encoded_pts += FRAME_SAMPLES
        # PyAV's stub says bytes, but any buffer works: a bytes copy per frame is
        # exactly the allocation this path avoids.
        frame.planes[0].update(pcm)  # type: ignore[arg-type]
        payload = None
        for packet in encoder.encode(frame):
            payload = bytes(packet)
        return payload
