"""Every client mistake gets an `error` event over a real WebSocket; the session goes on."""

from __future__ import annotations

import base64
import json

import pytest

from rtc_agent.offline.driver import Limits
from rtc_agent.offline.server import RealtimeServer
from tests.offline.conftest import RawClient, connect, start_server, types
from tests.offline.sdk_types import validate

pytestmark = pytest.mark.timeout(60)


async def still_alive(client: RawClient) -> None:
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def expect_error(client: RawClient, code: str | None, param: str | None = None,
                       event_id: str | None = None) -> dict:
    event = await client.recv()
    assert event["type"] == "error", event
    validate(event)
    err = event["error"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == code and err["param"] == param and err["event_id"] == event_id
    assert err["message"]
    await still_alive(client)
    return err


async def test_invalid_json(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.ws.send("{not json")
    err = await expect_error(client, "invalid_json")
    assert "JSON" in err["message"]


async def test_binary_frame(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.ws.send(b'{"type": "response.create"}')
    err = await expect_error(client, "invalid_event")
    assert "binary" in err["message"]


async def test_missing_type(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"event_id": "ev1", "item_id": "x"})
    await expect_error(client, "invalid_event", event_id="ev1")


async def test_unknown_event_type(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "session.nope", "event_id": "ev2"})
    err = await expect_error(client, "invalid_value", "type", "ev2")
    assert "'session.nope'" in err["message"] and "'response.cancel'" in err["message"]


async def test_missing_field(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.retrieve", "event_id": "ev3"})
    await expect_error(client, "missing_required_parameter", "item_id", "ev3")
    await client.send({"type": "session.update", "session": {"instructions": "x"}})
    await expect_error(client, "missing_required_parameter", "session.type")


async def test_unknown_session_field(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "changed", "bogus_field": True}})
    await expect_error(client, "unknown_parameter", "session.bogus_field")
    await client.send({"type": "session.update", "session": {"type": "realtime"}})
    updated = (await client.until("session.updated"))[-1]
    assert updated["session"]["instructions"] != "changed"  # the bad update was dropped


async def test_commit_empty_and_short_buffer(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
    err = await expect_error(client, "input_audio_buffer_commit_empty", event_id="c1")
    assert "0.00ms" in err["message"]
    await client.send({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(bytes(48 * 50)).decode()})  # 50 ms
    await client.send({"type": "input_audio_buffer.commit"})
    err = await expect_error(client, "input_audio_buffer_commit_empty")
    assert "50.00ms" in err["message"]


async def test_cancel_without_active_response(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "response.cancel", "event_id": "x1"})
    err = await expect_error(client, "response_cancel_not_active", event_id="x1")
    assert err["message"] == "Cancellation failed: no active response found"


async def test_truncate_unknown_item(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.truncate", "item_id": "item_nope",
                       "content_index": 0, "audio_end_ms": 100})
    await expect_error(client, "item_truncate_invalid_item_id", "item_id")


async def test_delete_and_retrieve_unknown_item(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.delete", "item_id": "item_x"})
    err = await expect_error(client, "item_delete_invalid_item_id")
    assert err["message"] == "Error deleting item: the item with id 'item_x' does not exist."
    await client.send({"type": "conversation.item.retrieve", "item_id": "item_x"})
    await expect_error(client, "item_retrieve_invalid_item_id")


async def test_response_while_one_is_active(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "tell me a story"}]}})
    await client.send({"type": "response.create"})
    created = (await client.until("response.created"))[-1]["response"]["id"]
    await client.send({"type": "response.create", "event_id": "second"})
    events = await client.until("error")
    err = events[-1]["error"]
    assert err["code"] == "conversation_already_has_active_response"
    assert err["event_id"] == "second" and created in err["message"]
    # The first response is unaffected and still ends with response.done.
    await client.send({"type": "response.cancel"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["id"] == created and done["status"] == "cancelled"
    await client.close()


async def test_oversized_message(engines) -> None:
    srv = await start_server(engines, limits=Limits(max_message_bytes=10_000))
    try:
        client = await connect(srv)
        big = base64.b64encode(bytes(20_000)).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": big})
        err = await expect_error(client, "message_too_large")
        assert "10000" in err["message"]
        # A normal-sized append still works afterwards.
        await client.send({"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(bytes(4800)).decode()})
        await client.send({"type": "input_audio_buffer.commit"})
        assert types(await client.until("input_audio_buffer.committed"))[-1] == \
            "input_audio_buffer.committed"
    finally:
        await srv.stop()


async def test_unknown_item_fields_and_bad_audio(server: RealtimeServer) -> None:
    client = await connect(server)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}],
        "colour": "red"}})
    await expect_error(client, "unknown_parameter", "item.colour")
    await client.send({"type": "input_audio_buffer.append", "audio": "%%%"})
    await expect_error(client, "invalid_value", "audio")
    await client.ws.send(json.dumps([1, 2, 3]))
    await expect_error(client, "invalid_event")


async def test_hostile_envelopes_get_errors_and_the_session_goes_on(
        server: RealtimeServer) -> None:
    client = await connect(server)
    await client.ws.send('{"type": [1]}')  # unhashable: must not end the connection
    await expect_error(client, "invalid_type", "type")
    await client.ws.send('{"type": {"a": 1}}')
    await expect_error(client, "invalid_type", "type")
    await client.ws.send("[" * 100_000 + "]" * 100_000)  # deep nesting
    await expect_error(client, "invalid_json")
    await still_alive(client)
