"""LiveKit's OpenAI realtime plugin against a Realtime URL: text, audio and tool turns.

Runs in the livekit venv (tests/clients/venvs.py). `RealtimeModel(base_url=...,
api_key=...)` with every other option at its default (semantic VAD, input
transcription, `response.create` with `"instructions": null`), driven through
`model.session()` with no room: chat context and tools go in as AgentSession
would put them, replies come out of the `generation_created` streams. For the
tool turn the driver does AgentSession's part: it runs the function the model
called, puts the output in the chat context and asks for the next reply.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from common import SCRIPT, TurnResult, drive, parse_args, save_audio, spoken_chunks
from livekit import rtc
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel, RealtimeSession

ARGS = parse_args()


@llm.function_tool(name=SCRIPT.tool_name, description=SCRIPT.tool_description)
async def get_news(topic: str) -> str:
    """Answers with a fixed headline, so the reply can be checked word for word."""
    return json.dumps(SCRIPT.tool_result)


class Listener:
    """Collects a session's generations: text, audio, function calls, errors."""

    def __init__(self, session: RealtimeSession, result: TurnResult) -> None:
        self.result = result
        self.audio = bytearray()
        self.calls: list[llm.FunctionCall] = []
        self.generations_done = 0
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        session.on("generation_created", self._on_generation)
        session.on("input_audio_transcription_completed", self._on_transcription)
        session.on("error", self._on_error)
        session.on("input_speech_started", lambda _ev: self._note("input_speech_started"))
        session.on("input_speech_stopped", lambda _ev: self._note("input_speech_stopped"))

    def _note(self, name: str) -> None:
        if not self.result.events or self.result.events[-1] != name:
            self.result.events.append(name)
        self.changed.set()

    def _on_generation(self, ev: llm.GenerationCreatedEvent) -> None:
        self._note("generation_created")
        task = asyncio.get_running_loop().create_task(self._read(ev))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, ev: llm.GenerationCreatedEvent) -> None:
        async def read_message(msg: llm.MessageGeneration) -> None:
            async def text() -> None:
                async for piece in msg.text_stream:
                    self.result.transcript += str(piece)

            async def audio() -> None:
                async for frame in msg.audio_stream:
                    self.audio.extend(frame.data.tobytes())

            await asyncio.gather(text(), audio())

        async def messages() -> None:
            readers = [asyncio.create_task(read_message(m)) async for m in ev.message_stream]
            await asyncio.gather(*readers)

        async def functions() -> None:
            async for call in ev.function_stream:
                self.calls.append(call)
                self.result.tool_calls.append({"name": call.name,
                                               "arguments": json.loads(call.arguments)})

        await asyncio.gather(messages(), functions())
        self.generations_done += 1
        self._note("generation_done")

    def _on_transcription(self, ev: llm.InputTranscriptionCompleted) -> None:
        if ev.is_final:
            self.result.user_transcript = ev.transcript
        self._note("input_audio_transcription_completed")

    def _on_error(self, ev: Any) -> None:
        self.result.errors.append(f"{getattr(ev, 'label', '')}: {getattr(ev, 'error', ev)}")
        self._note("error")

    async def until(self, predicate: Any) -> None:
        while not (predicate() or self.result.errors):
            self.changed.clear()
            await self.changed.wait()


async def with_session(result: TurnResult, model: RealtimeModel, body: Any) -> bytes:
    """Open a session on model, run body(session, listener), close both."""
    try:
        session = model.session()
        listener = Listener(session, result)
        try:
            await body(session, listener)
        finally:
            await session.aclose()
    finally:
        await model.aclose()
    return bytes(listener.audio)


def new_model(**options: Any) -> RealtimeModel:
    return RealtimeModel(base_url=ARGS.url, api_key="offline-test-key", **options)


async def add_user_message(session: RealtimeSession, text: str) -> None:
    ctx = session.chat_ctx.copy()
    ctx.add_message(role="user", content=text)
    await session.update_chat_ctx(ctx)


async def text_turn(result: TurnResult) -> None:
    """A typed question, answered in text only."""

    async def body(session: RealtimeSession, listener: Listener) -> None:
        await add_user_message(session, SCRIPT.text_question)
        await session.generate_reply()  # the plugin's default: "instructions": null
        await listener.until(lambda: listener.generations_done >= 1)

    audio = await with_session(result, new_model(modalities=["text"]), body)
    result.audio_bytes = len(audio)


async def audio_turn(result: TurnResult) -> None:
    """A spoken question; the server's (semantic) VAD ends the turn; the reply is spoken."""
    pieces, rate = spoken_chunks(ARGS.speech)

    async def body(session: RealtimeSession, listener: Listener) -> None:
        for chunk in pieces:
            session.push_audio(rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2))
            await asyncio.sleep(0.002)  # a fast microphone; the server's VAD keeps time
        await listener.until(lambda: listener.generations_done >= 1
                             and bool(listener.result.user_transcript))

    audio = await with_session(result, new_model(), body)
    result.audio_bytes = len(audio)
    result.audio_file = save_audio(ARGS.out_dir, "livekit-audio", audio)


async def tool_turn(result: TurnResult) -> None:
    """The model calls the declared tool; its output goes back; the reply uses it."""

    async def body(session: RealtimeSession, listener: Listener) -> None:
        await session.update_tools([get_news])
        await add_user_message(session, SCRIPT.tool_request)
        await session.generate_reply()
        await listener.until(lambda: listener.generations_done >= 1 and listener.calls)
        if not listener.calls:
            return
        ctx = session.chat_ctx.copy()
        for call in listener.calls:
            output = await get_news(**json.loads(call.arguments))
            ctx.items.append(llm.FunctionCallOutput(call_id=call.call_id, name=call.name,
                                                    output=output, is_error=False))
            result.tool_results_sent += 1
        await session.update_chat_ctx(ctx)
        await session.generate_reply()
        await listener.until(lambda: listener.generations_done >= 2)

    audio = await with_session(result, new_model(), body)
    result.audio_bytes = len(audio)


if __name__ == "__main__":
    sys.exit(drive("livekit", "livekit-plugins-openai", ARGS,
                   {"text": text_turn, "audio": audio_turn, "tool": tool_turn}))
