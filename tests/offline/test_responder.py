"""The rule responder, number words, sentence splitting and the chat-completions responder."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aiohttp import web

from rtc_agent.offline.driver import split_sentences
from rtc_agent.offline.responder import (
    IDLE_PROMPT,
    MAX_SAY_CHARS,
    ChatCompletionsResponder,
    FunctionCall,
    RuleResponder,
    arithmetic,
    named_tool_arguments,
    number_to_words,
)
from rtc_agent.offline.responses import ResponderInput, Turn
from rtc_agent.protocol import say_exactly

TOOL = {"type": "function", "name": "web_search", "parameters": {
    "type": "object", "properties": {"limit": {"type": "integer"}, "q": {"type": "string"}}}}


def ask(text: str, tools: list | None = None, tool_choice: str = "auto") -> list:
    request = ResponderInput("", tools or [], tool_choice, ["audio"],
                             [Turn("user", "message", text=text)])
    fixed = dt.datetime(2026, 3, 5, 14, 7)
    return RuleResponder(now=lambda: fixed).decide(request)


@pytest.mark.parametrize(("n", "words"), [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (84, "eighty-four"),
    (100, "one hundred"), (105, "one hundred and five"), (1999, "one thousand nine hundred "
                                                         "and ninety-nine"),
    (-7, "minus seven"), (2_000_000, "two million"),
])
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(("question", "answer"), [
    ("what is twelve times seven", "twelve times seven is eighty-four."),
    ("What's 12 * 7?", "twelve times seven is eighty-four."),
    ("what is nine plus four", "nine plus four is thirteen."),
    ("what is three minus ten", "three minus ten is minus seven."),
    ("what is one hundred divided by eight", "one hundred divided by eight is twelve point five."),
    ("how much is twenty one multiplied by two", "twenty-one multiplied by two is forty-two."),
    ("what is five divided by zero", "five divided by zero is not defined."),
])
def test_arithmetic(question: str, answer: str) -> None:
    assert arithmetic(question) == answer


def test_rules() -> None:
    assert ask("what is twelve times seven") == ["Twelve times seven is eighty-four."]
    assert ask("what time is it") == ["It is two oh seven in the afternoon."]
    assert ask("what is the date today") == ["Today is Thursday, March 5, 2026."]
    assert ask("good morning") == ["Hello! How can I help you today?"]
    assert ask("the sky is blue") == ["I heard: the sky is blue."]
    assert ask("") == ["Sorry, I did not catch that."]
    (count,) = ask("count to twenty")
    assert count.startswith("One, two, three") and count.endswith("nineteen, twenty.")
    (story,) = ask("tell me a story")
    assert len(story.split()) > 60  # > 8 s of speech


def test_tool_call_rules() -> None:
    (call,) = ask("search for the best pizza in Naples", [TOOL])
    assert call == FunctionCall("web_search", json.dumps({"q": "the best pizza in Naples"}))
    (call,) = ask("Get the latest news about the Mars rover.", [TOOL])
    assert json.loads(call.arguments) == {"q": "the Mars rover"}
    # No tools, or tool_choice none: the rules answer in words instead.
    assert ask("search for cats") == ["I heard: search for cats."]
    assert ask("search for cats", [TOOL], "none") == ["I heard: search for cats."]


ORDER = {"type": "function", "name": "shop__lookup_order", "description": "Find an order.",
         "parameters": {"type": "object", "properties": {
             "verbose": {"type": "boolean"}, "order_id": {"type": "string"}},
             "required": ["verbose", "order_id"]}}
COUNTER = {"type": "function", "name": "add-items", "parameters": {
    "type": "object", "properties": {"count": {"type": "integer"}}}}
PING = {"type": "function", "name": "ping"}


@pytest.mark.parametrize(("said", "name", "arguments"), [
    # by its own name, or by the part after the MCP prefix; "_", "-" and spaces alike
    ("use the tool shop__lookup_order with 42", "shop__lookup_order", {"order_id": "42"}),
    ("Use the tool lookup_order with 42.", "shop__lookup_order", {"order_id": "42"}),
    ("use the tool lookup order with forty two", "shop__lookup_order", {"order_id": "42"}),
    ("please use the tool look up order with A-17, please", "shop__lookup_order",
     {"order_id": "A-17"}),
    ("call the tool shop lookup-order with the argument blue box", "shop__lookup_order",
     {"order_id": "blue box"}),
    # the only parameter, converted to its type; a tool without parameters gets {}
    ("use the tool add items with twelve", "add-items", {"count": 12}),
    ("use the tool add_items with 7", "add-items", {"count": 7}),
    ("use the tool ping", "ping", {}),
    ("use the tool ping with everything", "ping", {}),
    ("use the tool lookup order", "shop__lookup_order", {}),  # no argument said
])
def test_a_named_tool_is_called(said: str, name: str, arguments: dict) -> None:
    (call,) = ask(said, [ORDER, COUNTER, PING, TOOL])
    assert isinstance(call, FunctionCall) and call.name == name
    assert json.loads(call.arguments) == arguments


def test_the_longest_matching_name_wins() -> None:
    lookup = {"type": "function", "name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}
    (call,) = ask("use the tool lookup order with 5", [lookup, ORDER])
    assert call.name == "shop__lookup_order"
    (call,) = ask("use the tool lookup with order 5", [lookup, ORDER])
    assert (call.name, json.loads(call.arguments)) == ("lookup", {"q": "order 5"})


def test_an_unknown_or_unavailable_tool_is_said_so() -> None:
    assert ask("use the tool teleport with Mars", [ORDER]) == [
        "I have no tool called teleport."]
    assert ask("use the tool lookup order with 42", [ORDER], "none") == [
        "I have no tool called lookup order."]
    assert ask("use the tool " + "x" * 400) == ["I have no tool called " + "x" * 64 + "."]


@pytest.mark.parametrize(("schema", "arguments"), [
    # first required string, else the only parameter, else the first string, else the
    # first required one; numbers said in words become numbers
    ({"properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
      "required": ["a", "b"]}, {"b": "40"}),
    ({"properties": {"flag": {"type": "boolean"}}}, {"flag": "40"}),
    ({"properties": {"n": {"type": "number"}, "s": {"type": ["string", "null"]}}},
     {"s": "40"}),
    ({"properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}, "required": ["m"]},
     {"m": 40}),
    ({"properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}}, {}),
    ({"properties": {"tags": {"type": "array"}}}, {"tags": ["forty"]}),
    ({"properties": {}}, {}),
])
def test_where_the_argument_goes(schema: dict, arguments: dict) -> None:
    tool = {"type": "function", "name": "t", "parameters": {"type": "object", **schema}}
    assert json.loads(named_tool_arguments(tool, "forty")) == arguments
    assert json.loads(named_tool_arguments(
        {"name": "t", "parameters": {"type": "object", "properties": {
            "on": {"type": "boolean"}}}}, "yes")) == {"on": True}


def test_fixed_words_given_for_the_response_are_said() -> None:
    turns = [Turn("user", "message", text="what is twelve times seven")]
    text = 'Thank you for calling. Say "bye" to Bob!'
    request = ResponderInput("Be brief.", [TOOL], "auto", ["audio"], turns,
                             response_instructions=say_exactly(text))
    assert RuleResponder().decide(request) == [text]
    # The same words as the session's instructions are no order for this response.
    request = ResponderInput(say_exactly(text), [TOOL], "auto", ["audio"], turns)
    assert RuleResponder().decide(request) == ["Twelve times seven is eighty-four."]
    # Other instructions for the response change nothing in the rules.
    request = ResponderInput("x", [], "auto", ["audio"], turns, response_instructions="Be kind.")
    assert RuleResponder().decide(request) == ["Twelve times seven is eighty-four."]
    long = ResponderInput("", [], "auto", ["audio"], turns,
                          response_instructions=say_exactly("word " * 5000))
    (said,) = RuleResponder().decide(long)
    assert len(said) <= MAX_SAY_CHARS
    empty = ResponderInput("", [], "auto", ["audio"], turns,
                           response_instructions=say_exactly("  "))
    assert RuleResponder().decide(empty) == []


def test_an_idle_turn_gets_the_idle_prompt() -> None:
    idle = ResponderInput("", [], "auto", ["audio"], [Turn("user", "message", idle=True)])
    assert RuleResponder().decide(idle) == [IDLE_PROMPT]


def test_answer_from_tool_output() -> None:
    turns = [Turn("user", "message", text="look up Rome"),
             Turn("assistant", "function_call", name="web_search", call_id="c", arguments="{}"),
             Turn("tool", "function_call_output", call_id="c",
                  text=json.dumps({"results": [{"title": "x", "content":
                                                "Rome is the capital of Italy. It is old."}]}))]
    out = RuleResponder().decide(ResponderInput("", [TOOL], "auto", ["audio"], turns))
    assert out == ["Here is what I found: Rome is the capital of Italy."]


def test_split_sentences_keeps_the_unfinished_rest() -> None:
    assert split_sentences("Hello there. How are") == (["Hello there."], "How are")
    assert split_sentences("One. Two! Three? ") == (["One.", "Two!", "Three?"], "")
    assert split_sentences("It costs 2.") == ([], "It costs 2.")  # might continue: "2.5"


async def fake_llm(seen: list[dict]) -> tuple[web.AppRunner, int]:
    """A tiny OpenAI-compatible chat-completions server that streams fixed replies."""

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if body.get("tools"):
            chunks = [{"tool_calls": [{"index": 0, "id": "call_9", "function": {
                "name": "web_search", "arguments": '{"q": '}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '"cats"}'}}]}]
        else:
            chunks = [{"content": "Hello"}, {"content": " world."}]
        for delta in chunks:
            await resp.write(f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_chat_completions_responder_streams_text_and_tool_calls() -> None:
    seen: list[dict] = []
    runner, port = await fake_llm(seen)
    try:
        llm = ChatCompletionsResponder(f"http://127.0.0.1:{port}/v1", model="m")
        turns = [Turn("user", "message", text="hi")]
        parts = [p async for p in llm.reply(ResponderInput("Be nice.", [], "auto", ["audio"],
                                                            turns))]
        assert "".join(parts) == "Hello world."
        assert seen[0]["messages"][0] == {"role": "system", "content": "Be nice."}
        assert seen[0]["stream"] is True and seen[0]["model"] == "m"
        parts = [p async for p in llm.reply(ResponderInput("", [TOOL], "auto", ["audio"],
                                                            turns))]
        assert parts == [FunctionCall("web_search", '{"q": "cats"}', "call_9")]
        assert seen[1]["tools"][0]["function"]["name"] == "web_search"
    finally:
        await runner.cleanup()


async def test_llm_url_end_to_end(engines) -> None:
    """`--llm-url`: the server's replies and tool calls come from the endpoint."""
    from dataclasses import replace

    from tests.offline.conftest import connect, start_server

    seen: list[dict] = []
    runner, port = await fake_llm(seen)
    llm = ChatCompletionsResponder(f"http://127.0.0.1:{port}/v1")
    srv = await start_server(replace(engines, responder=llm))
    try:
        client = await connect(srv)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                            "text": "hi"}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert done["transcript"] == "Hello world."
        assert seen[-1]["messages"][-1] == {"role": "user", "content": "hi"}
        await client.send({"type": "session.update", "session": {"type": "realtime",
                                                                 "tools": [TOOL]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        call = events[-1]["response"]["output"][0]
        assert call["type"] == "function_call" and call["call_id"] == "call_9"
        assert call["arguments"] == '{"q": "cats"}'
        await client.close()
    finally:
        await srv.stop()
        await runner.cleanup()
