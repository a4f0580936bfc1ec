"""Call recordings (`--record-dir`): the caller on the left, the agent on the right.

One call makes `<call_id>.ogg`, stereo Opus, and `<call_id>.json`, its transcript
and timings. The agent channel is fed from the playout track's ticks, so it is
what the caller was sent, cut where a barge-in cut it; the ticks are also the
recording's clock, and each one takes as much of the caller audio received so
far as it is long (20 ms, or 10 ms with --ptime 10) for the left channel.

Encoded at 24 kHz, the service's rate, which libopus takes as it is (it accepts
8, 12, 16, 24 and 48 kHz). Ogg Opus always counts its granule positions at
48 kHz and decoders (FFmpeg, browsers, opusdec) output 48 kHz: a decoded file
has 48 samples a channel per millisecond of ticks. 64 kbit/s for the pair: at
48 kbit/s libopus codes the bands above ~3 kHz of both channels as one
(intensity stereo), which puts each voice's upper partials into the other's
channel when both talk.

The event loop only appends bytes to buffers (~2-5 us a tick; numpy would cost
three times that). Every 200 ms of ticks it hands a batch to the process's
writer thread, which encodes, muxes and writes (~60 us a tick, without the GIL in
libopus and the muxer): encoding on the loop would cost it 12 times as much, and
a stalled disk would stall every call. Each recording may have 5 s of batches
waiting; when the writer falls further behind, batches are dropped, counted and
recorded as silence, so the timeline stays whole. Ogg pages go out at least
every 0.5 s, and the JSON is replaced atomically every 2 s when there are new
notes (every 10 s otherwise), so a killed process leaves both files readable,
missing about the last second.

The caller's audio and the ticks run on different clocks (the caller's sound
card, the network, our loop). Caller audio that piles up is delayed on the left
channel; when a backlog of 100 ms or more stands for a whole second (after a
stalled loop, whose missed ticks the playout track skips, or a burst from the
network), the recorder adds frames of agent silence until the caller has caught
up, rather than keep the caller late for the rest of the call or drop what they
said. Past `max_lag_s` (1 s) the oldest caller audio is dropped. Added and
dropped audio are counted in the JSON, and each note carries `rec_ms`, its place
in the recording.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer

from rtc_agent.protocol import BYTES_PER_MS, REALTIME_RATE

log = logging.getLogger(__name__)

RATE = REALTIME_RATE  # 24 kHz in, both channels; decoders give 48 kHz out
SAMPLES_PER_MS = RATE // 1000
FRAME_MS = 20  # a tick's length unless agent_frame is told otherwise (--ptime 10)
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # one 20 ms tick of mono pcm16
MAX_TICK_MS = 120  # Opus's longest frame; longer ticks are a caller's bug
DECODED_RATE = 48000  # what every Ogg Opus decoder outputs
BIT_RATE = 64_000  # both channels (VBR): ~17-29 MB an hour; see above for why not 48
COMPLEXITY = 5  # libopus 0-10: 58 us a tick against 70 at 10
BATCH_MS = 200  # handed to the writer at once: 5 hand-offs a second, whatever the ptime
BATCH_BYTES = BATCH_MS * BYTES_PER_MS
MAX_BATCHES_QUEUED = 25  # 5 s waiting for the writer (0.5 MB); beyond, batches are dropped
PAGE_DURATION_US = 500_000  # an Ogg page, and so a write, at least every 0.5 s
JSON_EVERY_S = 2.0  # when there are new notes
JSON_ANYWAY_S = 10.0  # to keep its duration current
MAX_NOTES_BYTES = 1 << 20  # an hour of talk is ~100 KB of transcript
RESYNC_WINDOW_MS = 1000  # how long a caller backlog must stand before it is caught up
RESYNC_MIN_BYTES = 100 * BYTES_PER_MS  # a standing backlog this long or longer is caught up
RESYNC_SLACK_BYTES = 20 * BYTES_PER_MS  # of it left standing, for jitter

_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC

_OPEN, _AUDIO, _NOTE, _CLOSE = 0, 1, 2, 3  # what the loop sends the writer thread
_ZEROS = memoryview(bytes(MAX_TICK_MS * BYTES_PER_MS))


class CallRecorder:
    """One call's recording: <dir>/<call_id>.ogg (stereo Opus) and <dir>/<call_id>.json.

    Fed on the event loop: `caller_audio` with the caller's chunks, `agent_frame`
    once per playout tick, `note` with transcript and timing entries, `close`
    at hang-up. None of them raises for a disk or codec error: the recording
    stops with one logged error and the call goes on. A recorder dropped without
    `close` is closed when it is collected: its files are finished all the same.
    """

    def __init__(self, directory: Path, call_id: str, *, max_s: float = 3600.0,
                 max_lag_s: float = 1.0) -> None:
        if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
            raise ValueError(f"a call id must match [A-Za-z0-9_-]{{1,64}}, not {call_id!r}")
        if not max_s > 0 or not max_lag_s >= FRAME_MS / 1000:
            raise ValueError("max_s must be positive and max_lag_s at least one frame")
        self.call_id = call_id
        self.audio_path = Path(directory) / f"{call_id}.ogg"
        self.json_path = Path(directory) / f"{call_id}.json"
        self._max_ms = max(1, round(max_s * 1000))
        self._first_tick_at: str | None = None

        # Plain bytearrays, no numpy (interleaving is the writer's job): caller
        # audio waits in `_caller`, at most max_lag_s of it; each tick moves a
        # tick's length of it to `_left` and the agent's frame to `_right`.
        self._caller = bytearray()
        self._max_caller = max(FRAME_BYTES, round(max_lag_s * RATE) * 2)
        self._left = bytearray()
        self._right = bytearray()
        self._ms = 0  # ticks plus resync silence: the recording's length
        self._tick_ms = FRAME_MS  # the last tick's length, and its bytes a channel
        self._tick_bytes = FRAME_BYTES
        self._window_ms = 0
        self._window_min = self._max_caller
        self._notes_bytes = 0
        self.ended: str | None = None  # why it stopped: "closed", "max_s" or "error"

        self.resync_ms = 0  # agent silence added so the caller could catch up
        self.dropped_ms = 0  # audio the writer fell too far behind for (silence instead)
        self.caller_dropped_bytes = 0  # caller audio beyond max_lag_s
        self.notes_dropped = 0

        self._writer = _Writer(call_id, self.audio_path, self.json_path)
        self._slots = self._writer.slots
        self._put = _WRITER_THREAD.start()
        self._put((self._writer, _OPEN))
        # Collected without close(): close then (the finalizer holds the writer, not self).
        self._finalizer = weakref.finalize(self, self._put,
                                           (self._writer, _CLOSE, "closed", None, None))

    # ------------------------------------------------------------ the loop's side

    @property
    def duration_s(self) -> float:
        """The recording's length so far (or final): ticks plus resync silence."""
        return self._ms / 1000

    @property
    def closed(self) -> bool:
        return self.ended is not None

    @property
    def error(self) -> str | None:
        """Why the writer gave up (a disk or codec error), if it did."""
        return self._writer.error

    def caller_audio(self, pcm: bytes | bytearray) -> None:
        """Take a chunk of the caller's 24 kHz mono pcm16, of any length (copied at once)."""
        if self.ended is not None:
            return
        try:
            self._push_caller(pcm)
        except Exception:
            self._abandon("caller audio")

    def agent_frame(self, pcm: bytes | bytearray | None, ms: int = FRAME_MS) -> None:
        """Record one playout tick of `ms` (the track's frame_ms): the pcm16 sent to the
        caller, or None for silence. The tick, not `pcm`, sets the length: a frame of
        another size is cut or padded, and a silent tick has no pcm to measure.

        `pcm` is copied before this returns, so the track's reused buffer can be passed.
        """
        if self.ended is not None:
            return
        try:
            if ms != self._tick_ms:
                self._set_tick(ms)
            if self._writer.error is not None:  # it gave up, and logged why
                self._finish("error")
                return
            if self._first_tick_at is None:
                self._first_tick_at = _now_iso()
            self._add_frame(pcm)
            self._resync()
        except Exception:
            self._abandon("agent audio")

    def note(self, entry: dict[str, Any]) -> None:
        """Add a transcript or timing entry to the JSON, with `rec_ms`: its place in the audio."""
        if self.ended is not None:
            return
        try:
            text = json.dumps({**entry, "rec_ms": self._ms}, ensure_ascii=False,
                              default=str, separators=(",", ":"))
        except (TypeError, ValueError) as exc:  # a key that is no string, a cycle
            log.debug("call %s: a note that is not JSON: %s", self.call_id, exc)
            self.notes_dropped += 1
            return
        if self._notes_bytes + len(text) > MAX_NOTES_BYTES:
            self.notes_dropped += 1
            return
        self._notes_bytes += len(text)
        self._put((self._writer, _NOTE, text))

    def close(self) -> None:
        """Finish both files; idempotent. Returns at once: the writer thread finishes them."""
        self._finish("closed")

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the writer has finished (or given up); True if it has. For tests and exit."""
        return self._writer.finished.wait(timeout)

    def _push_caller(self, pcm: bytes | bytearray) -> None:
        if len(pcm) & 1:  # never the case from inbound.py; keep the samples aligned anyway
            pcm = pcm[:-1]
        waiting = self._caller
        waiting += pcm
        excess = len(waiting) - self._max_caller
        if excess > 0:  # drop the oldest: the channels never drift apart by more than max_lag_s
            del waiting[:excess]  # O(1) at the front of a bytearray
            self.caller_dropped_bytes += excess

    def _set_tick(self, ms: int) -> None:
        if not (isinstance(ms, int) and 0 < ms <= MAX_TICK_MS):
            raise ValueError(f"a tick of {ms!r} ms")
        self._tick_ms, self._tick_bytes = ms, ms * BYTES_PER_MS

    def _add_frame(self, pcm: bytes | bytearray | None) -> None:
        """One tick: as much caller audio as it is long (silence if none) left, `pcm` right."""
        size = self._tick_bytes
        waiting = self._caller
        n = min(len(waiting), size)
        if n:
            with memoryview(waiting) as view:
                self._left += view[:n]
            del waiting[:n]
        if n < size:
            self._left += _ZEROS[:size - n]
        if pcm is not None and len(pcm) == size:
            self._right += pcm
        else:  # silence, or a frame of the wrong size: cut or padded to the tick
            m = min(len(pcm), size) & ~1 if pcm is not None else 0
            if pcm is not None and m:
                with memoryview(pcm) as view:
                    self._right += view[:m]
            self._right += _ZEROS[:size - m]
        self._ms += self._tick_ms
        if len(self._right) >= BATCH_BYTES:
            self._submit()
        if self._ms >= self._max_ms:
            log.info("call %s: recording stopped at its limit of %.0f s", self.call_id,
                     self.duration_s)
            self._finish("max_s")

    def _resync(self) -> None:
        """Catch up a caller backlog that has stood a whole second, with ticks of agent silence."""
        backlog = len(self._caller)
        if backlog < self._window_min:
            self._window_min = backlog
        self._window_ms += self._tick_ms
        if self._window_ms < RESYNC_WINDOW_MS:
            return
        standing = self._window_min
        self._window_ms, self._window_min = 0, self._max_caller
        if standing >= RESYNC_MIN_BYTES:
            # Whole ticks, so the same backlog is caught up alike at any ptime.
            for _ in range((standing - RESYNC_SLACK_BYTES) // self._tick_bytes):
                if self.ended is not None:
                    return
                self.resync_ms += self._tick_ms
                self._add_frame(None)

    def _submit(self) -> None:
        """Hand the batch to the writer; drop it (counted) when the writer is too far behind."""
        n = len(self._right) // 2  # samples a channel
        if not n:
            return
        left, right = self._left, self._right
        self._left, self._right = bytearray(), bytearray()
        if self._slots.acquire(blocking=False):
            start = self._ms * SAMPLES_PER_MS - n
            self._put((self._writer, _AUDIO, start, left, right, self._stats()))
        else:
            self.dropped_ms += n // SAMPLES_PER_MS

    def _stats(self) -> dict[str, Any]:
        return {"first_tick_at": self._first_tick_at,
                "resync_ms": self.resync_ms,
                "dropped_ms": self.dropped_ms,
                "caller_dropped_ms": self.caller_dropped_bytes // (2 * RATE // 1000),
                "notes_dropped": self.notes_dropped}

    def _finish(self, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        self._finalizer.detach()
        try:
            self._submit()
        finally:
            self._put((self._writer, _CLOSE, reason, self._ms * SAMPLES_PER_MS, self._stats()))

    def _abandon(self, what: str) -> None:
        """An unexpected error on the loop's side: log it once, stop recording; the call goes on."""
        log.exception("call %s: recording stopped (%s)", self.call_id, what)
        with contextlib.suppress(Exception):
            self._finish("error")


class _WriterThread:
    """The process's one writer thread, shared by all its recordings.

    One thread rather than one per call: with a thread per call, 50 calls took
    80-115 us of CPU a tick each for writing against 62-69 us with one, the rest
    going on wake-ups and GIL hand-offs between the writers. At ~60 us a tick
    one thread keeps up with ~300 calls, more than a worker's loop carries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> Callable[[tuple[Any, ...]], None]:
        """Start the thread if need be; returns how to send it work: (writer, kind, ...)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="call recorder",
                                                daemon=True)
                self._thread.start()
        return self._queue.put

    def _run(self) -> None:
        open_writers: set[_Writer] = set()
        next_sweep = time.monotonic() + 1.0
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    writer: _Writer = item[0]
                    writer.handle(item)
                    if writer.finished.is_set():
                        open_writers.discard(writer)
                    else:
                        open_writers.add(writer)
                now = time.monotonic()
                if now >= next_sweep:  # JSON of quiet recordings
                    for writer in open_writers:
                        writer.sweep(now)
                    next_sweep = now + 1.0
            except Exception:  # a bug: never let it end the thread every recording needs
                log.exception("call recorder: unexpected error")


class _Writer:
    """One recording's files, written on the writer thread.

    It holds no reference to its recorder, so a recorder dropped without `close`
    can be collected, and its finalizer sends the close.
    """

    def __init__(self, call_id: str, audio_path: Path, json_path: Path) -> None:
        self.call_id = call_id
        self.audio_path = audio_path
        self.json_path = json_path
        self.slots = threading.BoundedSemaphore(MAX_BATCHES_QUEUED)  # audio batches in flight
        self.error: str | None = None
        self.finished = threading.Event()
        self._opus: _OpusFile | None = None
        self._started_at = _now_iso()
        self._entries: list[str] = []
        self._stats: dict[str, Any] = {}
        self._last_json = 0.0
        self._dirty = False

    def handle(self, item: tuple[Any, ...]) -> None:
        kind = item[1]
        if self.finished.is_set():  # closed or failed: nothing more is written
            if kind == _AUDIO:
                self.slots.release()
            return
        try:
            if kind == _OPEN:
                self._opus = _OpusFile(self.audio_path)
                self._write_json(None)
            elif kind == _AUDIO:
                try:
                    self._file().write_frames(item[2], item[3], item[4])
                    self._stats = item[5]
                finally:
                    self.slots.release()
            elif kind == _NOTE:
                self._entries.append(item[2])
                self._dirty = True
            elif kind == _CLOSE:
                _, _, reason, samples, stats = item
                self._stats = stats or self._stats
                opus = self._file()
                opus.close(total_samples=opus.samples if samples is None else samples)
                self._write_json(reason)
                self._opus = None
                self.finished.set()
                return
            self.sweep(time.monotonic())
        except Exception as exc:
            self._fail(exc)

    def sweep(self, now: float) -> None:
        """Replace the JSON if there are new notes (every 2 s at most) or 10 s have passed."""
        since = now - self._last_json
        if self._opus is None or not ((self._dirty and since >= JSON_EVERY_S)
                                      or since >= JSON_ANYWAY_S):
            return
        try:
            self._write_json(None)
        except Exception as exc:
            self._fail(exc)

    def _file(self) -> _OpusFile:
        if self._opus is None:
            raise RuntimeError("the audio file is not open")
        return self._opus

    def _fail(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("call %s: recording stopped: %s", self.call_id, self.error)
        if self._opus is not None:
            self._opus.abort()
            self._opus = None
        self.finished.set()

    def _write_json(self, ended: str | None) -> None:
        samples = self._opus.samples if self._opus is not None else 0
        head = {
            "call_id": self.call_id,
            "audio": {"file": self.audio_path.name, "codec": "opus", "container": "ogg",
                      "channels": {"left": "caller", "right": "agent"},
                      "encoded_rate": RATE, "decoded_rate": DECODED_RATE},
            "started_at": self._started_at,
            "first_tick_at": None,
            "complete": ended is not None,
            "ended": ended,
            "duration_ms": samples // SAMPLES_PER_MS,
            "resync_ms": 0, "dropped_ms": 0, "caller_dropped_ms": 0, "notes_dropped": 0,
        }
        head.update(self._stats)
        text = json.dumps(head, ensure_ascii=False)[:-1] + ',"entries":['
        _replace(self.json_path, (text + ",".join(self._entries) + "]}\n").encode())
        self._last_json, self._dirty = time.monotonic(), False


class _OpusFile:
    """Stereo s16 at 24 kHz into Ogg Opus, written to a 0600 file as each page completes.

    PyAV's muxer writes into `write` (this object is its file); `_drain` puts
    the bytes on disk with plain os.write, so an I/O error is an ordinary OSError
    here rather than a code from FFmpeg's file protocol.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, _CREATE | os.O_EXCL, 0o600)  # never an existing file or link
        self._pending = bytearray()
        self.samples = 0  # a channel, encoded so far
        try:
            self._container: OutputContainer = av.open(
                self, "w", format="ogg", buffer_size=16384,
                container_options={"page_duration": str(PAGE_DURATION_US), "flush_packets": "1"})
            stream = self._container.add_stream("libopus", rate=RATE, layout="stereo")
            if not isinstance(stream, AudioStream):
                raise TypeError(f"libopus gave a {type(stream).__name__}")
            stream.codec_context.format = "s16"
            stream.codec_context.bit_rate = BIT_RATE
            stream.codec_context.options = {"application": "audio",
                                            "compression_level": str(COMPLEXITY)}
            self._stream = stream
        except Exception:
            os.close(self._fd)
            raise

    def write(self, data: bytes) -> int:
        """Called by the muxer with the file's next bytes."""
        self._pending += data
        return len(data)

    def write_frames(self, start: int, left: bytes | bytearray,
                     right: bytes | bytearray) -> None:
        """Encode mono pcm16 channels that begin at sample `start`; a gap before them is silence."""
        if start > self.samples:
            self._silence(start - self.samples)
        samples = len(right) // 2
        stereo = np.empty((samples, 2), dtype=np.int16)
        stereo[:, 0] = np.frombuffer(left, dtype="<i2", count=samples)
        stereo[:, 1] = np.frombuffer(right, dtype="<i2", count=samples)
        frame = av.AudioFrame.from_ndarray(stereo.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = start
        self._container.mux(self._stream.encode(frame))
        self.samples = start + samples
        self._drain()

    def _silence(self, samples: int) -> None:
        while samples > 0:
            n = min(samples, BATCH_MS * SAMPLES_PER_MS)
            zeros = bytes(n * 2)
            self.write_frames(self.samples, zeros, zeros)
            samples -= n

    def close(self, total_samples: int) -> None:
        """Pad to `total_samples` with silence (batches dropped at the end); add the trailer."""
        self._silence(total_samples - self.samples)
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._drain()
        os.close(self._fd)
        self._fd = -1

    def abort(self) -> None:
        """Give up after an error: free the encoder and the descriptor, write nothing more."""
        with contextlib.suppress(Exception):
            self._container.close()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _drain(self) -> None:
        if not self._pending:
            return
        with memoryview(self._pending) as view:
            done = 0
            while done < len(view):
                done += os.write(self._fd, view[done:])
        self._pending.clear()


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a crash leaves the previous version, never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, _CREATE | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # even if an old temporary file had other modes
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_WRITER_THREAD = _WriterThread()
