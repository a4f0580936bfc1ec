"""Live captions, fixed words, tools named by the user, and settings passed through.

Each on the pure state machine first, then over the WebSocket: with the openai SDK (GA,
every event checked against its typed model) and a raw beta client where the beta
dialect has the feature.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from rtc_agent.offline.conversation import MAX_TRANSCRIPTION_DELTAS, word_deltas
from rtc_agent.offline.outputs import Recognize, StartResponse
from rtc_agent.offline.responder import RuleResponder
from rtc_agent.offline.server import RealtimeServer
from rtc_agent.protocol import SAY_EXACTLY_PREFIX, Dialect, parse_say_exactly, say_exactly
from tests.offline.conftest import RawClient, collect, connect, sdk_append, sdk_client, speech
from tests.offline.sdk_types import validate
from tests.offline.test_conversation import BETA, GA, actions, events, make, silence, tone
from tests.speech import hears

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"

# --- live captions --------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [GA, BETA])
def test_a_transcript_goes_out_word_by_word_then_whole(dialect: Dialect) -> None:
    s = make(GA, audio={"input": {"transcription": {"model": "whisper-1"}}}) if dialect is GA \
        else make(BETA, input_audio_transcription={"model": "whisper-1"})
    out = s.append(silence(300) + tone(600) + silence(600))
    [final] = [a for a in actions(out) if isinstance(a, Recognize) and not a.speculative]
    assert final.emit_events
    done = s.conv.transcription_done(final.item_id, "what is twelve times seven", emit=True)
    kinds = [e["type"] for e in events(done)]
    assert kinds == [DELTA] * 5 + [COMPLETED]
    deltas = [e["delta"] for e in events(done)[:-1]]
    assert deltas == ["what", " is", " twelve", " times", " seven"]
    assert "".join(deltas) == events(done)[-1]["transcript"]
    for event in events(done):
        assert event["item_id"] == final.item_id and event["content_index"] == 0
        validate(event, beta=dialect is BETA)


def test_a_long_transcript_is_grouped_into_few_deltas() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    parts = word_deltas(text)
    assert len(parts) <= MAX_TRANSCRIPTION_DELTAS and "".join(parts) == text
    assert word_deltas("hello") == ["hello"]
    assert "".join(word_deltas("a  b ")) == "a  b "  # spacing kept as recognised


def test_no_deltas_for_nothing_heard_or_with_transcription_off() -> None:
    s = make(audio={"input": {"transcription": {"model": "whisper-1"}}})
    out = s.append(silence(300) + tone(600) + silence(600))
    [final] = [a for a in actions(out) if isinstance(a, Recognize) and not a.speculative]
    assert types_of(s.conv.transcription_done(final.item_id, "", emit=True)) == [COMPLETED]
    assert s.conv.transcription_done(final.item_id, "hello there", emit=False) == []


def types_of(outputs: list[Any]) -> list[str]:
    return [e["type"] for e in events(outputs)]


async def test_sdk_captions_stream_after_the_user_item(server: RealtimeServer) -> None:
    pcm = speech("what is twelve times seven").tobytes()
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "audio": {"input": {
                                               "transcription": {"model": "whisper-1"}}}})
        await sdk_append(conn, pcm)
        got = await collect(conn, COMPLETED, 60)
    names = [e.type for e in got]
    user_done = next(i for i, e in enumerate(got)
                     if e.type == "conversation.item.done" and e.item.role == "user")
    deltas = [i for i, n in enumerate(names) if n == DELTA]
    assert len(deltas) == 5 and deltas[0] > user_done  # the item exists before its captions
    assert "".join(got[i].delta for i in deltas) == got[-1].transcript
    assert got[-1].transcript == "what is twelve times seven"
    assert {got[i].item_id for i in deltas} == {got[-1].item_id, got[user_done].item.id}


async def test_beta_captions(server: RealtimeServer) -> None:
    client = await connect(server, beta=True)
    await client.send({"type": "session.update", "session": {
        "modalities": ["text"], "input_audio_transcription": {"model": "whisper-1"}}})
    await client.until("session.updated")
    await client.append_pcm(speech("what is nine plus four"))
    got = await client.until(COMPLETED, 60)
    for event in got:
        validate(event, beta=True)
    created = next(i for i, e in enumerate(got) if e["type"] == "conversation.item.created")
    deltas = [e for e in got[created:] if e["type"] == DELTA]
    assert len(deltas) >= 4
    assert "".join(e["delta"] for e in deltas) == got[-1]["transcript"]
    await client.close()


# --- fixed words ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Are you still there?", 'He said "stop".', "", "two\nlines"])
def test_say_exactly_round_trip(text: str) -> None:
    instructions = say_exactly(text)
    assert instructions.startswith(SAY_EXACTLY_PREFIX)
    assert parse_say_exactly(instructions) == text
    assert parse_say_exactly("  " + instructions.lower() + "\n") is not None


@pytest.mark.parametrize("other", ["Be brief.", SAY_EXACTLY_PREFIX + "no quotes",
                                   say_exactly("x") + " Then add a joke."])
def test_other_instructions_are_not_fixed_words(other: str) -> None:
    assert parse_say_exactly(other) is None


def test_fixed_words_are_per_response() -> None:
    s = make()
    s.user_text("what is twelve times seven")
    rid = s.start_response(instructions=say_exactly("Goodbye."))
    request = s.conv.responder_input(rid)
    assert request.response_instructions == say_exactly("Goodbye.")
    assert RuleResponder().decide(request) == ["Goodbye."]
    s.conv.response_finish(rid)
    # As the session's instructions they are not followed: only given per response.
    s.send({"type": "session.update", "session": {"type": "realtime",
                                                  "instructions": say_exactly("Goodbye.")}})
    rid = s.start_response()
    request = s.conv.responder_input(rid)
    assert request.response_instructions is None
    assert RuleResponder().decide(request) == ["Twelve times seven is eighty-four."]


async def test_sdk_response_says_exactly_the_words(server: RealtimeServer) -> None:
    words = "Are you still there? I will hang up soon."
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is twelve times seven?"}]})
        await conn.response.create(response={"instructions": say_exactly(words)})
        got = await collect(conn, "response.done")
        transcript = "".join(e.delta for e in got
                             if e.type == "response.output_audio_transcript.delta")
        assert transcript == words
        assert got[-1].response.output[0].content[0].transcript == words
        audio = b"".join(base64.b64decode(e.delta) for e in got
                         if e.type == "response.output_audio.delta")
        assert hears(audio, 24000, "still")
        # The next response without them answers the conversation again.
        await conn.response.create()
        got = await collect(conn, "response.done")
        assert got[-1].response.output[0].content[0].transcript == \
            "Twelve times seven is eighty-four."


async def test_beta_response_says_exactly_the_words(server: RealtimeServer) -> None:
    client = await connect(server, beta=True)
    await client.send({"type": "response.create", "response": {
        "modalities": ["text"], "instructions": say_exactly("Goodbye, and thanks for calling.")}})
    got = await client.until("response.done")
    for event in got:
        validate(event, beta=True)
    assert [e["text"] for e in got if e["type"] == "response.text.done"] == [
        "Goodbye, and thanks for calling."]
    await client.close()


# --- tools named by the user ------------------------------------------------------------

ORDER_TOOL = {"type": "function", "name": "shop__lookup_order", "description": "Find an order.",
              "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                             "required": ["order_id"]}}
SEARCH_TOOL = {"type": "function", "name": "web_search", "description": "Search the web.",
               "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                              "required": ["query"]}}
DOCS_TOOL = {"type": "function", "name": "docs__search", "description": "Search the docs.",
             "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                            "required": ["query"]}}


def test_a_named_mcp_tool_is_called_in_the_conversation() -> None:
    s = make(tools=[SEARCH_TOOL, ORDER_TOOL])
    s.user_text("Use the tool lookup_order with 42")
    rid = s.start_response()
    [call] = RuleResponder().decide(s.conv.responder_input(rid))
    out = s.conv.response_function_call(rid, call.name, call.arguments)  # type: ignore[union-attr]
    done = next(e for e in events(out) if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "shop__lookup_order"
    assert json.loads(done["arguments"]) == {"order_id": "42"}


async def test_sdk_text_turn_calls_the_named_tool(server: RealtimeServer) -> None:
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "tools": [SEARCH_TOOL, ORDER_TOOL]})
        await collect(conn, "session.updated")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Use the tool lookup order with 42."}]})
        await conn.response.create()
        got = await collect(conn, "response.done")
        [call] = got[-1].response.output
        assert call.type == "function_call" and call.name == "shop__lookup_order"
        assert json.loads(call.arguments) == {"order_id": "42"}
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call.call_id,
            "output": json.dumps({"status": "Order 42 was shipped on Monday."})})
        await conn.response.create()
        got = await collect(conn, "response.done")
        assert got[-1].response.output[0].content[0].transcript == \
            "Here is what I found: Order 42 was shipped on Monday."


async def test_sdk_audio_turn_calls_the_tool_it_hears(server: RealtimeServer) -> None:
    """Speech renders the name with spaces ("docs search" is not said; "search" is)."""
    pcm = speech("use the tool search with cats").tobytes()
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "tools": [DOCS_TOOL]})
        await collect(conn, "session.updated")
        await sdk_append(conn, pcm)
        got = await collect(conn, "response.done", 60)
        [call] = got[-1].response.output
        assert call.name == "docs__search"
        assert json.loads(call.arguments) == {"query": "cats"}


# --- settings passed through ----------------------------------------------------------

PROMPT = {"id": "pmpt_123", "version": "7", "variables": {
    "city": "Paris", "logo": {"type": "input_text", "text": "x"}}}
TRUNCATION = {"type": "retention_ratio", "retention_ratio": 0.8,
              "token_limits": {"post_instructions": 5000}}
TRACING = {"workflow_name": "calls", "group_id": "g1", "metadata": {"k": "v"}}
INCLUDE = ["item.input_audio_transcription.logprobs"]
DEEP: Any = 1
for _ in range(40):  # deeper than any free-form object may be
    DEEP = [DEEP]


@pytest.mark.parametrize(("key", "value"), [
    ("prompt", PROMPT), ("prompt", {"id": "pmpt_1"}),
    ("reasoning", {"effort": "minimal"}), ("reasoning", {"effort": "xhigh"}), ("reasoning", {}),
    ("truncation", TRUNCATION), ("truncation", {"type": "retention_ratio",
                                                "retention_ratio": 0}),
    ("truncation", "disabled"), ("truncation", "auto"),
    ("tracing", TRACING), ("tracing", "auto"), ("tracing", None),
    ("include", INCLUDE), ("include", []),
    ("parallel_tool_calls", False),
])
def test_ga_passthrough_settings_are_echoed(key: str, value: Any) -> None:
    s = make()
    out = events(s.send({"type": "session.update", "session": {"type": "realtime",
                                                                 key: value}}))
    assert [e["type"] for e in out] == ["session.updated"], out
    assert out[0]["session"][key] == value
    validate(out[0])
    assert events(s.conv.created())[0]["session"][key] == value  # kept, not just echoed


@pytest.mark.parametrize(("key", "value"), [("tracing", TRACING), ("tracing", "auto"),
                                            ("tracing", None), ("include", INCLUDE)])
def test_beta_passthrough_settings_are_echoed(key: str, value: Any) -> None:
    s = make(BETA)
    out = events(s.send({"type": "session.update", "session": {key: value}}))
    assert out[0]["type"] == "session.updated" and out[0]["session"][key] == value
    validate(out[0], beta=True)


@pytest.mark.parametrize("key", ["prompt", "reasoning", "truncation", "parallel_tool_calls"])
def test_beta_has_no_ga_only_settings(key: str) -> None:
    s = make(BETA)
    err = events(s.send({"type": "session.update", "session": {key: {}}}))[0]["error"]
    assert (err["code"], err["param"]) == ("unknown_parameter", f"session.{key}")


@pytest.mark.parametrize(("key", "value", "code", "param"), [
    ("prompt", {"version": "1"}, "missing_required_parameter", "session.prompt.id"),
    ("prompt", {"id": 5}, "invalid_type", "session.prompt.id"),
    ("prompt", {"id": "p", "extra": 1}, "unknown_parameter", "session.prompt.extra"),
    ("prompt", {"id": "p", "variables": {"a": 1}}, "invalid_type", "session.prompt.variables.a"),
    ("prompt", "pmpt_1", "invalid_type", "session.prompt"),
    ("reasoning", {"effort": "max"}, "invalid_value", "session.reasoning.effort"),
    ("reasoning", {"budget": 1}, "unknown_parameter", "session.reasoning.budget"),
    ("truncation", "sometimes", "invalid_value", "session.truncation"),
    ("truncation", {"type": "retention_ratio"}, "missing_required_parameter",
     "session.truncation.retention_ratio"),
    ("truncation", {"type": "retention_ratio", "retention_ratio": 1.5}, "decimal_out_of_range",
     "session.truncation.retention_ratio"),
    ("truncation", {"type": "ratio", "retention_ratio": 0.5}, "invalid_value",
     "session.truncation.type"),
    ("truncation", {"type": "retention_ratio", "retention_ratio": 0.5,
                    "token_limits": {"post_instructions": -1}}, "integer_below_min_value",
     "session.truncation.token_limits.post_instructions"),
    ("tracing", "on", "invalid_value", "session.tracing"),
    ("tracing", {"workflow_name": 3}, "invalid_type", "session.tracing.workflow_name"),
    ("tracing", {"metadata": {"deep": DEEP}}, "invalid_value", "session.tracing"),
    ("include", ["item.everything"], "invalid_value", "session.include[0]"),
    ("include", "item.input_audio_transcription.logprobs", "invalid_type", "session.include"),
    ("parallel_tool_calls", "yes", "invalid_type", "session.parallel_tool_calls"),
])
def test_bad_passthrough_settings_are_refused(key: str, value: Any, code: str,
                                              param: str) -> None:
    s = make()
    before = events(s.conv.created())[0]["session"]
    err = events(s.send({"type": "session.update", "session": {"type": "realtime",
                                                                 key: value}}))[0]["error"]
    assert (err["code"], err["param"]) == (code, param)
    after = events(s.conv.created())[0]["session"]
    assert {k: v for k, v in after.items() if k != "id"} == \
        {k: v for k, v in before.items() if k != "id"}  # the update was dropped whole


@pytest.mark.parametrize(("response", "param"), [
    ({"prompt": {"version": "1"}}, "response.prompt.id"),
    ({"reasoning": {"effort": "max"}}, "response.reasoning.effort"),
    ({"parallel_tool_calls": 1}, "response.parallel_tool_calls"),
])
def test_response_level_settings_are_checked(response: dict[str, Any], param: str) -> None:
    s = make()
    assert events(s.send({"type": "response.create", "response": response}))[0][
        "error"]["param"] == param
    out = s.send({"type": "response.create", "response": {
        "prompt": PROMPT, "reasoning": {"effort": "low"}, "parallel_tool_calls": True}})
    assert isinstance(out[-1], StartResponse)


async def test_sdk_session_update_with_every_passthrough_setting(server: RealtimeServer) -> None:
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={
            "type": "realtime", "prompt": PROMPT, "reasoning": {"effort": "low"},
            "truncation": TRUNCATION, "tracing": TRACING, "include": INCLUDE})
        updated = (await collect(conn, "session.updated"))[-1].session
        assert updated.prompt.id == "pmpt_123" and updated.prompt.version == "7"
        assert updated.prompt.variables["city"] == "Paris"
        assert updated.reasoning.effort == "low"
        assert updated.truncation.retention_ratio == 0.8
        assert updated.truncation.token_limits.post_instructions == 5000
        assert updated.tracing.workflow_name == "calls"
        assert updated.include == INCLUDE
        # A bad one is refused and leaves the session as it was.
        await conn.session.update(session={"type": "realtime",
                                           "reasoning": {"effort": "maximum"}})
        err = (await collect(conn, "error"))[-1].error
        assert err.param == "session.reasoning.effort"


async def test_beta_session_update_with_tracing_and_include(server: RealtimeServer) -> None:
    client: RawClient = await connect(server, beta=True)
    await client.send({"type": "session.update", "session": {"tracing": TRACING,
                                                             "include": INCLUDE}})
    updated = (await client.until("session.updated"))[-1]
    validate(updated, beta=True)
    assert updated["session"]["tracing"] == TRACING and updated["session"]["include"] == INCLUDE
    await client.send({"type": "session.update", "session": {"truncation": "auto"}})
    assert (await client.error())["code"] == "unknown_parameter"
    await client.close()

