"""How server events and objects look in each dialect (GA or beta).

The conversation keeps the session, items and responses in the GA shape; these
functions render them for the connection's dialect, so every beta/GA difference in
what the server sends is written down once, here. (What clients send is checked and
translated in `validation`.)
"""

from __future__ import annotations

import copy
from typing import Any

from rtc_agent.offline.validation import JSON, PCM_FORMAT
from rtc_agent.protocol import GA_TO_BETA, Dialect

# The part types assistant content has in the internal (GA) shape -> the beta names.
_BETA_PART_TYPES = {"output_text": "text", "output_audio": "audio"}
_AUDIO_PART_TYPES = ("input_audio", "output_audio", "audio")


def event_name(dialect: Dialect, ga_name: str) -> str:
    """This dialect's name for a server event (the table is in rtc_agent.protocol)."""
    return GA_TO_BETA.get(ga_name, ga_name) if dialect is Dialect.BETA else ga_name


def item_out(dialect: Dialect, item: JSON, audio_b64: str | None = None) -> JSON:
    """An internal (GA-shaped) item in this dialect; audio_b64 fills its audio (retrieve)."""
    out = copy.deepcopy(item)
    for part in out.get("content", []) or []:
        if dialect is Dialect.BETA and part.get("type") in _BETA_PART_TYPES:
            part["type"] = _BETA_PART_TYPES[part["type"]]
        if audio_b64 is not None and part.get("type") in _AUDIO_PART_TYPES:
            part["audio"] = audio_b64
    return out


def client_item_events(dialect: Dialect, item: JSON, previous_item_id: str | None) -> list[JSON]:
    """Events announcing a complete client or user item (beta: created; GA: added + done).

    They carry no event_id yet: the conversation stamps it.
    """
    if dialect is Dialect.BETA:
        return [{"type": "conversation.item.created", "previous_item_id": previous_item_id,
                 "item": item_out(dialect, item)}]
    return [
        {"type": "conversation.item.added", "previous_item_id": previous_item_id,
         "item": item_out(dialect, item)},
        {"type": "conversation.item.done", "previous_item_id": previous_item_id,
         "item": item_out(dialect, item)},
    ]


def announces_item_done(dialect: Dialect) -> bool:
    """Whether a finished output item gets conversation.item.done (GA only)."""
    return dialect is Dialect.GA


def names_function_in_arguments_done(dialect: Dialect) -> bool:
    """Whether response.function_call_arguments.done carries `name` (GA only)."""
    return dialect is Dialect.GA


def session_out(dialect: Dialect, s: JSON, session_id: str, expires_at: int) -> JSON:
    """The full effective session object in this dialect's shape."""
    inp, outp = s["audio"]["input"], s["audio"]["output"]
    if dialect is Dialect.GA:
        out = {k: copy.deepcopy(v) for k, v in s.items() if k != "temperature"}
        return {"object": "realtime.session", "id": session_id, "expires_at": expires_at, **out}
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": s["model"],
        "expires_at": expires_at,
        "modalities": ["text", "audio"] if s["output_modalities"] == ["audio"] else ["text"],
        "instructions": s["instructions"],
        "voice": outp["voice"],
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": copy.deepcopy(inp["transcription"]),
        "input_audio_noise_reduction": copy.deepcopy(inp["noise_reduction"]),
        "turn_detection": copy.deepcopy(inp["turn_detection"]),
        "tools": copy.deepcopy(s["tools"]),
        "tool_choice": s["tool_choice"],
        "temperature": s["temperature"],
        "max_response_output_tokens": s["max_output_tokens"],
        "speed": outp["speed"],
        "tracing": s["tracing"],
        "include": s["include"],
        "client_secret": None,
    }


def response_out(dialect: Dialect, r: JSON) -> JSON:
    """A response object from its internal fields (id, status, output items, options...)."""
    base: JSON = {
        "object": "realtime.response",
        "id": r["id"],
        "status": r["status"],
        "status_details": r["status_details"],
        "output": [item_out(dialect, i) for i in r["output"]],
        "conversation_id": r["conversation_id"],
        "max_output_tokens": r["max_output_tokens"],
        "usage": r["usage"],
        "metadata": r["metadata"],
    }
    if dialect is Dialect.BETA:
        base.update(
            modalities=["text", "audio"] if r["modalities"] == ["audio"] else ["text"],
            voice=r["voice"] if isinstance(r["voice"], str) else "alloy",
            output_audio_format="pcm16",
            temperature=r["temperature"],
        )
    else:
        base.update(
            output_modalities=list(r["modalities"]),
            audio={"output": {"format": dict(PCM_FORMAT), "voice": r["voice"]}},
        )
    return base


def rate_limits(dialect: Dialect) -> list[dict[str, Any]]:
    """The (never-limiting) rate limits sent after each response, as each dialect lists them."""
    tokens = {"name": "tokens", "limit": 40000, "remaining": 40000, "reset_seconds": 0.0}
    if dialect is Dialect.BETA:
        return [{"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                tokens]
    return [tokens]
