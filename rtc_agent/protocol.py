"""What the agent and the offline server both know of the Realtime protocol.

The two dialects, how their server event names differ, and the audio format
both speak. Pure and dependency-free (no PyAV, no numpy), so either half, and
the load tester, can import it without pulling in the other's machinery.
"""

from __future__ import annotations

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

# pcm16 mono, little-endian: the services' audio format in both directions.
REALTIME_RATE = 24000
BYTES_PER_MS = REALTIME_RATE * 2 // 1000  # 48 bytes per ms
