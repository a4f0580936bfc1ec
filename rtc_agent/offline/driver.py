"""Drives one Conversation with real engines and asyncio, independent of the socket.

The server hands every client frame to `SessionDriver.handle_frame` and gives it a
`send` coroutine for server events. Heavy work (VAD scoring, recognition, synthesis,
the responder) runs in a thread executor or its own task; conversation state is only
touched on the event-loop thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from rtc_agent.offline.asr import Recognizer
from rtc_agent.offline.conversation import (
    CancelResponse,
    Conversation,
    Recognize,
    StartResponse,
)
from rtc_agent.offline.dialect import ProtocolError
from rtc_agent.offline.responder import FunctionCall, Responder
from rtc_agent.offline.tts import Synthesizer
from rtc_agent.offline.vad import SpeechDetector
from rtc_agent.protocol import BYTES_PER_MS, REALTIME_RATE

# Appends up to this size run VAD on the loop (measured: 50 us of CPU per 20 ms
# chunk inline, 139 us through the default executor); larger ones use a thread.
INLINE_VAD_BYTES = 200 * BYTES_PER_MS

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(.+?[.!?;:])(\s+|$)", re.S)


@dataclass
class Engines:
    """The speech engines and the brain a session uses (fakes in unit tests)."""

    synthesizer: Synthesizer
    recognizer: Recognizer
    responder: Responder
    detector_factory: Callable[[], SpeechDetector]
    # Recognition gets threads of its own: a queue of slow decodes must never hold up the
    # VAD scoring of live audio, which runs in the loop's default executor.
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


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences at the start of text, and the unfinished rest."""
    sentences, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end(2) == len(text) and not m.group(2):
            break  # "Hello." at the very end might still be "Hello.5" mid-stream
        sentences.append(m.group(1).strip())
        pos = m.end()
    return sentences, text[pos:]


class SessionDriver:
    def __init__(
        self,
        conversation: Conversation,
        engines: Engines,
        send: Callable[[list[dict]], Awaitable[None]],
        limits: Limits | None = None,
    ) -> None:
        self.conv = conversation
        self.engines = engines
        self.send = send
        self.limits = limits or Limits()
        self.stats = Stats()
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._heard: dict[str, asyncio.Future[str | None]] = {}
        self._speculative: dict[tuple[int, int], asyncio.Future] = {}
        self._detector_ready = False
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        await self.send(self.conv.created_events())

    async def close(self) -> None:
        for fut in self._speculative.values():
            fut.cancel()
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _emit(self, events: list[dict]) -> None:
        if events:
            await self.send(events)
        self._run_actions()

    async def _error(self, code: str, message: str, event_id: Any = None) -> None:
        await self.send([self.conv.error_event(ProtocolError(code, message), event_id)])

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
            event = json.loads(frame)
        except ValueError as exc:
            await self._error("invalid_json", f"Invalid event: failed to parse JSON value. {exc}")
            return
        if isinstance(event, dict) and event.get("type") == "input_audio_buffer.append" \
                and set(event) <= {"type", "event_id", "audio"}:
            await self._append(event)
            return
        await self._emit(self.conv.handle(event))

    async def _append(self, event: dict) -> None:
        try:
            pcm = self.conv.decode_append(event)
        except ProtocolError as err:
            await self.send([self.conv.error_event(err, event.get("event_id"))])
            return
        probs = None
        if self.conv.turn_detection is not None and pcm:
            if not self._detector_ready:
                self.conv.detector = await self._loop.run_in_executor(
                    None, self.engines.detector_factory)
                self.conv._reset_vad()  # align the detector with the current timeline
                self._detector_ready = True
            if len(pcm) <= INLINE_VAD_BYTES:
                # A 20 ms chunk costs silero ~50 us; a thread hop would cost ~90 us more.
                probs = self.conv.detector.probabilities(pcm)
            else:
                probs = await self._loop.run_in_executor(
                    None, self.conv.detector.probabilities, pcm)
        await self._emit(self.conv.feed_audio(pcm, probs))

    # --- actions -----------------------------------------------------------------------

    def _run_actions(self) -> None:
        for action in self.conv.take_actions():
            if isinstance(action, Recognize) and action.speculative:
                assert action.key is not None
                self._speculative[action.key] = self._loop.run_in_executor(
                    self.engines.asr_executor, self.engines.recognizer.transcribe,
                    action.audio, REALTIME_RATE)
                while len(self._speculative) > 4:  # stale guesses (the user spoke on)
                    self._speculative.pop(next(iter(self._speculative)))
            elif isinstance(action, Recognize):
                self._heard[action.item_id] = self._loop.create_future()
                early = self._speculative.pop(action.key, None) if action.key else None
                self._spawn(self._recognize(action, early))
            elif isinstance(action, StartResponse):
                self.stats.responses += 1
                task = self._loop.create_task(self._generate(action.response_id))
                self._tasks[action.response_id] = task
                task.add_done_callback(lambda _t, rid=action.response_id:
                                       self._tasks.pop(rid, None))
            elif isinstance(action, CancelResponse):
                task = self._tasks.pop(action.response_id, None)
                if task is not None:
                    task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recognize(self, action: Recognize, early: asyncio.Future | None = None) -> None:
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
        await self._emit(self.conv.transcription_done(action.item_id, text,
                                                      action.emit_events, error))

    async def _generate(self, rid: str) -> None:
        sender: asyncio.Task | None = None
        try:
            waits = [self._heard[i] for i in self.conv.pending_recognition(rid)
                     if i in self._heard]
            if waits:
                await asyncio.wait(waits, timeout=self.limits.recognition_wait_s)
            if not self.conv.is_active(rid):
                return
            request = self.conv.responder_input(rid)
            audio = request.modalities == ["audio"]
            queue: asyncio.Queue = asyncio.Queue()
            sender = self._loop.create_task(self._sender(rid, queue))
            pending = ""

            def speak(sentence: str) -> None:
                fut = self._loop.run_in_executor(
                    None, self.engines.synthesizer.synthesize, sentence)
                queue.put_nowait(("speech", sentence, fut))

            async for part in self.engines.responder.reply(request):
                if not self.conv.is_active(rid):
                    break
                if isinstance(part, FunctionCall):
                    if audio and pending.strip():  # a spoken preamble before the call
                        speak(pending.strip())
                    pending = ""
                    queue.put_nowait(("call", part, None))
                elif audio:
                    sentences, pending = split_sentences(pending + part)
                    for sentence in sentences:
                        speak(sentence)
                else:
                    queue.put_nowait(("text", part, None))
            if audio and pending.strip():
                speak(pending.strip())
            queue.put_nowait(None)
            await sender
            await self._emit(self.conv.response_finish(rid))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("response %s failed", rid)
            await self._emit(self.conv.response_fail(rid, f"The response failed: {exc}"))
        finally:
            if sender is not None and not sender.done():
                sender.cancel()

    async def _sender(self, rid: str, queue: asyncio.Queue) -> None:
        """Sends reply parts in order, pacing audio (see Limits.audio_lead_ms)."""
        started: float | None = None
        sent_ms = 0
        first = True
        t0 = time.perf_counter()
        while (entry := await queue.get()) is not None:
            kind, payload, fut = entry
            if kind == "text":
                await self._emit(self.conv.response_speech(rid, payload))
            elif kind == "call":
                await self._emit(self.conv.response_function_call(
                    rid, payload.name, payload.arguments, payload.call_id))
            else:
                pcm: bytes = await fut
                step = 100 * BYTES_PER_MS
                text = ("" if first else " ") + payload
                first = False
                if not pcm:
                    await self._emit(self.conv.response_speech(rid, text))
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
                    await self._emit(self.conv.response_speech(rid, text if i == 0 else "",
                                                               piece))
                    sent_ms += len(piece) // BYTES_PER_MS
