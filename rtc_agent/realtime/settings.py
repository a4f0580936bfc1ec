"""What the agent asks of a Realtime session, independent of dialect.

Filled from flags, environment and the config file (`rtc_agent.config`);
rendered into a `session.update` by `rtc_agent.realtime.dialect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EAGERNESS = ("low", "medium", "high", "auto")
NOISE_REDUCTION = ("near_field", "far_field")


@dataclass(frozen=True)
class TurnDetection:
    """How the service finds the end of the caller's turn: server VAD (silence after
    speech; the defaults are the original sample's) or semantic VAD (a model judges
    whether the caller has finished; `eagerness` says how soon it answers)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    type: str = "server_vad"  # or "semantic_vad"
    eagerness: str = "auto"  # semantic VAD only

    def as_dict(self) -> dict[str, Any]:
        if self.type == "semantic_vad":
            # semantic VAD has no threshold, padding or silence: sending them is refused
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
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
    noise_reduction: str | None = None  # "near_field" (headsets, phones) | "far_field"
    # Sent as given where the dialect has them (GA: prompt, reasoning, truncation,
    # tracing, include; beta: tracing): settings the agent itself does not interpret.
    passthrough: tuple[tuple[str, Any], ...] = ()
