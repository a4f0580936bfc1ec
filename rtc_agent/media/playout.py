"""Agent audio out: the outbound track that paces the model's reply to the caller.

The Realtime service sends reply audio faster than real time; this track holds
it in a bounded buffer and releases one frame (20 ms, or 10 ms with `frame_ms`)
per tick. It encodes Opus itself, straight from the service's 24 kHz pcm16,
and hands aiortc ready packets: no 24->48 kHz resample, no thread-pool hop, and
no pure-Python audio-level loop (aiortc runs that only on raw frames).

While the agent is silent the track sends one pre-encoded silence packet per
tick. With `dtx` it goes quiet as Opus DTX does instead: after a few encoded
silent frames, one one-byte DTX packet and then one every 400 ms, so receivers
keep seeing a live stream. RTP timestamps follow the pacing clock, gaps
included, which lets a reply's first frame leave the moment its audio arrives
(stamped "now") rather than at the next tick: with back-to-back silence packets
a receiver plays each packet in its slot, so an early first frame could only
wait there. Measured in Chromium (docs/benchmarks.md), the early frame is not
heard sooner: coming out of DTX, WebRTC's jitter buffer keeps the delay it had
before the quiet. So DTX is off by default; it saves traffic and per-packet work.

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
from rtc_agent.media.playout_buffer import Flushed, PlayoutBuffer
from rtc_agent.protocol import BYTES_PER_MS, REALTIME_RATE

log = logging.getLogger(__name__)

RATE = REALTIME_RATE
RTP_CLOCK = 48000  # Opus RTP timestamps always count at 48 kHz
RTP_STEP = 960  # one 20 ms frame on the RTP clock
RTP_TIME_BASE = fractions.Fraction(1, RTP_CLOCK)
FRAME_MS_CHOICES = (10, 20)
WARMUP_SILENCE_FRAMES = 5  # encode a few real silent frames so the codec state decays
DTX_KEEPALIVE_S = 0.4  # libopus's own DTX rhythm: one packet every 400 ms


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
        frame_ms: int = 20,
        dtx: bool = False,
    ) -> None:
        super().__init__()
        if frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"frame_ms must be one of {FRAME_MS_CHOICES}, not {frame_ms}")
        self.frame_ms = frame_ms
        self.dtx = dtx
        self._frame_s = frame_ms / 1000
        self._silence = opus.silence_packet(frame_ms)
        self._dtx_packet = opus.dtx_packet(frame_ms)
        self._keepalive_ticks = round(DTX_KEEPALIVE_S * 1000 / frame_ms)
        self._encoder: AudioCodecContext | None = (encoder
                                                   or opus.encoder(RATE, 32000, frame_ms))
        samples = RATE * frame_ms // 1000
        self._frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        self._frame.sample_rate = RATE
        self._scratch = bytearray(frame_ms * BYTES_PER_MS)
        self.buffer = buffer or PlayoutBuffer(max_buffer_ms=max_buffer_ms,
                                              on_item_started=on_item_started,
                                              on_item_finished=on_item_finished)
        self._clock = clock
        # Told of every tick: the frame of pcm sent (valid during the call only), or
        # None for silence. For the call's books (barge-in timing) and recordings.
        self._on_frame = on_frame
        # The pacing timeline: tick n is due at _start + n * frame. RTP timestamps
        # count from _origin on the same clock, so a gap in sending is a gap in time.
        self._start: float | None = None
        self._origin = 0.0
        self._ticks = 0
        self._due = 0.0  # when the tick being produced was due
        self._sent_due: float | None = None  # ... and when the last packet sent was
        self._encoded_pts = 0
        self._quiet_frames = WARMUP_SILENCE_FRAMES
        self._quiet_ticks = 0  # idle ticks since the last packet sent (DTX)
        self._wake: asyncio.Future[None] | None = None  # an idle DTX wait, cut short by audio
        self.late_frames = 0
        self.early_starts = 0  # replies started off the tick grid, right as audio came
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
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

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
                           encoder=self._encoder, frame_ms=self.frame_ms, dtx=self.dtx)
        nxt.late_frames = self.late_frames
        nxt.early_starts = self.early_starts
        nxt._encoded_pts = self._encoded_pts
        self._detached = True
        self._encoder = None
        self._on_frame = None
        return nxt

    # ------------------------------------------------------------ sending

    @property
    def _idle(self) -> bool:
        """Quiet in DTX: nothing to play and the encoder's decay frames sent."""
        return self.dtx and self._quiet_frames >= WARMUP_SILENCE_FRAMES

    async def _pace(self) -> None:
        """Wait for the next tick; while idle in DTX, audio arriving ends the wait at once."""
        now = self._clock()
        if self._start is None:
            self._start = self._origin = self._due = now
            return
        self._ticks += 1
        due = self._start + self._ticks * self._frame_s
        wait = due - now
        if wait > 0:
            if self._idle:
                if await self._sleep_or_audio(due):
                    await self._start_early()
                    return
            else:
                await asyncio.sleep(wait)
        elif wait < -0.1:
            # We fell behind (a stalled loop): start a new timeline rather than
            # bursting frames to catch up, which the caller would hear as a skip.
            # The RTP clock moves with it, so the stream stays contiguous: the
            # receiver sees late packets, not a gap (a gap in time is only DTX).
            self.late_frames += 1
            self._start = now - self._ticks * self._frame_s
            self._origin -= due - now
            due = now
        self._due = due

    async def _sleep_or_audio(self, due: float) -> bool:
        """Sleep until `due` unless audio is queued first; True when audio ended it."""
        loop = asyncio.get_running_loop()
        while self.buffer.buffered_ms == 0:
            wait = due - self._clock()
            if wait <= 0:
                return False
            wake: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(wait, _settle, wake)
            self._wake = wake
            try:
                await wake
            finally:
                self._wake = None
                timer.cancel()
        return True

    async def _start_early(self) -> None:
        """A reply's first audio came between ticks: send it now, and pace from here.

        Not sooner than a frame after the last packet sent: timestamps never overlap."""
        now = self._clock()
        start = now if self._sent_due is None else max(now, self._sent_due + self._frame_s)
        if start > now:
            await asyncio.sleep(start - now)
        self.early_starts += 1
        self._start = self._due = start
        self._ticks = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            await self._pace()
            if self._detached:
                return self._packet(self._silence)
            payload = self._tick()
            if payload is not None:
                return self._packet(payload)
            if self.readyState != "live":
                raise MediaStreamError

    def _tick(self) -> bytes | None:
        """One tick's frame: the packet to send, or None when DTX sends nothing."""
        filled = self.buffer.fill(self._scratch)
        payload: bytes | None = None
        if filled:
            self._quiet_frames = 0
            payload = self._encode(self._scratch)
        elif self._quiet_frames < WARMUP_SILENCE_FRAMES:
            self._quiet_frames += 1
            self._scratch[:] = bytes(len(self._scratch))
            payload = self._encode(self._scratch)
        if self._on_frame is not None:
            try:
                self._on_frame(self._scratch if filled else None)
            except Exception:  # an observer's fault must not stop the sender
                log.exception("playout frame observer failed")
        if payload is not None or filled or self._quiet_frames < WARMUP_SILENCE_FRAMES:
            return payload or self._silence
        if not self.dtx:
            return self._silence
        # DTX: one packet as the quiet begins, then one every keep-alive period.
        self._quiet_ticks += 1
        if self._quiet_ticks == 1 or self._quiet_ticks > self._keepalive_ticks:
            self._quiet_ticks = 1
            return self._dtx_packet
        return None

    def _packet(self, payload: bytes) -> av.Packet:
        packet = av.Packet(payload)
        packet.pts = round((self._due - self._origin) * RTP_CLOCK)
        packet.time_base = RTP_TIME_BASE
        self._sent_due = self._due
        if payload is not self._dtx_packet:
            self._quiet_ticks = 0
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
        self._encoded_pts += frame.samples
        # PyAV's stub says bytes, but any buffer works: a bytes copy per frame is
        # exactly the allocation this path avoids.
        frame.planes[0].update(pcm)  # type: ignore[arg-type]
        payload = None
        for packet in encoder.encode(frame):
            payload = bytes(packet)
        return payload


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
