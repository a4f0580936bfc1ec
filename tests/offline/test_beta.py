"""The beta dialect: raw websockets clients with `OpenAI-Beta: realtime=v1`, the beta
subprotocol, and the Azure preview path; every event validated against the SDK's beta types."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openai import AsyncAzureOpenAI

from rtc_agent.offline.server import RealtimeServer
from rtc_agent.protocol import Dialect, azure_version_dialect
from tests.offline.conftest import RawClient, audio_of, connect, speech, types
from tests.offline.sdk_types import validate
from tests.speech import hears

pytestmark = pytest.mark.timeout(120)

TOOL = {"type": "function", "name": "lookup", "description": "Look things up.",
        "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}}}


async def beta_until(client: RawClient, type_: str, wait_s: float = 30.0) -> list[dict]:
    events = await client.until(type_, wait_s)
    for event in events:
        validate(event, beta=True)
    return events


async def text_turn(client: RawClient) -> None:
    await client.send({"type": "session.update", "session": {"modalities": ["text"]}})
    updated = (await beta_until(client, "session.updated"))[-1]["session"]
    assert updated["modalities"] == ["text"] and "audio" not in updated
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "what is nine plus four"}]}})
    await client.send({"type": "response.create"})
    events = await beta_until(client, "response.done")
    assert types(events) == [
        "conversation.item.created", "response.created", "response.output_item.added",
        "conversation.item.created", "response.content_part.added", "response.text.delta",
        "response.text.done", "response.content_part.done", "response.output_item.done",
        "response.done",
    ]
    assert events[6]["text"] == "Nine plus four is thirteen."
    assert events[-1]["response"]["output"][0]["content"][0]["type"] == "text"
    await beta_until(client, "rate_limits.updated")


async def test_beta_header_text_audio_and_tool_turns(server: RealtimeServer) -> None:
    client = await connect(server, beta=True)
    assert "modalities" in client.events[0]["session"]
    validate(client.events[0], beta=True)
    await text_turn(client)

    # Audio turn: server VAD, transcription on, audio reply.
    await client.send({"type": "session.update", "session": {
        "modalities": ["audio", "text"], "input_audio_transcription": {"model": "whisper-1"}}})
    await beta_until(client, "session.updated")
    await client.append_pcm(speech("what is six times eight"))
    events = await beta_until(client, "response.done", wait_s=60)
    names = types(events)
    assert names[:4] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "conversation.item.created"]
    assert "conversation.item.added" not in names and "conversation.item.done" not in names
    audio = audio_of(events, "response.audio.delta")
    assert hears(audio, 24000, "forty")
    transcript = next(e for e in events if e["type"] == "response.audio_transcript.done")
    assert transcript["transcript"] == "Six times eight is forty-eight."
    end = names[names.index("response.audio.done"):]
    assert end == ["response.audio.done", "response.audio_transcript.done",
                   "response.content_part.done", "response.output_item.done", "response.done"]

    # Tool-call turn.
    await client.send({"type": "session.update", "session": {"tools": [TOOL]}})
    await beta_until(client, "session.updated")
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "look up the tallest mountain"}]}})
    await client.send({"type": "response.create"})
    events = await beta_until(client, "response.done")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert "name" not in done  # GA-only field
    assert json.loads(done["arguments"]) == {"topic": "the tallest mountain"}
    await client.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": done["call_id"],
        "output": "Mount Everest is the tallest mountain. It is in Nepal."}})
    await client.send({"type": "response.create", "response": {"modalities": ["text"]}})
    events = await beta_until(client, "response.done")
    text = next(e for e in events if e["type"] == "response.text.done")["text"]
    assert text == "Here is what I found: Mount Everest is the tallest mountain."
    await client.close()


async def test_azure_preview_path_is_beta(server: RealtimeServer) -> None:
    client = await connect(
        server,
        "/openai/realtime?api-version=2024-10-01-preview&deployment=gpt-4o-realtime-preview",
        additional_headers={"api-key": "k"})
    session = client.events[0]["session"]
    assert session["model"] == "gpt-4o-realtime-preview" and "turn_detection" in session
    validate(client.events[0], beta=True)
    await text_turn(client)
    await client.close()


async def test_beta_subprotocol_and_key_entry(server: RealtimeServer) -> None:
    client = await connect(server, "/v1/realtime?model=gpt-realtime", subprotocols=[
        "realtime", "openai-insecure-api-key.sk-test", "openai-beta.realtime-v1"])
    assert client.ws.subprotocol == "realtime"
    assert "modalities" in client.events[0]["session"]
    await client.close()


async def test_azure_ga_path_is_ga(server: RealtimeServer) -> None:
    client = await connect(server, "/openai/v1/realtime?model=my-deployment",
                           additional_headers={"Authorization": "Bearer tok"})
    session = client.events[0]["session"]
    assert session["type"] == "realtime" and session["model"] == "my-deployment"
    validate(client.events[0])
    await client.close()


@pytest.mark.parametrize(("version", "dialect"), [
    ("2024-10-01-preview", Dialect.BETA), ("2025-04-01-preview", Dialect.BETA),
    ("2024-12-17", Dialect.BETA),  # a beta version without the suffix
    ("2025-08-28", Dialect.GA), ("2026-02-01", Dialect.GA), ("2026-09-01-preview", Dialect.BETA),
    ("latest", Dialect.GA), ("", Dialect.GA),
])
def test_azure_api_version_picks_the_dialect(version: str, dialect: Dialect) -> None:
    assert azure_version_dialect(version) is dialect


def azure_client(server: RealtimeServer, api_version: str) -> AsyncAzureOpenAI:
    """The SDK's Azure client with its endpoint and WebSocket pointed at the server."""
    return AsyncAzureOpenAI(api_key="k", api_version=api_version,
                            azure_endpoint=f"http://127.0.0.1:{server.port}",
                            websocket_base_url=f"ws://127.0.0.1:{server.port}/openai")


async def session_updated(conn: Any) -> Any:
    """The session.updated event that answers a session.update, with no error before it."""
    async with asyncio.timeout(10):
        async for event in conn:
            assert event.type != "error", event
            if event.type == "session.updated":
                return event
    raise AssertionError("connection ended before session.updated")


async def test_azure_sdk_ga_client_on_the_preview_path_gets_ga(server: RealtimeServer) -> None:
    """`AsyncAzureOpenAI(api_version="2025-08-28").realtime.connect()`: the SDK's GA
    client on `/openai/realtime?api-version=...` without a beta header."""
    client = azure_client(server, "2025-08-28")
    async with client.realtime.connect(model="my-deployment") as conn:
        first = await conn.recv()
        assert first.type == "session.created" and first.session.type == "realtime"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        assert (await session_updated(conn)).session.output_modalities == ["text"]


async def test_azure_sdk_beta_client_on_a_preview_version_gets_beta(
    server: RealtimeServer,
) -> None:
    client = azure_client(server, "2025-04-01-preview")
    async with client.beta.realtime.connect(model="my-deployment") as conn:
        first = await conn.recv()
        assert first.type == "session.created" and first.session.modalities is not None
        await conn.session.update(session={"modalities": ["text"]})
        assert (await session_updated(conn)).session.modalities == ["text"]
