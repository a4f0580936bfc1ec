"""What the agent asks of a Realtime session, independent of dialect.

Filled from flags, environment and the config file (`rtc_agent.config`);
rendered into a `session.update` by `rtc_agent.realtime.dialect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TurnDetection:
    """Server VAD settings; the defaults are the original sample's."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True)
class SessionSettings:
    """Instructions, voice, turn detection, transcription, tools and limits of a session."""

    instructions: str = (
        "You are a helpful voice assistant on a phone call. Answer briefly and "
        "speak naturally. Use the search tool for anything current."
    )
    voice: str = "alloy"
    turn_detection: TurnDetection | None = TurnDetection()
    transcription_model: str | None = "whisper-1"
    tool_choice: str = "auto"
    temperature: float | None = 0.8
    max_output_tokens: int | str = "inf"
    text_only: bool = False
