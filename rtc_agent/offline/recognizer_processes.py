"""Speech recognition in worker processes of the offline backend.

pocketsphinx holds the GIL while it decodes (one three-second question: ~0.5 s), so
a decode in a thread stalls the backend's event loop, which scores the VAD: a turn
that ended during a (speculative) recognition was declared when the decode let go,
up to ~340 ms late. Decoding in processes of their own stalls nothing.

Each worker is `python -m rtc_agent.offline.recognizer_processes`, fed on its stdin
and answering on its stdout, one utterance at a time: a request is a header
(`<IIB`: sample rate, byte count, which pass) and pcm16 mono; an answer is a header
(`<BdI`: ok, score, byte count) and UTF-8 text (the words, or the error). Plain
subprocesses rather than multiprocessing: nothing of the backend's `__main__` is
imported again, and no process with threads is forked.

When a second worker is idle, an utterance's two passes (language model, then the
arithmetic grammar when the words could be a sum: `asr.py`) run at once, one in
each, and the words are chosen as one process would: the turn's reply waits for the
longer pass, not the sum of both (the grammar's pass is ~90 ms of a ~450 ms decode).

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
from rtc_agent.offline.asr import PocketsphinxRecognizer, choose_reading

log = logging.getLogger(__name__)

REQUEST = struct.Struct("<IIB")  # sample rate, pcm byte count, pass
ANSWER = struct.Struct("<BdI")  # ok, score, text byte count
BOTH_PASSES, LANGUAGE_MODEL, GRAMMAR = 0, 1, 2  # what a request asks for
_SEARCH = {LANGUAGE_MODEL: "_default", GRAMMAR: "arithmetic"}  # pocketsphinx's names
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # far above the backend's longest buffer (60 s)
BORROW_RECHECK_S = 0.5  # a thread waiting for a worker looks again this often


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
        self.receive()

    def send(self, audio: bytes, rate: int, what: int) -> None:
        try:
            self._in.write(REQUEST.pack(rate, len(audio), what))
            self._in.write(audio)
            self._in.flush()
        except OSError as exc:  # BrokenPipeError: it died before reading
            raise RecognizerDied(str(exc)) from exc

    def receive(self) -> tuple[bool, str, float]:
        """The answer: ok, then the words and their score (or the error and -inf)."""
        try:
            ok, score, n = ANSWER.unpack(_read_exactly(self._out, ANSWER.size))
            text = _read_exactly(self._out, n).decode()
        except (OSError, EOFError) as exc:
            raise RecognizerDied(f"exit status {self.proc.poll()}") from exc
        return bool(ok), text, score

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

    def __init__(self, processes: int = 2, on_restart: Callable[[int], None] | None = None,
                 split_passes: bool = True) -> None:
        self.pool_size = processes
        self.split_passes = split_passes
        self.restarts = 0
        self._on_restart = on_restart
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def _idle_worker(self) -> _Worker | None:
        """An idle live worker, if there is one now."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return None
            if worker.proc.poll() is None:
                return worker
            self._discard(worker)  # died while idle

    def _borrow(self) -> _Worker:
        """An idle worker, or a new one while the pool has room; else wait for one.
        The wait looks again now and then: a worker another thread discarded leaves
        room for a new one, and nobody would hand it back."""
        while True:
            worker = self._idle_worker()
            if worker is not None:
                return worker
            with self._lock:
                if self._closed:
                    raise RuntimeError("the recognizer processes were closed")
                if len(self._workers) < self.pool_size:
                    worker = _Worker()
                    self._workers.append(worker)
            if worker is not None:
                try:
                    worker.ready()
                except BaseException:
                    self._discard(worker)
                    raise
                return worker
            try:
                worker = self._idle.get(timeout=BORROW_RECHECK_S)
            except queue.Empty:
                continue
            if worker.proc.poll() is None:
                return worker
            self._discard(worker)  # died while idle

    def _discard(self, worker: _Worker) -> None:
        """Stop a worker and forget it; the next utterance that needs one starts it.
        One that exited on its own with an error (a crash, a kill) counts as a restart;
        one stopped here mid-answer (its pipe out of step) exits cleanly at EOF."""
        worker.stop()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            dead = worker.proc.returncode != 0
            self.restarts += dead
            restarts = self.restarts
        if dead:
            log.error("a speech recognition process died (exit status %s); it is "
                      "started again (restart %d)", worker.proc.returncode, restarts)
            if self._on_restart is not None:
                self._on_restart(restarts)

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str:
        audio = pcm if isinstance(pcm, bytes) else as_int16(pcm).tobytes()
        for attempt in range(2):  # a worker that dies on an utterance gets one retry
            workers = [self._borrow()]
            spare = self._idle_worker() if self.split_passes else None
            if spare is not None:
                workers.append(spare)
            try:
                if spare is None:
                    workers[0].send(audio, rate, BOTH_PASSES)
                else:
                    workers[0].send(audio, rate, LANGUAGE_MODEL)
                    spare.send(audio, rate, GRAMMAR)
                answers = [w.receive() for w in workers]
            except BaseException as exc:  # dead, or interrupted with its pipe out of step
                for w in workers:
                    self._discard(w)
                if isinstance(exc, RecognizerDied) and not attempt:
                    continue
                raise
            for w in workers:
                self._idle.put(w)
            ok, text, score = answers[0]
            if not ok:
                raise RecognitionFailed(text)
            if spare is None:
                return text
            g_ok, g_text, g_score = answers[1]
            return choose_reading((text, score), (g_text, g_score) if g_ok else None)
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
    recognizer = PocketsphinxRecognizer(pool_size=1)
    recognizer.warm()

    def answer(ok: bool, text: str, score: float) -> None:
        data = text.encode()
        answers.write(ANSWER.pack(ok, score, len(data)))
        answers.write(data)
        answers.flush()

    answer(True, "", 0.0)  # ready
    while True:
        try:
            rate, n, what = REQUEST.unpack(_read_exactly(requests, REQUEST.size))
            if n > MAX_REQUEST_BYTES or what not in (BOTH_PASSES, *_SEARCH):
                raise ValueError(f"a request of {n} bytes for {what}")
            audio = _read_exactly(requests, n)
        except (EOFError, ValueError):
            return  # the backend closed our stdin (it is stopping, or gone), or is out of step
        try:
            if what == BOTH_PASSES:
                ok, text, score = True, recognizer.transcribe(audio, rate), 0.0
            else:
                ok, (text, score) = True, recognizer.decode(audio, rate, _SEARCH[what])
        except Exception as exc:  # reported to the backend, which reports it on
            ok, text, score = False, f"{type(exc).__name__}: {exc}", float("-inf")
        answer(ok, text, score)


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
