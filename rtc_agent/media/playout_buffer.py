"""The reply audio waiting to be played, and the books barge-in needs. No I/O.

`PlayoutBuffer` holds pcm16 24 kHz audio of assistant items, bounded, and hands
it out one 20 ms frame at a time into a caller-owned scratch buffer (no
per-frame allocation). It knows which item is on air and how many milliseconds
of it have gone out, and reports an item's start and end through callbacks, so
any transport that sends 20 ms frames (aiortc's track today) can reuse it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rtc_agent.protocol import BYTES_PER_MS

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 960: 480 samples of pcm16 at 24 kHz


@dataclass(slots=True)
class Flushed:
    """What was on air when the buffer was flushed."""

    item_id: str | None
    sent_ms: float


class _Segment:
    """One enqueued chunk and how much of it has been handed out."""

    __slots__ = ("data", "item_id", "offset")

    def __init__(self, item_id: str, data: bytes) -> None:
        self.item_id = item_id
        self.data = data
        self.offset = 0


class PlayoutBuffer:
    """Bounded queue of item audio, drained in 20 ms frames, with played-ms accounting."""

    def __init__(
        self,
        *,
        max_buffer_ms: int = 120_000,
        on_item_started: Callable[[str], None] | None = None,
        on_item_finished: Callable[[str, float], None] | None = None,
    ) -> None:
        self._segments: deque[_Segment] = deque()
        self._buffered = 0
        self._max_bytes = max_buffer_ms * BYTES_PER_MS
        self._complete: set[str] = set()
        self._current: str | None = None
        self._sent_bytes = 0
        self._on_started = on_item_started
        self._on_finished = on_item_finished
        self.dropped_ms = 0.0

    @property
    def buffered_ms(self) -> float:
        return self._buffered / BYTES_PER_MS

    @property
    def current_item(self) -> str | None:
        return self._current

    @property
    def sent_ms(self) -> float:
        """How much of the current item has been handed out."""
        return self._sent_bytes / BYTES_PER_MS

    def enqueue(self, item_id: str, pcm: bytes) -> None:
        """Queue audio of an assistant item; beyond the bound it is dropped, counted."""
        if self._buffered + len(pcm) > self._max_bytes:
            self.dropped_ms += len(pcm) / BYTES_PER_MS
            return
        self._segments.append(_Segment(item_id, pcm))
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

    def fill(self, frame: bytearray) -> int:
        """Copy the next frame of audio into `frame` (one frame: 20 ms, or 10 ms for
        a track sending 10 ms packets; an even number of bytes).

        Returns how many bytes were audio; the rest of the frame is zeroed when
        some audio was copied, and left as it was when none was. An item always
        starts on a frame boundary, so each frame belongs to one item.
        """
        filled = 0
        size = len(frame)
        segments = self._segments
        while filled < size and segments:
            segment = segments[0]
            if segment.item_id != self._current:
                if filled:
                    break
                if self._current is not None:
                    self._finish_current()
                self._current = segment.item_id
                self._sent_bytes = 0
                if self._on_started:
                    self._on_started(segment.item_id)
            data, offset = segment.data, segment.offset
            n = min(size - filled, len(data) - offset)
            frame[filled : filled + n] = data[offset : offset + n]
            filled += n
            segment.offset = offset + n
            if segment.offset >= len(data):
                segments.popleft()
        if filled:
            self._buffered -= filled
            self._sent_bytes += filled
            if filled < size:
                frame[filled:] = bytes(size - filled)
        if not segments and self._current in self._complete:
            self._finish_current()
        return filled

    def _finish_current(self) -> None:
        item_id, sent = self._current, self._sent_bytes / BYTES_PER_MS
        self._current = None
        self._sent_bytes = 0
        if item_id is not None:
            self._complete.discard(item_id)
            if self._on_finished:
                self._on_finished(item_id, sent)
