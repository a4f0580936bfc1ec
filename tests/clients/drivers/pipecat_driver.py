"""Pipecat's OpenAIRealtimeLLMService against a Realtime URL: text, audio and tool turns.

Runs in the pipecat venv (tests/clients/venvs.py). The service is used as an
application would use it, with only its base URL and a dummy key changed: a
pipeline of the context aggregators around the service and no transport; frames
in through the worker, what the service pushes read by two pass-through probes
(one on each side, since transcriptions travel upstream).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from common import SCRIPT, TurnResult, drive, parse_args, save_audio, spoken_chunks
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMRunFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime.events import (
    AudioConfiguration,
    AudioInput,
    InputAudioTranscription,
    SessionProperties,
    TurnDetection,
)
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

ARGS = parse_args()


class Probe(FrameProcessor):
    """Passes every frame on; notes what the realtime service produced."""

    def __init__(self, result: TurnResult, audio: bytearray, changed: asyncio.Event) -> None:
        super().__init__()
        self.result, self.audio, self.changed = result, audio, changed
        self.responses_done = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        r = self.result
        if isinstance(frame, TTSAudioRawFrame):
            self.audio.extend(frame.audio)
        elif isinstance(frame, LLMTextFrame) and direction == FrameDirection.DOWNSTREAM:
            r.transcript += frame.text
        elif isinstance(frame, TranscriptionFrame):
            r.user_transcript = frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.responses_done += 1
        elif isinstance(frame, ErrorFrame):
            r.errors.append(frame.error)
        name = type(frame).__name__
        if name.endswith(("ResponseStartFrame", "ResponseEndFrame", "ResultFrame",
                          "StartedFrame", "StoppedFrame", "ErrorFrame", "TranscriptionFrame")) \
                and (not r.events or r.events[-1] != name):
            r.events.append(name)
        self.changed.set()
        await self.push_frame(frame, direction)


async def run_pipeline(result: TurnResult, session: SessionProperties, context: LLMContext,
                       first_frames: list[Frame], done: Callable[[Probe], bool],
                       register: Callable[[OpenAIRealtimeLLMService], None] | None = None,
                       ) -> bytes:
    """One session: build the pipeline, queue first_frames, wait for done, end it."""
    llm = OpenAIRealtimeLLMService(
        api_key="offline-test-key", base_url=ARGS.url,
        settings=OpenAIRealtimeLLMService.Settings(session_properties=session))
    if register is not None:
        register(llm)
    user_agg, assistant_agg = LLMContextAggregatorPair(context)
    audio, changed = bytearray(), asyncio.Event()
    upstream, downstream = Probe(result, audio, changed), Probe(result, audio, changed)
    pipeline = Pipeline([user_agg, upstream, llm, downstream, assistant_agg])
    worker = PipelineWorker(pipeline, params=PipelineParams(), idle_timeout_secs=None,
                            enable_rtvi=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: Any, _frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 15)
        for frame in first_frames:
            await worker.queue_frame(frame)
            if isinstance(frame, InputAudioRawFrame):
                await asyncio.sleep(0.002)  # a fast microphone; the server's VAD keeps time
        while not (done(downstream) or result.errors):
            changed.clear()
            await changed.wait()
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(asyncio.shield(running), 10)
    finally:
        if not running.done():
            await worker.cancel()
            await asyncio.wait_for(running, 10)
    return bytes(audio)


async def text_turn(result: TurnResult) -> None:
    """A typed question, answered in text only."""
    session = SessionProperties(output_modalities=["text"])
    context = LLMContext([{"role": "user", "content": SCRIPT.text_question}])
    audio = await run_pipeline(result, session, context, [LLMRunFrame()],
                               lambda probe: probe.responses_done >= 1)
    result.audio_bytes = len(audio)


async def audio_turn(result: TurnResult) -> None:
    """A spoken question; the server's VAD ends the turn and the reply is spoken."""
    pieces, rate = spoken_chunks(ARGS.speech)
    session = SessionProperties(audio=AudioConfiguration(input=AudioInput(
        transcription=InputAudioTranscription(), turn_detection=TurnDetection())))
    frames: list[Frame] = [InputAudioRawFrame(audio=c, sample_rate=rate, num_channels=1)
                           for c in pieces]
    audio = await run_pipeline(result, session, LLMContext(), frames,
                               lambda probe: probe.responses_done >= 1 and
                               bool(probe.result.user_transcript))
    result.audio_bytes = len(audio)
    result.audio_file = save_audio(ARGS.out_dir, "pipecat-audio", audio)


async def tool_turn(result: TurnResult) -> None:
    """The model calls the declared function; its result goes back; the reply uses it."""

    async def get_news(params: FunctionCallParams) -> None:
        result.tool_calls.append({"name": params.function_name,
                                  "arguments": dict(params.arguments)})
        await params.result_callback(SCRIPT.tool_result)
        result.tool_results_sent += 1

    def register(llm: OpenAIRealtimeLLMService) -> None:
        llm.register_function(SCRIPT.tool_name, get_news)

    tools = ToolsSchema(standard_tools=[FunctionSchema(
        name=SCRIPT.tool_name, description=SCRIPT.tool_description,
        properties={"topic": {"type": "string", "description": "what the news is about"}},
        required=["topic"])])
    context = LLMContext([{"role": "user", "content": SCRIPT.tool_request}], tools)
    audio = await run_pipeline(result, SessionProperties(), context, [LLMRunFrame()],
                               lambda probe: probe.responses_done >= 2, register)
    result.audio_bytes = len(audio)


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level=ARGS.log_level)
    return drive("pipecat", "pipecat-ai", ARGS,
                 {"text": text_turn, "audio": audio_turn, "tool": tool_turn})


if __name__ == "__main__":
    sys.exit(main())
