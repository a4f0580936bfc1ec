"""The offline server's bounds on what one client may ask: each excess is an `error`
event in the protocol's style, and the session goes on."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import time
from typing import Any

import pytest

from rtc_agent.offline import validation as v
from rtc_agent.offline.command import add_arguments
from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.outputs import Emit, Output
from rtc_agent.offline.responder import MAX_RULE_TEXT, RuleResponder
from rtc_agent.offline.responses import ResponderInput, Turn
from rtc_agent.offline.server import IDLE_TIMEOUT_S, OfflineServerConfig
from rtc_agent.protocol import BYTES_PER_MS, Dialect

pytestmark = pytest.mark.timeout(60)


def conversation(dialect: Dialect = Dialect.GA, **kwargs: Any) -> Conversation:
    counter = itertools.count(1)
    return Conversation(dialect, new_id=lambda p: f"{p}_{next(counter)}", clock=lambda: 0.0,
                        **kwargs)


def sent(outputs: list[Output]) -> list[dict[str, Any]]:
    return [o.event for o in outputs if isinstance(o, Emit)]


def error_of(conv: Conversation, event: dict[str, Any]) -> dict[str, Any]:
    [only] = sent(conv.handle(event))
    assert only["type"] == "error", only
    json.dumps(only, allow_nan=False)
    # The session goes on.
    assert sent(conv.handle({"type": "input_audio_buffer.clear"}))[0]["type"] == \
        "input_audio_buffer.cleared"
    return dict(only["error"])


def update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def deep(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def tool(name: str = "search", **extra: Any) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object"}, **extra}


@pytest.mark.parametrize(("event", "code", "param"), [
    (update(instructions="x" * (v.MAX_INSTRUCTIONS_CHARS + 1)),
     "string_above_max_length", "session.instructions"),
    (update(tools=[tool(f"t{i}") for i in range(v.MAX_TOOLS + 1)]),
     "array_above_max_length", "session.tools"),
    (update(tools=[tool("not a name!")]), "invalid_value", "session.tools[0].name"),
    (update(tools=[tool("t" * 65)]), "string_above_max_length", "session.tools[0].name"),
    (update(tools=[tool(description="d" * v.MAX_TOOL_CHARS)]), "invalid_value",
     "session.tools[0]"),
    (update(tools=[tool(parameters=deep(v.MAX_JSON_DEPTH + 5))]), "invalid_value",
     "session.tools[0]"),
    (update(tracing={"metadata": deep(v.MAX_JSON_DEPTH + 5)}), "invalid_value",
     "session.tracing"),
    (update(tracing={"metadata": {"k": float("nan")}}), "invalid_value", "session.tracing"),
    (update(tracing={"workflow_name": float("nan")}), "invalid_type",
     "session.tracing.workflow_name"),
    (update(prompt={"id": "p", "variables": {"x": "y" * v.MAX_JSON_CHARS}}), "invalid_value",
     "session.prompt"),
    (update(model="m" * 1000), "string_above_max_length", "session.model"),
    (update(audio={"output": {"voice": "v" * 1000}}), "string_above_max_length",
     "session.audio.output.voice"),
    (update(audio={"output": {"speed": float("inf")}}), "decimal_out_of_range",
     "session.audio.output.speed"),
    (update(audio={"input": {"turn_detection": {"type": "server_vad",
                                                "silence_duration_ms": 10**12}}}),
     "integer_above_max_value", "session.audio.input.turn_detection.silence_duration_ms"),
    (update(audio={"input": {"turn_detection": {"type": "server_vad",
                                                "prefix_padding_ms": v.MAX_VAD_MS + 1}}}),
     "integer_above_max_value", "session.audio.input.turn_detection.prefix_padding_ms"),
    (update(audio={"input": {"turn_detection": {"type": "semantic_vad",
                                                "eagerness": ["high"]}}}),
     "invalid_value", "session.audio.input.turn_detection.eagerness"),
    ({"type": "response.create", "response": {"metadata": {f"k{i}": "v" for i in range(17)}}},
     "invalid_value", "response.metadata"),
    ({"type": "response.create", "response": {"metadata": {"k": "v" * 513}}},
     "string_above_max_length", "response.metadata.k"),
    ({"type": "response.create", "response": {"metadata": {"k": 1}}},
     "invalid_type", "response.metadata.k"),
    ({"type": "response.create",
      "response": {"input": [{"type": "item_reference", "id": "x"}] * 1025}},
     "array_above_max_length", "response.input"),
    ({"type": "response.create", "response": {"instructions": "x" * 200_000}},
     "string_above_max_length", "response.instructions"),
    ({"type": "response.create", "response": {"audio": {"output": {"voice": [[["x"]]]}}}},
     "invalid_type", "response.audio.output.voice"),
    ({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "x" * (v.MAX_TEXT_CHARS + 1)}]}},
     "string_above_max_length", "item.content[0].text"),
    ({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "x"}] * (v.MAX_CONTENT_PARTS + 1)}},
     "array_above_max_length", "item.content"),
    ({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": 5}]}},
     "invalid_type", "item.content[0].audio"),
    ({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": [], "text": "x"}]}},
     "invalid_value", "item.content[0].type"),
    ({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c", "output": "o" * 200_000}},
     "string_above_max_length", "item.output"),
    ({"type": "conversation.item.create", "item": {
        "type": "function_call", "name": "f", "arguments": "{}", "call_id": ["c"]}},
     "invalid_type", "item.call_id"),
    ({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "id": "i" * 65,
        "content": [{"type": "input_text", "text": "x"}]}},
     "string_above_max_length", "item.id"),
])
def test_bounds_give_protocol_errors(event: dict[str, Any], code: str, param: str) -> None:
    err = error_of(conversation(), event)
    assert (err["code"], err["param"]) == (code, param), err
    assert err["type"] == "invalid_request_error" and err["message"]


def test_what_fits_the_bounds_is_accepted() -> None:
    conv = conversation()
    out = sent(conv.handle(update(
        instructions="x" * v.MAX_INSTRUCTIONS_CHARS,
        tools=[tool(f"t{i}") for i in range(v.MAX_TOOLS)],
        tracing={"workflow_name": "w", "metadata": deep(v.MAX_JSON_DEPTH - 2)})))
    assert out[0]["type"] == "session.updated"
    out = sent(conv.handle({"type": "response.create", "response": {
        "conversation": "none", "metadata": {f"k{i}": "v" * 512 for i in range(16)}}}))
    assert out[0]["type"] == "response.created"


def test_item_audio_is_bounded() -> None:
    too_long = bytes((v.MAX_ITEM_AUDIO_MS + 100) * BYTES_PER_MS)
    err = error_of(conversation(), {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(too_long).decode()}]}})
    assert (err["code"], err["param"]) == ("invalid_value", "item.content[0].audio")


def test_beta_formats_and_cancel_ids_of_odd_types() -> None:
    conv = conversation(Dialect.BETA)
    err = error_of(conv, {"type": "session.update", "session": {"input_audio_format": ["x"]}})
    assert err["param"] == "session.input_audio_format"
    err = error_of(conv, {"type": "response.cancel", "response_id": ["resp_1"]})
    assert err["code"] == "response_cancel_not_active"
    err = error_of(conv, {"type": "conversation.item.delete", "item_id": [[[[]]]]})
    assert err["code"] == "item_delete_invalid_item_id"


def test_oldest_items_are_forgotten_past_the_item_cap() -> None:
    conv = conversation(max_items=10)
    for i in range(50):
        conv.handle({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                             "text": f"m{i}"}]}})
    assert [i.heard for i in conv.items] == [f"m{i}" for i in range(40, 50)]
    # Inserted at the root, a new item is kept and the oldest other one goes.
    conv.handle({"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text",
                                                           "text": "first"}]}})
    assert [i.heard for i in conv.items][:2] == ["first", "m41"] and len(conv.items) == 10


def test_stored_text_is_bounded() -> None:
    conv = conversation(max_stored_text_chars=10_000)
    for _ in range(30):
        conv.handle({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "x" * 1000}]}})
    assert conv.store.chars <= 10_000 and 5 < len(conv.items) < 10
    assert conv.store.chars == sum(i.chars for i in conv.items)


def test_idle_sessions_time_out_by_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).idle_timeout_s == IDLE_TIMEOUT_S > 0
    assert OfflineServerConfig().idle_timeout_s == IDLE_TIMEOUT_S


@pytest.mark.parametrize("turn", [
    Turn("user", "message", text="what is " + "and x " * 20_000),  # quadratic arithmetic
    Turn("tool", "function_call_output", text="word " * 10_000),  # no sentence ends
])
def test_the_rules_read_a_bounded_part_of_a_huge_text(turn: Turn) -> None:
    """The rules run on the server's loop: a long text must not stall every session
    (before the bound, 3 s and 13 s here)."""
    request = ResponderInput("", [], "auto", ["text"], [turn])
    t0 = time.perf_counter()
    [reply] = RuleResponder().decide(request)
    assert time.perf_counter() - t0 < 0.5
    assert isinstance(reply, str) and len(reply) < MAX_RULE_TEXT + 100
