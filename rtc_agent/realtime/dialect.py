"""Beta vs GA: the one place that knows how the two Realtime dialects differ.

The rest of the agent speaks GA event names. Inbound beta events are renamed on
arrival; outbound events that differ in shape (session.update, assistant text
items) are built here.
"""

from __future__ import annotations

from typing import Any

from rtc_agent.protocol import BETA_TO_GA, Dialect
from rtc_agent.realtime.settings import SessionSettings


def normalize_event(dialect: Dialect, event: dict[str, Any]) -> dict[str, Any]:
    """Rename a beta server event to its GA name (in place); GA passes through."""
    if dialect is Dialect.BETA:
        renamed = BETA_TO_GA.get(event.get("type", ""))
        if renamed is not None:
            event["type"] = renamed
    return event


GA_PASSTHROUGH = ("prompt", "reasoning", "truncation", "tracing", "include")


def session_update(
    dialect: Dialect, settings: SessionSettings, tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """The `session.update` event configuring a session in `dialect`'s shape."""
    td = settings.turn_detection.as_dict() if settings.turn_detection else None
    transcription = (
        {"model": settings.transcription_model} if settings.transcription_model else None
    )
    noise = {"type": settings.noise_reduction} if settings.noise_reduction else None
    passthrough = dict(settings.passthrough)
    if dialect is Dialect.BETA:
        session: dict[str, Any] = {
            "modalities": ["text"] if settings.text_only else ["text", "audio"],
            "instructions": settings.instructions,
            "voice": settings.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": transcription,
            "input_audio_noise_reduction": noise,
            "turn_detection": td,
            "tools": tools,
            "tool_choice": settings.tool_choice,
            "max_response_output_tokens": settings.max_output_tokens,
        }
        if settings.temperature is not None:
            session["temperature"] = settings.temperature
        if "tracing" in passthrough:  # the only pass-through setting beta has
            session["tracing"] = passthrough["tracing"]
        return {"type": "session.update", "session": session}
    # GA has no temperature field; sending one is rejected as unknown_parameter.
    pcm = {"type": "audio/pcm", "rate": 24000}
    ga: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["text"] if settings.text_only else ["audio"],
        "instructions": settings.instructions,
        "audio": {
            "input": {"format": pcm, "transcription": transcription,
                      "noise_reduction": noise, "turn_detection": td},
            "output": {"format": pcm, "voice": settings.voice},
        },
        "tools": tools,
        "tool_choice": settings.tool_choice,
        "max_output_tokens": settings.max_output_tokens,
    }
    for key in GA_PASSTHROUGH:
        if key in passthrough:
            ga[key] = passthrough[key]
    return {"type": "session.update", "session": ga}


def text_item(dialect: Dialect, role: str, text: str) -> dict[str, Any]:
    """A `conversation.item.create` for a text message (used for typed text and replay)."""
    if role == "assistant":
        part_type = "text" if dialect is Dialect.BETA else "output_text"
    else:
        part_type = "input_text"
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": part_type, "text": text}],
        },
    }
