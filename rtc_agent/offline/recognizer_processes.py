"""Speech recognition in worker processes of the offline backend.

pocketsphinx holds the GIL while it decodes (one three-second question: ~0.5 s), so
a decode in a thread stalls the backend's event loop, which scores the VAD: a turn
that ended during a (speculative) recognition was declared when the decode let go,
up to ~340 ms late. Decoding in processes of their own stalls nothing.

Each worker is `python -m rtc_agent.offline.recognizer_processes`, fed on its stdin
and answering on its stdout, one utterance at a time: a request is a header
(`<II`: sample rate, byte count) and pcm16 mono; an answer is a header (`<BI`: ok,
byte count) and UTF-8 text (the words, or the error). Plain subprocesses rather than
multiprocessing: nothing of the backend's `__main__` is imported again, and no
process with threads is forked.

The workers are supervised: one that dies is started again, the recognition it was
running is tried once more, and `restarts` counts the restarts (the backend reports
them to its parent for `/healthz`). A worker exits when the backend does, however
the backend ends: its stdin, which only the backend holds, reaches EOF.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

import numpy as np

from rtc_agent.media.pcm import as_int16

log = logging.getLogger(__name__)

REQUEST = struct.Struct("<II")  # sample rate, pcm byte count
ANSWER = struct.Struct("<BI")  # ok, text byte count
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # far above the backend's longest buffer (60 s)
START_TIMEOUT_S = 60.0


class RecognizerDied(RuntimeError):
    """A worker ended (or never became ready) while it had an utterance to answer."""


class RecognitionFailed(RuntimeError):
    """The worker's recogniser raised; the worker itself carries on."""


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError
    return data


class _Worker:
    """One recognition process, used by one thread at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtc_agent.offline.recognizer_processes"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout

    def ready(self) -> None:
        """Wait for the worker's first answer: it has loaded its models."""
        self._answer()

    def transcribe(self, audio: bytes, rate: int) -> str:
        try:
            self._in.write(REQUEST.pack(rate, len(audio)))
            self._in.write(audio)
            self._in.flush()
        except OSError as exc:  # BrokenPipeError: it died before reading
            raise RecognizerDied(str(exc)) from exc
        return self._answer()

    def _answer(self) -> str:
        try:
            ok, n = ANSWER.unpack(_read_exactly(self._out, ANSWER.size))
            text = _read_exactly(self._out, n).decode()
        except (OSError, EOFError) as exc:
            raise RecognizerDied(f"exit status {self.proc.poll()}") from exc
        if not ok:
            raise RecognitionFailed(text)
        return text

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()  # EOF: it exits after the utterance it is on
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()


class RecognizerProcesses:
    """A `Recognizer` whose decodes run in supervised worker processes.

    `transcribe` blocks until a worker answers (call it from a thread, as the
    backend's driver does; reading the pipe does not hold the GIL). Workers start
    on first use, or all at once with `warm`.
    """

    def __init__(self, processes: int = 2,
                 on_restart: Callable[[int], None] | None = None) -> None:
        self.pool_size = processes
        self.restarts = 0
        self._on_restart = on_restart
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def _borrow(self) -> _Worker:
        while True:
            try:
                idle = self._idle.get_nowait()
            except queue.Empty:
                break
            if idle.proc.poll() is None:
                return idle
            self._discard(idle)  # died while idle
        with self._lock:
            if self._closed:
                raise RuntimeError("the recognizer processes were closed")
            start = len(self._workers) < self.pool_size
            if start:
                worker = _Worker()
                self._workers.append(worker)
        if not start:
            return self._idle.get()
        try:
            worker.ready()
        except RecognizerDied:
            self._discard(worker)
            raise
        except BaseException:
            self._discard(worker, dead=False)
            raise
        return worker

    def _discard(self, worker: _Worker, dead: bool = True) -> None:
        """Stop a worker and forget it; the next utterance that needs one starts it."""
        worker.stop()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if dead:
                self.restarts += 1
            restarts = self.restarts
        if dead:
            log.error("a speech recognition process died (exit status %s); it is "
                      "started again (restart %d)", worker.proc.returncode, restarts)
            if self._on_restart is not None:
                self._on_restart(restarts)

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str:
        audio = pcm if isinstance(pcm, bytes) else as_int16(pcm).tobytes()
        for attempt in range(2):  # a worker that dies on an utterance gets one retry
            worker = self._borrow()
            try:
                text = worker.transcribe(audio, rate)
            except RecognitionFailed:
                self._idle.put(worker)
                raise
            except RecognizerDied:
                self._discard(worker)
                if attempt:
                    raise
                continue
            except BaseException:  # interrupted mid-exchange: its pipe is out of step
                self._discard(worker, dead=False)
                raise
            self._idle.put(worker)
            return text
        raise AssertionError("unreachable")

    def warm(self) -> None:
        """Start every worker now (each loads the language model, ~0.5 s)."""
        workers: list[_Worker] = []
        try:
            for _ in range(self.pool_size):
                workers.append(self._borrow())
        finally:
            for worker in workers:
                self._idle.put(worker)

    def worker_pids(self) -> list[int]:
        """The workers' pids (for tests and diagnostics)."""
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stop the workers (each finishes the utterance it is on)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The worker's loop: one utterance in, its words out, until EOF."""
    from rtc_agent.offline.asr import PocketsphinxRecognizer

    recognizer = PocketsphinxRecognizer(pool_size=1)
    recognizer.warm()
    answers.write(ANSWER.pack(1, 0))  # ready
    answers.flush()
    while True:
        try:
            rate, n = REQUEST.unpack(_read_exactly(requests, REQUEST.size))
            if n > MAX_REQUEST_BYTES:
                raise ValueError(f"request of {n} bytes")
            audio = _read_exactly(requests, n)
        except (EOFError, ValueError):
            return  # the backend closed our stdin (it is stopping, or gone), or is out of step
        try:
            ok, text = 1, recognizer.transcribe(audio, rate)
        except Exception as exc:  # reported to the backend, which reports it on
            ok, text = 0, f"{type(exc).__name__}: {exc}"
        data = text.encode()
        answers.write(ANSWER.pack(ok, len(data)))
        answers.write(data)
        answers.flush()


def main() -> None:
    # Our stdout is the answer pipe; anything else printing to fd 1 (a C library)
    # must not corrupt it, so fd 1 becomes stderr and the pipe gets an fd of its own.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    import signal

    # A Ctrl-C or a group signal is the backend's to handle: it stops us when it ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
