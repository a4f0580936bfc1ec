"""Malformed client events never raise out of the offline server's pure core.

A seeded generator (hypothesis is not installed) takes a valid event of every kind
and mutates one to three places in it, nested fields included: odd types, NaN and
the infinities (Python's json accepts them), huge numbers and counts, unhashable
values where a string is expected, deep nesting. Each event must give an `error`
event or a normal result, and what the server would send must be plain JSON.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import random
import reprlib
from typing import Any

import pytest

from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.outputs import DetectSpeech, Emit, Output, Recognize, StartResponse
from rtc_agent.protocol import BYTES_PER_MS, Dialect

pytestmark = pytest.mark.timeout(120)

PCM = base64.b64encode(bytes(100 * BYTES_PER_MS)).decode()
TOOL = {"type": "function", "name": "search", "description": "Look it up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
GA_SESSION = {
    "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
    "instructions": "Be kind.", "tools": [TOOL], "tool_choice": "auto",
    "max_output_tokens": 100, "tracing": "auto", "truncation": "auto", "prompt": None,
    "include": None, "reasoning": {"effort": "low"}, "parallel_tool_calls": True,
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": "whisper-1", "language": "en"},
                  "noise_reduction": {"type": "near_field"},
                  "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                     "prefix_padding_ms": 300, "silence_duration_ms": 200,
                                     "idle_timeout_ms": None, "create_response": True,
                                     "interrupt_response": True}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin",
                   "speed": 1.0}},
}
BETA_SESSION = {
    "modalities": ["text", "audio"], "instructions": "Be kind.", "voice": "alloy",
    "input_audio_format": "pcm16", "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1"},
    "input_audio_noise_reduction": {"type": "far_field"},
    "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
    "tools": [TOOL], "tool_choice": "auto", "temperature": 0.8,
    "max_response_output_tokens": "inf", "speed": 1.1, "tracing": None,
}
ITEMS = [
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "what is two plus two"},
        {"type": "input_audio", "audio": PCM, "transcript": "hi"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text",
                                                          "text": "Four."}]},
    {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Hi."}]},
    {"type": "function_call", "name": "search", "arguments": "{}", "call_id": "call_1"},
    {"type": "function_call_output", "call_id": "call_1", "output": "found it"},
]


def templates(dialect: Dialect, item_id: str | None) -> list[dict[str, Any]]:
    """One valid event of every kind (item_id: an item that exists, when one does)."""
    ref = item_id or "item_missing"
    response: dict[str, Any] = {
        "instructions": "Short.", "tools": [TOOL], "tool_choice": {"type": "function",
                                                                   "name": "search"},
        "conversation": "none", "metadata": {"topic": "x"},
        "input": [{"type": "item_reference", "id": ref}, ITEMS[0]],
    }
    if dialect is Dialect.GA:
        response |= {"output_modalities": ["text"], "max_output_tokens": 50,
                     "audio": {"output": {"voice": "cedar",
                                          "format": {"type": "audio/pcm", "rate": 24000}}}}
    else:
        response |= {"modalities": ["text"], "voice": "verse", "temperature": 0.7,
                     "output_audio_format": "pcm16", "max_response_output_tokens": 50}
    return [
        {"type": "session.update", "event_id": "ev_1",
         "session": GA_SESSION if dialect is Dialect.GA else BETA_SESSION},
        {"type": "input_audio_buffer.append", "audio": PCM},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        *({"type": "conversation.item.create", "item": item, "previous_item_id": None}
          for item in ITEMS),
        {"type": "conversation.item.create", "item": ITEMS[1], "previous_item_id": ref},
        {"type": "conversation.item.truncate", "item_id": ref, "content_index": 0,
         "audio_end_ms": 10},
        {"type": "conversation.item.delete", "item_id": ref},
        {"type": "conversation.item.retrieve", "item_id": ref},
        {"type": "response.create", "response": response},
        {"type": "response.create"},
        {"type": "response.cancel", "response_id": "resp_missing"},
        {"type": "response.cancel"},
    ]


def deep(depth: int) -> Any:
    """A list nested depth levels (built without recursion)."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def odd_value(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 1.5, math.nan, math.inf, -math.inf, 10**40, -(10**40),
        "", "x", "x" * rng.choice([1000, 300_000]), [], ["a", 1], [[]], {}, {"type": []},
        {"type": {"a": 1}}, deep(rng.choice([40, 400, 2000])), {"a": deep(600)},
        [{"type": "item_reference", "id": []}] * rng.choice([3, 5000]),
        [copy.deepcopy(TOOL) for _ in range(rng.choice([2, 500]))], ["audio"] * 3,
        {"type": "function", "name": []},
        "inf", "none", "root", "audio/pcm", "server_vad", "semantic_vad", "pcm16",
    ])


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Places inside a JSON value (dict keys and list indexes): short lists, 12 levels."""
    found = [prefix]
    if len(prefix) >= 12:
        return found
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list) and len(value) <= 8:
        for i, child in enumerate(value):
            found += paths(child, (*prefix, i))
    return found


def mutate(event: dict[str, Any], rng: random.Random) -> Any:
    event = copy.deepcopy(event)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths(event))
        if not path:
            return odd_value(rng)
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rng.random() < 0.15:
            parent.pop(path[-1], None)  # a missing field
        elif isinstance(parent, dict) and rng.random() < 0.1:
            parent[rng.choice(["bogus", "type", "id", "eagerness"])] = odd_value(rng)
        else:
            parent[path[-1]] = odd_value(rng)
    return event


def ids() -> Any:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter)}"


def carry_out(conv: Conversation, outputs: list[Output], rng: random.Random,
              sent: list[dict[str, Any]]) -> None:
    """Answer the actions as the driver would, with fake engines; collect the events."""
    for out in outputs:
        if isinstance(out, Emit):
            sent.append(out.event)
        elif isinstance(out, DetectSpeech):
            windows = len(out.pcm) // (32 * BYTES_PER_MS)
            scores = [rng.random() for _ in range(windows)]
            carry_out(conv, conv.append_audio(out.pcm, scores, 32), rng, sent)
        elif isinstance(out, Recognize) and not out.speculative:
            carry_out(conv, conv.transcription_done(out.item_id, "two plus two",
                                                    out.emit_events), rng, sent)
        elif isinstance(out, StartResponse):
            rid = out.response_id
            conv.responder_input(rid)
            conv.pending_recognition(rid)
            steps = [conv.response_speech(rid, "Four.", bytes(50 * BYTES_PER_MS))]
            if rng.random() < 0.3:
                steps.append(conv.response_function_call(rid, "search", '{"q": 1}'))
            steps.append(conv.response_finish(rid) if rng.random() < 0.8
                         else conv.response_fail(rid, "boom"))
            for step in steps:
                carry_out(conv, step, rng, sent)


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
@pytest.mark.parametrize("seed", range(4))
def test_malformed_events_give_errors_never_exceptions(dialect: Dialect, seed: int) -> None:
    rng = random.Random(seed * 7919 + (dialect is Dialect.BETA))
    conv = Conversation(dialect, new_id=ids(), clock=lambda: 1000.0)
    for n in range(600):
        item_id = conv.items[-1].id if len(conv.items) and rng.random() < 0.8 else None
        base = rng.choice(templates(dialect, item_id))
        event = base if rng.random() < 0.1 else mutate(base, rng)
        sent: list[dict[str, Any]] = []
        try:
            carry_out(conv, conv.handle(event), rng, sent)
            for server_event in sent:
                json.dumps(server_event, allow_nan=False)  # what the socket would carry
        except Exception as exc:  # the report names the event that broke it
            shown = reprlib.Repr()
            shown.maxlevel, shown.maxstring, shown.maxother = 8, 80, 80
            raise AssertionError(f"event {n} (seed {seed}) raised {exc!r}: "
                                 f"{shown.repr(event)}") from exc
    # Whatever came in, the session still answers a plain event.
    out = conv.handle({"type": "input_audio_buffer.clear"})
    assert [o.event["type"] for o in out if isinstance(o, Emit)] == ["input_audio_buffer.cleared"]
