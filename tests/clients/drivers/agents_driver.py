"""The OpenAI Agents SDK's RealtimeRunner against a Realtime URL: text, audio and tool turns.

Runs in the openai-agents venv (tests/clients/venvs.py). A RealtimeAgent is run as
the SDK documents it; only `model_config={"url": ..., "api_key": ...}` points it at
the backend. What the session yields is read event by event: the model's raw events
for transcripts, `audio` for the reply's sound, `tool_start`/`tool_end` for the
function the SDK ran itself, `agent_end` for the end of a response.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.config import RealtimeSessionModelSettings
from agents.realtime.events import (
    RealtimeAgentEndEvent,
    RealtimeAudio,
    RealtimeError,
    RealtimeRawModelEvent,
    RealtimeToolEnd,
    RealtimeToolStart,
)
from agents.realtime.model_events import (
    RealtimeModelErrorEvent,
    RealtimeModelInputAudioTranscriptionCompletedEvent,
    RealtimeModelOutputTextDeltaEvent,
    RealtimeModelTranscriptDeltaEvent,
)
from common import SCRIPT, TurnResult, drive, parse_args, save_audio, spoken_chunks

ARGS = parse_args()


@function_tool(name_override=SCRIPT.tool_name, description_override=SCRIPT.tool_description)
def get_news(topic: str) -> str:
    """Answers with a fixed headline, so the reply can be checked word for word."""
    return json.dumps(SCRIPT.tool_result)


async def run_session(result: TurnResult, settings: RealtimeSessionModelSettings,
                      agent: RealtimeAgent, send: Callable[[RealtimeSession], Any],
                      done: Callable[[TurnResult, int], bool]) -> bytes:
    """One session: send the input, read events until done(result, responses ended)."""
    runner = RealtimeRunner(agent, config={"model_settings": settings,
                                           "tracing_disabled": True})
    session = await runner.run(model_config={"url": ARGS.url, "api_key": "offline-test-key"})
    audio = bytearray()
    ended = 0
    async with session:
        await send(session)
        async for event in session:
            if isinstance(event, RealtimeRawModelEvent):
                data = event.data
                if isinstance(data, RealtimeModelTranscriptDeltaEvent | \
                              RealtimeModelOutputTextDeltaEvent):
                    result.transcript += data.delta
                elif isinstance(data, RealtimeModelInputAudioTranscriptionCompletedEvent):
                    result.user_transcript = data.transcript
                elif isinstance(data, RealtimeModelErrorEvent):
                    result.errors.append(f"model error: {data.error}")
            elif isinstance(event, RealtimeAudio):
                audio.extend(event.audio.data)
            elif isinstance(event, RealtimeToolStart):
                result.tool_calls.append({"name": event.tool.name,
                                          "arguments": json.loads(event.arguments)})
            elif isinstance(event, RealtimeToolEnd):
                result.tool_results_sent += 1
            elif isinstance(event, RealtimeError):
                result.errors.append(f"session error: {event.error}")
            elif isinstance(event, RealtimeAgentEndEvent):
                ended += 1
            kind = event.type
            if kind not in ("raw_model_event", "audio", "history_updated", "history_added") and (
                    not result.events or result.events[-1] != kind):
                result.events.append(kind)
            if result.errors or done(result, ended):
                break
    return bytes(audio)


async def text_turn(result: TurnResult) -> None:
    """A typed question, answered in text only."""
    agent = RealtimeAgent(name="assistant", instructions="You are a helpful assistant.")
    audio = await run_session(result, {"output_modalities": ["text"]}, agent,
                              lambda s: s.send_message(SCRIPT.text_question),
                              lambda r, ended: ended >= 1)
    result.audio_bytes = len(audio)


async def audio_turn(result: TurnResult) -> None:
    """A spoken question; the server's VAD ends the turn and the reply is spoken."""
    pieces, rate = spoken_chunks(ARGS.speech)
    if rate != 24000:
        raise ValueError("the SDK's default input format is 24 kHz pcm16")

    async def speak(session: RealtimeSession) -> None:
        for chunk in pieces:
            await session.send_audio(chunk)

    agent = RealtimeAgent(name="assistant", instructions="You are a helpful assistant.")
    settings: RealtimeSessionModelSettings = {
        "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {"type": "server_vad",
                                               "silence_duration_ms": 500}}}}
    audio = await run_session(result, settings, agent, speak,
                              lambda r, ended: ended >= 1 and bool(r.user_transcript))
    result.audio_bytes = len(audio)
    result.audio_file = save_audio(ARGS.out_dir, "agents-audio", audio)


async def tool_turn(result: TurnResult) -> None:
    """The model calls the agent's tool; the SDK runs it and the reply uses its result."""
    agent = RealtimeAgent(name="assistant", instructions="You are a helpful assistant.",
                          tools=[get_news])
    audio = await run_session(result, {}, agent, lambda s: s.send_message(SCRIPT.tool_request),
                              lambda r, ended: ended >= 2)
    result.audio_bytes = len(audio)


if __name__ == "__main__":
    sys.exit(drive("agents", "openai-agents", ARGS,
                   {"text": text_turn, "audio": audio_turn, "tool": tool_turn}))
