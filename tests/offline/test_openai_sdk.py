"""The official openai SDK (GA `client.realtime.connect`) against the offline backend.

We install plain `openai` (its `realtime` extra pins websockets<16) next to
websockets 17; these tests are the proof that the SDK's GA client works with it.
"""

from __future__ import annotations

import base64
import json

import pytest

from rtc_agent.offline.server import RealtimeServer
from tests.offline.conftest import collect, sdk_append, sdk_client, speech
from tests.speech import hears

pytestmark = pytest.mark.timeout(120)

SEARCH_TOOL = {
    "type": "function", "name": "web_search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {
        "max_results": {"type": "integer"}, "query": {"type": "string"}},
        "required": ["query"]},
}


async def test_sdk_text_turn(server: RealtimeServer) -> None:
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        first = await conn.recv()
        assert first.type == "session.created" and first.session.type == "realtime"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        updated = (await collect(conn, "session.updated"))[-1]
        assert updated.session.output_modalities == ["text"]
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is twelve times seven?"}]})
        await conn.response.create()
        events = await collect(conn)
        names = [e.type for e in events]
        assert names[:4] == ["conversation.item.added", "conversation.item.done",
                             "response.created", "response.output_item.added"]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "Twelve times seven is eighty-four."
        done = events[-1].response
        assert done.status == "completed" and done.output[0].content[0].text == text
        assert (await collect(conn, "rate_limits.updated"))[-1].rate_limits[0].name == "tokens"


async def test_sdk_audio_turn_with_server_vad_and_transcription(server: RealtimeServer) -> None:
    pcm = speech("what is twelve times seven").tobytes()
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        await collect(conn, "session.updated", wait_s=5)
        await sdk_append(conn, pcm)
        events = await collect(conn, "response.done", wait_s=60)
        names = [e.type for e in events]
        assert names[:4] == ["input_audio_buffer.speech_started",
                             "input_audio_buffer.speech_stopped",
                             "input_audio_buffer.committed", "conversation.item.added"]
        started, stopped = events[0], events[1]
        assert 100 <= started.audio_start_ms <= 500 < stopped.audio_end_ms <= 3600
        assert "response.output_audio_transcript.delta" in names
        transcript = "".join(e.delta for e in events
                             if e.type == "response.output_audio_transcript.delta")
        assert transcript == "Twelve times seven is eighty-four."
        audio = b"".join(base64.b64decode(e.delta) for e in events
                         if e.type == "response.output_audio.delta")
        assert all(len(base64.b64decode(e.delta)) <= 4800 for e in events
                   if e.type == "response.output_audio.delta")
        assert len(audio) > 24000  # over half a second of speech
        assert hears(audio, 24000, "eighty")
        if "conversation.item.input_audio_transcription.completed" not in names:
            events += await collect(conn, "conversation.item.input_audio_transcription.completed")
        completed = next(e for e in events
                     if e.type == "conversation.item.input_audio_transcription.completed")
        assert completed.item_id == started.item_id
        assert "seven" in completed.transcript


async def test_sdk_tool_call_turn(server: RealtimeServer) -> None:
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "tools": [SEARCH_TOOL]})
        await collect(conn, "session.updated", wait_s=5)
        await conn.conversation.item.create(item={
            "type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Get the latest news about solar power."}]})
        await conn.response.create()
        events = await collect(conn)
        names = [e.type for e in events]
        assert names[names.index("response.output_item.added"):] == [
            "response.output_item.added", "conversation.item.added",
            *["response.function_call_arguments.delta"] * (
                names.count("response.function_call_arguments.delta")),
            "response.function_call_arguments.done", "conversation.item.done",
            "response.output_item.done", "response.done"]
        call = events[-1].response.output[0]
        assert call.type == "function_call" and call.name == "web_search"
        assert json.loads(call.arguments) == {"query": "solar power"}
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call.call_id,
            "output": json.dumps({"results": [{"content": "Solar power capacity grew by a "
                                               "third last year. Prices fell again."}]})})
        await conn.response.create()
        events = await collect(conn)
        transcript = "".join(e.delta for e in events
                             if e.type == "response.output_audio_transcript.delta")
        assert transcript == "Here is what I found: Solar power capacity grew by a third last year."
        assert events[-1].response.status == "completed"
