"""Drives one Conversation with real engines and asyncio, independent of the socket.

The server hands every client frame to `SessionDriver.handle_frame` and gives it a
`send` coroutine for server events. The driver carries out the conversation's outputs
in order: events go to `send`; speech detection runs inline on the loop for ordinary
appends (a 20 ms chunk costs ~50 us) and in the default executor only for large ones;
recognition runs on the engines' own threads, synthesis in the default executor, each
response's generation in its own task. Conversation state is only touched on the
event-loop thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rtc_agent.offline.asr import Recognizer
from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.outputs import (
    CancelResponse,
    DetectSpeech,
    Emit,
    Output,
    Recognize,
    StartResponse,
)
from rtc_agent.offline.responder import FunctionCall, Responder
from rtc_agent.offline.tts import Synthesizer
from rtc_agent.offline.vad import SpeechDetector
from rtc_agent.offline.validation import ProtocolError
from rtc_agent.protocol import BYTES_PER_MS, REALTIME_RATE

# Appends up to this size run VAD on the loop (measured: 50 us of CPU per 20 ms
# chunk inline, 139 us through the default executor); larger ones use a thread.
INLINE_VAD_BYTES = 200 * BYTES_PER_MS
# Sentences of one reply synthesised ahead of the one being sent. Synthesis shares the
# loop's default executor with every session, so a long reply (or several out-of-band
# ones) queues only this many, never the whole reply, ahead of another caller's turn.
SYNTHESIS_LOOKAHEAD = 2
REPLY_QUEUE = 64  # reply parts (text, calls, sentences) waiting for the sender
# User items of one session waiting for recognition; past this, new ones fail at once
# (input_audio_transcription.failed) instead of queueing work on the shared ASR threads.
MAX_PENDING_RECOGNITIONS = 8

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(.+?[.!?;:])(\s+|$)", re.S)


@dataclass
class Engines:
    """The speech engines and the brain a session uses (fakes in unit tests)."""

    synthesizer: Synthesizer
    recognizer: Recognizer
    responder: Responder
    detector_factory: Callable[[], SpeechDetector]  # one detector per session (it has state)
    # Recognition gets threads of its own (each waits on a recognition process): a
    # queue of slow decodes must never hold up synthesis or the scoring of large
    # appends, which use the loop's default executor.
    asr_executor: Executor | None = None


@dataclass
class Limits:
    max_message_bytes: int = 16 * 1024 * 1024
    max_buffer_s: float = 60.0
    # Reply audio is sent faster than real time, as the cloud does, but paced: at most
    # audio_lead_ms + audio_speed x elapsed. A long reply thus stays "in progress" long
    # enough for server-side barge-in; audio_lead_ms 0 disables pacing.
    audio_lead_ms: int = 2000
    audio_speed: float = 2.0
    recognition_wait_s: float = 30.0


@dataclass
class Stats:
    """Per-session counters the benchmark and tests read."""

    responses: int = 0
    speculative_hits: int = 0  # turns whose recognition had started before the commit
    first_audio_s: list[float] = field(default_factory=list)


def _reject_constant(name: str) -> float:
    """NaN and the infinities are not JSON, though Python's json reads them."""
    raise ValueError(f"'{name}' is not a valid JSON value")


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences at the start of text, and the unfinished rest."""
    sentences, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end(2) == len(text) and not m.group(2):
            break  # "Hello." at the very end might still be "Hello.5" mid-stream
        sentences.append(m.group(1).strip())
        pos = m.end()
    return sentences, text[pos:]


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Call:
    call: FunctionCall


@dataclass(frozen=True)
class _Speech:
    sentence: str
    pcm: asyncio.Future[bytes]  # its synthesis, running in the default executor


_ReplyPart = _Text | _Call | _Speech  # what the generator queues for the sender, in order


class SessionDriver:
    def __init__(
        self,
        conversation: Conversation,
        engines: Engines,
        send: Callable[[list[dict[str, Any]]], Awaitable[None]],
        limits: Limits | None = None,
    ) -> None:
        self.conv = conversation
        self.engines = engines
        self.send = send
        self.limits = limits or Limits()
        self.stats = Stats()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._heard: dict[str, asyncio.Future[str | None]] = {}
        self._speculative: dict[tuple[int, int], asyncio.Future[str]] = {}
        self._guessing: set[asyncio.Future[str]] = set()
        self._detector: SpeechDetector | None = None  # made on the first scored append
        self._loop = asyncio.get_running_loop()
        self._closed = False

    async def start(self) -> None:
        await self.run(self.conv.created())

    async def close(self) -> None:
        self._closed = True
        for fut in self._speculative.values():
            fut.cancel()
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def expire(self) -> None:
        """The session hit its maximum duration: stop generating, then say why."""
        await self.close()  # stop generating before the last word
        await self.run(self.conv.expire())

    async def run(self, outputs: Sequence[Output]) -> None:
        """Carry out the conversation's outputs in order (consecutive events in one send)."""
        events: list[dict[str, Any]] = []
        for out in outputs:
            if isinstance(out, Emit):
                events.append(out.event)
                continue
            if events:
                await self.send(events)
                events = []
            if isinstance(out, DetectSpeech):
                await self.run(await self._detect_speech(out))
            else:
                self._start(out)
        if events:
            await self.send(events)

    async def _error(self, code: str, message: str) -> None:
        await self.run(self.conv.error(ProtocolError(code, message)))

    # --- client frames ---------------------------------------------------------------

    async def handle_frame(self, frame: str | bytes) -> None:
        """One WebSocket data frame from the client."""
        if isinstance(frame, bytes | bytearray):
            await self._error("invalid_event",
                              "Expected a text WebSocket message; binary frames are not supported.")
            return
        if len(frame) > self.limits.max_message_bytes:
            await self._error(
                "message_too_large",
                f"The message has {len(frame)} bytes; the limit is "
                f"{self.limits.max_message_bytes} bytes.",
            )
            return
        try:
            event = json.loads(frame, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # RecursionError: deep nesting
            await self._error("invalid_json", f"Invalid event: failed to parse JSON value. {exc}")
            return
        try:
            outputs = self.conv.handle(event)
        except Exception:  # a bug in the core must not end the session: say so, go on
            log.exception("unexpected failure handling a client event")
            await self.run(self.conv.error(ProtocolError(
                "server_error", "The server had an error while processing your request.",
                type_="server_error"), event.get("event_id") if isinstance(event, dict) else None))
            return
        await self.run(outputs)

    async def _detect_speech(self, request: DetectSpeech) -> list[Output]:
        if self._detector is None:  # loading the model takes a while: not on the loop
            self._detector = await self._loop.run_in_executor(None, self.engines.detector_factory)
        elif request.restart:
            self._detector.reset()
        detector = self._detector
        if len(request.pcm) <= INLINE_VAD_BYTES:
            # A 20 ms chunk costs silero ~50 us; a thread hop would cost ~90 us more.
            probabilities = detector.probabilities(request.pcm)
        else:
            probabilities = await self._loop.run_in_executor(
                None, detector.probabilities, request.pcm)
        return self.conv.append_audio(request.pcm, probabilities, detector.window_ms)

    # --- actions -----------------------------------------------------------------------

    def _start(self, action: Recognize | StartResponse | CancelResponse) -> None:
        if isinstance(action, Recognize) and action.speculative:
            assert action.key is not None
            if len(self._guessing) + len(self._heard) >= MAX_PENDING_RECOGNITIONS:
                # A guess only: the commit recognises the turn anyway. Semantic VAD,
                # waiting for the words, hears there are none and judges by silence.
                if action.report:
                    self._spawn(self.run(self.conv.heard_so_far(action.key, None)))
                return
            guess = self._loop.run_in_executor(
                self.engines.asr_executor, self.engines.recognizer.transcribe,
                action.audio, REALTIME_RATE)
            self._guessing.add(guess)  # running guesses, even those no longer wanted
            guess.add_done_callback(self._guessing.discard)
            if action.report:
                guess.add_done_callback(partial(self._report, action.key))
            self._speculative[action.key] = guess
            while len(self._speculative) > 4:  # stale guesses (the user spoke on)
                self._speculative.pop(next(iter(self._speculative)))
        elif isinstance(action, Recognize) and len(self._heard) >= MAX_PENDING_RECOGNITIONS:
            self._spawn(self.run(self.conv.transcription_done(
                action.item_id, None, action.emit_events,
                "Too many items are waiting for transcription in this session.")))
        elif isinstance(action, Recognize):
            self._heard[action.item_id] = self._loop.create_future()
            early = self._speculative.pop(action.key, None) if action.key else None
            self._spawn(self._recognize(action, early))
        elif isinstance(action, StartResponse):
            self.stats.responses += 1
            task = self._loop.create_task(self._generate(action.response_id))
            self._tasks[action.response_id] = task
            task.add_done_callback(partial(self._forget_task, action.response_id))
        else:
            cancelled = self._tasks.pop(action.response_id, None)
            if cancelled is not None:
                cancelled.cancel()

    def _report(self, key: tuple[int, int], guess: asyncio.Future[str]) -> None:
        """A reported guess is done (on the loop): its words go to the conversation."""
        if self._closed or guess.cancelled():
            return
        text = None if guess.exception() is not None else guess.result()
        self._spawn(self.run(self.conv.heard_so_far(key, text)))

    def _forget_task(self, response_id: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(response_id, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recognize(self, action: Recognize, early: asyncio.Future[str] | None) -> None:
        text: str | None
        error = None
        try:
            if early is not None:
                self.stats.speculative_hits += 1
                text = await early
            else:
                text = await self._loop.run_in_executor(
                    self.engines.asr_executor, self.engines.recognizer.transcribe,
                    action.audio, REALTIME_RATE)
        except Exception as exc:  # a recogniser failure must not end the session
            log.exception("recognition failed")
            text, error = None, str(exc)
        fut = self._heard.pop(action.item_id, None)
        if fut is not None and not fut.done():
            fut.set_result(text)
        await self.run(self.conv.transcription_done(action.item_id, text,
                                                    action.emit_events, error))

    async def _generate(self, rid: str) -> None:
        sender: asyncio.Task[None] | None = None
        try:
            waits = [self._heard[i] for i in self.conv.pending_recognition(rid)
                     if i in self._heard]
            if waits:
                await asyncio.wait(waits, timeout=self.limits.recognition_wait_s)
            if not self.conv.is_active(rid):
                return
            request = self.conv.responder_input(rid)
            audio = request.modalities == ["audio"]
            # Both bounded: the generator waits for the sender rather than run ahead.
            queue: asyncio.Queue[_ReplyPart | None] = asyncio.Queue(REPLY_QUEUE)
            room = asyncio.Semaphore(SYNTHESIS_LOOKAHEAD)  # released once a pcm is sent
            sender = self._loop.create_task(self._sender(rid, queue, room))
            pending = ""

            async def speak(sentence: str) -> None:
                await room.acquire()
                fut = self._loop.run_in_executor(
                    None, self.engines.synthesizer.synthesize, sentence)
                await queue.put(_Speech(sentence, fut))

            async for part in self.engines.responder.reply(request):
                if not self.conv.is_active(rid):
                    break
                if isinstance(part, FunctionCall):
                    if audio and pending.strip():  # a spoken preamble before the call
                        await speak(pending.strip())
                    pending = ""
                    await queue.put(_Call(part))
                elif audio:
                    sentences, pending = split_sentences(pending + part)
                    for sentence in sentences:
                        await speak(sentence)
                else:
                    await queue.put(_Text(part))
            if audio and pending.strip():
                await speak(pending.strip())
            await queue.put(None)
            await sender
            await self.run(self.conv.response_finish(rid))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("response %s failed", rid)
            await self.run(self.conv.response_fail(rid, f"The response failed: {exc}"))
        finally:
            if sender is not None and not sender.done():
                sender.cancel()

    async def _sender(self, rid: str, queue: asyncio.Queue[_ReplyPart | None],
                      room: asyncio.Semaphore) -> None:
        """Sends reply parts in order, pacing audio (see Limits.audio_lead_ms)."""
        started: float | None = None
        sent_ms = 0
        first = True
        t0 = time.perf_counter()
        while (entry := await queue.get()) is not None:
            if isinstance(entry, _Text):
                await self.run(self.conv.response_speech(rid, entry.text))
            elif isinstance(entry, _Call):
                call = entry.call
                await self.run(self.conv.response_function_call(
                    rid, call.name, call.arguments, call.call_id))
            else:
                try:
                    pcm = await entry.pcm
                finally:
                    room.release()
                step = 100 * BYTES_PER_MS
                text = ("" if first else " ") + entry.sentence
                first = False
                if not pcm:
                    await self.run(self.conv.response_speech(rid, text))
                for i in range(0, len(pcm), step):
                    if started is None:
                        started = time.perf_counter()
                        self.stats.first_audio_s.append(started - t0)
                    lead = self.limits.audio_lead_ms
                    allowed = lead + (time.perf_counter() - started) * 1000 \
                        * self.limits.audio_speed
                    if lead > 0 and sent_ms > allowed:
                        await asyncio.sleep((sent_ms - allowed) / 1000 / self.limits.audio_speed)
                    piece = pcm[i : i + step]
                    await self.run(self.conv.response_speech(rid, text if i == 0 else "", piece))
                    sent_ms += len(piece) // BYTES_PER_MS
