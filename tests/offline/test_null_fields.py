"""An explicit `null` is "not given" wherever the openai SDK's models allow it.

Strict clients send every Optional field (LiveKit's plugin sends
`"instructions": null` in each `response.create`). For each Optional field of
`session.update` and `response.create`, as typed by the installed `openai`
package, nested objects included, the offline backend must treat `null` exactly
as if the field were absent: the same session, or the same error. The few fields
whose null is a setting of its own (turn detection, transcription, noise
reduction, tracing: off) must be accepted and turned off.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from openai.types.beta.realtime.response_create_event import Response as BetaResponse
from openai.types.beta.realtime.session_update_event import Session as BetaSession
from openai.types.realtime.realtime_response_create_params import RealtimeResponseCreateParams
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from pydantic import BaseModel

from rtc_agent.offline.validation import (
    NULL_MEANS_OFF,
    ProtocolError,
    apply_session_update,
    default_session,
    parse_response_options,
)
from rtc_agent.protocol import Dialect

Path = tuple[str | int, ...]

TOOL = {"type": "function", "name": "lookup", "description": "Find a thing.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
PCM = {"type": "audio/pcm", "rate": 24000}

# Every field given, valid for the offline backend: the base each null replaces a part of.
GA_SESSION = {
    "type": "realtime", "model": "gpt-realtime", "instructions": "Be brief.",
    "output_modalities": ["audio"], "max_output_tokens": "inf", "tool_choice": "auto",
    "tools": [TOOL], "tracing": "auto", "truncation": "auto", "parallel_tool_calls": True,
    "prompt": {"id": "pmpt_1", "version": "2", "variables": {"city": "Paris"}},
    "include": ["item.input_audio_transcription.logprobs"], "reasoning": {"effort": "low"},
    "audio": {
        "input": {
            "format": PCM, "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "whisper-1", "language": "en", "prompt": "numbers"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500, "create_response": True,
                               "interrupt_response": True, "idle_timeout_ms": 6000},
        },
        "output": {"format": PCM, "voice": "alloy", "speed": 1.0},
    },
}
GA_SEMANTIC = copy.deepcopy(GA_SESSION)
GA_SEMANTIC["audio"]["input"]["turn_detection"] = {
    "type": "semantic_vad", "eagerness": "low", "create_response": True,
    "interrupt_response": True}
BETA_SESSION = {
    "model": "gpt-4o-realtime-preview", "instructions": "Be brief.",
    "modalities": ["audio", "text"], "voice": "alloy", "speed": 1.0, "temperature": 0.8,
    "input_audio_format": "pcm16", "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "x"},
    "input_audio_noise_reduction": {"type": "far_field"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                       "silence_duration_ms": 500, "create_response": True,
                       "interrupt_response": True},
    "tools": [TOOL], "tool_choice": "auto", "max_response_output_tokens": 200,
    "tracing": "auto",
}
GA_RESPONSE = {
    "instructions": "Answer in one word.", "output_modalities": ["audio"],
    "audio": {"output": {"format": PCM, "voice": "alloy"}}, "tools": [TOOL],
    "tool_choice": {"type": "function", "name": "lookup"}, "conversation": "auto",
    "metadata": {"topic": "test"}, "max_output_tokens": 100, "input": [],
    "prompt": {"id": "pmpt_1"}, "reasoning": {"effort": "low"}, "parallel_tool_calls": False,
}
BETA_RESPONSE = {
    "instructions": "Answer in one word.", "modalities": ["audio", "text"], "voice": "alloy",
    "output_audio_format": "pcm16", "tools": [TOOL], "tool_choice": "auto",
    "temperature": 0.8, "max_response_output_tokens": "inf", "conversation": "auto",
    "metadata": {"topic": "test"}, "input": [],
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models(arg)
    return out


def _nullable(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_nullable(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _nullable(typing.get_args(annotation)[0])
    return annotation is type(None)


def _element(annotation: Any) -> Any:
    """The element type of a List annotation, else None."""
    for arg in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    return None


def _model_for(value: dict[str, Any], candidates: list[type[BaseModel]]) -> type[BaseModel] | None:
    """Of a union of models, the one this value is: by its `type`, else the only one."""
    for model in candidates:
        field = model.model_fields.get("type")
        if field is not None and value.get("type") in typing.get_args(field.annotation):
            return model
    return candidates[0] if len(candidates) == 1 else None


def nullable_paths(model: type[BaseModel], value: dict[str, Any],
                   prefix: Path = ()) -> Iterator[Path]:
    """Every Optional field of `model` present in `value`, nested objects and the first
    element of arrays of objects included."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in value:
            continue
        if _nullable(field.annotation):
            yield (*prefix, key)
        inner = value[key]
        if isinstance(inner, dict):
            sub = _model_for(inner, _models(field.annotation))
            if sub is not None:
                yield from nullable_paths(sub, inner, (*prefix, key))
        elif isinstance(inner, list) and inner and isinstance(inner[0], dict):
            element = _element(field.annotation)
            sub = _model_for(inner[0], _models(element)) if element is not None else None
            if sub is not None:
                yield from nullable_paths(sub, inner[0], (*prefix, key, 0))


def with_path(base: dict[str, Any], path: Path, null: bool) -> dict[str, Any]:
    out = copy.deepcopy(base)
    parent: Any = out
    for step in path[:-1]:
        parent = parent[step]
    if null:
        parent[path[-1]] = None
    else:
        del parent[path[-1]]
    return out


def outcome(run: Any) -> Any:
    try:
        return ("ok", run())
    except ProtocolError as exc:
        return ("error", exc.code, exc.param)


CASES = [
    ("ga session", Dialect.GA, RealtimeSessionCreateRequest, GA_SESSION, "session"),
    ("ga semantic", Dialect.GA, RealtimeSessionCreateRequest, GA_SEMANTIC, "session"),
    ("beta session", Dialect.BETA, BetaSession, BETA_SESSION, "session"),
    ("ga response", Dialect.GA, RealtimeResponseCreateParams, GA_RESPONSE, "response"),
    ("beta response", Dialect.BETA, BetaResponse, BETA_RESPONSE, "response"),
]


def _apply(dialect: Dialect, kind: str, value: dict[str, Any]) -> Any:
    session = default_session("gpt-realtime")
    if kind == "session":
        return apply_session_update(dialect, session, value)
    return parse_response_options(dialect, value, session)


@pytest.mark.parametrize(("name", "dialect", "model", "base", "kind"), CASES,
                         ids=[c[0] for c in CASES])
def test_null_is_not_given_for_every_optional_field_of_the_sdk(
    name: str, dialect: Dialect, model: type[BaseModel], base: dict[str, Any], kind: str,
) -> None:
    assert outcome(lambda: _apply(dialect, kind, base))[0] == "ok", "the base must be valid"
    paths = list(nullable_paths(model, base))
    # the walk reaches nested objects, not only the top level
    assert len(paths) >= 10 and any(len(p) > 1 for p in paths), paths
    off = []
    for path in paths:
        nulled = outcome(lambda p=path: _apply(dialect, kind, with_path(base, p, null=True)))
        if path[-1] in NULL_MEANS_OFF:
            off.append(path)
            assert nulled[0] == "ok", (path, nulled)
            continue
        absent = outcome(lambda p=path: _apply(dialect, kind, with_path(base, p, null=False)))
        assert nulled == absent, path


def test_null_turns_off_what_it_means_off() -> None:
    nulled = with_path(GA_SESSION, ("audio", "input", "turn_detection"), null=True)
    nulled["audio"]["input"]["transcription"] = None
    nulled["audio"]["input"]["noise_reduction"] = None
    nulled["tracing"] = None
    session = apply_session_update(Dialect.GA, default_session("gpt-realtime"), nulled)
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["input"]["noise_reduction"] is None
    assert session["tracing"] is None


def test_livekit_shaped_response_create_is_accepted() -> None:
    """What LiveKit Agents 1.x sends by default: every option, most of them null."""
    opts = parse_response_options(Dialect.GA, {
        "instructions": None, "tools": None, "tool_choice": None, "metadata": None,
        "output_modalities": None, "max_output_tokens": None, "conversation": None,
        "audio": {"output": {"voice": None, "format": None}}, "input": None,
    }, default_session("gpt-realtime"))
    assert opts.instructions == default_session("gpt-realtime")["instructions"]
    assert opts.modalities == ["audio"] and opts.conversation == "auto"
