"""Agent audio out: the outbound track that paces the model's reply to the caller.

The Realtime service sends reply audio faster than real time; this track holds
it in a bounded buffer and releases one 20 ms frame per tick, sending silence
when idle. It encodes Opus itself, straight from the service's 24 kHz pcm16,
and hands aiortc ready packets: no 24->48 kHz resample, no thread-pool hop, and
no pure-Python audio-level loop (aiortc runs that only on raw frames). Idle
ticks reuse one pre-encoded silence packet.

It also keeps the books barge-in needs: which assistant item is on air and how
many milliseconds of it have actually been sent.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtc_agent.media import opus
from rtc_agent.media.opus import silence_packet
from rtc_agent.protocol import BYTES_PER_MS, REALTIME_RATE

RATE = REALTIME_RATE
FRAME_SAMPLES = 480  # 20 ms at 24 kHz
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_S = 0.020
RTP_CLOCK = 48000  # Opus RTP timestamps always count at 48 kHz
RTP_STEP = 960
RTP_TIME_BASE = fractions.Fraction(1, RTP_CLOCK)
WARMUP_SILENCE_FRAMES = 5  # encode a few real silent frames so the codec state decays


@dataclass(slots=True)
class Flushed:
    """What was on air when the buffer was flushed."""

    item_id: str | None
    sent_ms: float


class PlayoutTrack(MediaStreamTrack):
    """An audio track fed with pcm16 24 kHz chunks, paced at 20 ms frames."""

    kind = "audio"

    def __init__(
        self,
        *,
        max_buffer_ms: int = 120_000,
        on_item_started: Callable[[str], None] | None = None,
        on_item_finished: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._silence = silence_packet()
        self._encoder = opus.encoder(RATE, 32000)
        self._frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        self._frame.sample_rate = RATE
        self._scratch = bytearray(FRAME_BYTES)
        self._segments: deque[list] = deque()  # [item_id, bytes, offset]
        self._buffered = 0
        self._max_bytes = max_buffer_ms * BYTES_PER_MS
        self._complete: set[str] = set()
        self._current: str | None = None
        self._sent_bytes = 0
        self._on_started = on_item_started
        self._on_finished = on_item_finished
        self._clock = clock
        self._start: float | None = None
        self._ticks = 0
        self._timestamp = 0
        self._encoded_pts = 0
        self._quiet_frames = WARMUP_SILENCE_FRAMES
        self.dropped_ms = 0.0
        self.late_frames = 0

    # ------------------------------------------------------------ feeding

    @property
    def buffered_ms(self) -> float:
        return self._buffered / BYTES_PER_MS

    @property
    def current_item(self) -> str | None:
        return self._current

    def enqueue(self, item_id: str, pcm: bytes) -> None:
        """Queue audio of an assistant item; beyond the bound it is dropped, counted."""
        if self._buffered + len(pcm) > self._max_bytes:
            self.dropped_ms += len(pcm) / BYTES_PER_MS
            return
        self._segments.append([item_id, pcm, 0])
        self._buffered += len(pcm)

    def end_item(self, item_id: str) -> None:
        """No more audio will come for `item_id`."""
        self._complete.add(item_id)
        if item_id == self._current and not self._segments:
            self._finish_current()

    def flush(self) -> Flushed:
        """Drop everything queued; the next frame is silence. Report what was on air."""
        flushed = Flushed(self._current, self._sent_bytes / BYTES_PER_MS)
        self._segments.clear()
        self._buffered = 0
        self._current = None
        self._sent_bytes = 0
        self._complete.clear()
        return flushed

    # ------------------------------------------------------------ sending

    def _finish_current(self) -> None:
        item_id, sent = self._current, self._sent_bytes / BYTES_PER_MS
        self._current = None
        self._sent_bytes = 0
        if item_id is not None:
            self._complete.discard(item_id)
            if self._on_finished:
                self._on_finished(item_id, sent)

    def _fill(self) -> int:
        """Copy up to one frame of the current item's audio into the scratch buffer."""
        filled = 0
        scratch = self._scratch
        while filled < FRAME_BYTES and self._segments:
            segment = self._segments[0]
            item_id = segment[0]
            if item_id != self._current:
                if filled:
                    break  # an item starts on a frame boundary
                if self._current is not None:
                    self._finish_current()
                self._current = item_id
                self._sent_bytes = 0
                if self._on_started:
                    self._on_started(item_id)
            data, offset = segment[1], segment[2]
            n = min(FRAME_BYTES - filled, len(data) - offset)
            scratch[filled : filled + n] = data[offset : offset + n]
            filled += n
            segment[2] = offset + n
            if segment[2] >= len(data):
                self._segments.popleft()
        if filled:
            self._buffered -= filled
            self._sent_bytes += filled
            if filled < FRAME_BYTES:
                scratch[filled:] = bytes(FRAME_BYTES - filled)
        if not self._segments and self._current in self._complete:
            self._finish_current()
        return filled

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
        filled = self._fill()
        payload: bytes | None = None
        if filled:
            self._quiet_frames = 0
            payload = self._encode(self._scratch)
        elif self._quiet_frames < WARMUP_SILENCE_FRAMES:
            self._quiet_frames += 1
            self._scratch[:] = bytes(FRAME_BYTES)
            payload = self._encode(self._scratch)
        packet = av.Packet(payload or self._silence)
        packet.pts = self._timestamp
        packet.time_base = RTP_TIME_BASE
        self._timestamp += RTP_STEP
        return packet

    def _encode(self, pcm: bytearray) -> bytes | None:
        frame = self._frame
        frame.pts = self._encoded_pts
        self._encoded_pts += FRAME_SAMPLES
        frame.planes[0].update(pcm)
        payload = None
        for packet in self._encoder.encode(frame):
            payload = bytes(packet)
        return payload
