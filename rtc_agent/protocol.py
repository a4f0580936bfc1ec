"""What the agent and the offline server both know of the Realtime protocol.

The two dialects, how their server event names differ, and the audio format
both speak. Pure and dependency-free (no PyAV, no numpy), so either half, and
the load tester, can import it without pulling in the other's machinery.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Dialect(StrEnum):
    """The Realtime API's two shapes: GA (`/v1/realtime`) and beta (`OpenAI-Beta: realtime=v1`)."""

    GA = "ga"
    BETA = "beta"


# beta server event name -> GA name. Events absent here are named alike in both.
BETA_TO_GA: dict[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}
GA_TO_BETA: dict[str, str] = {ga: beta for beta, ga in BETA_TO_GA.items()}

# What a `response.done`'s usage counts, as the agent sums it (input/output text and
# audio tokens, and cached input tokens).
TOKEN_KINDS = ("input_text", "input_audio", "output_text", "output_audio", "cached")

# pcm16 mono, little-endian: the services' audio format in both directions.
REALTIME_RATE = 24000
BYTES_PER_MS = REALTIME_RATE * 2 // 1000  # 48 bytes per ms

# Azure's `api-version` on `/openai/realtime`: the preview versions and those from
# before the GA protocol (2024-12-17) speak beta; the SDK's GA client sends a
# GA-era version (2025-08-28) on the same path and expects GA.
GA_SINCE = "2025-08-28"
_VERSION = re.compile(r"(\d{4}-\d{2}-\d{2})(-preview)?")


def azure_version_dialect(version: str) -> Dialect:
    """Beta for a `-preview` version or one dated before GA_SINCE; GA otherwise
    (a later or unrecognised version: the GA protocol is the one that lives on)."""
    match = _VERSION.fullmatch(version.strip())
    if match is None:
        return Dialect.GA
    date, preview = match.groups()
    return Dialect.BETA if preview or date < GA_SINCE else Dialect.GA

# Fixed words: the agent asks the model to say a sentence word for word (an idle prompt,
# a goodbye) with this as the `instructions` of one `response.create`. A real model
# follows it; the offline backend's rule responder speaks the quoted text.
SAY_EXACTLY_PREFIX = "Say exactly the following, and nothing else: "
_SAY_EXACTLY = re.compile(re.escape(SAY_EXACTLY_PREFIX.strip()) + r'\s*"(.*)"', re.I | re.S)


def say_exactly(text: str) -> str:
    """Per-response instructions that make the model say text and nothing else."""
    return f'{SAY_EXACTLY_PREFIX}"{text}"'


def parse_say_exactly(instructions: str) -> str | None:
    """The text of say_exactly's instructions (quotes inside it kept), or None when
    instructions are anything else."""
    match = _SAY_EXACTLY.fullmatch(instructions.strip())
    return match.group(1) if match is not None else None
