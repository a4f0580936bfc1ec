"""What the offline server's pure core returns: one ordered list of `Output`s.

`Emit` is a server event to send; the others are actions the I/O layer
(`driver.SessionDriver`) carries out and answers through the `Conversation`.
Ids come from an `IdSource` handed in, so the same inputs give the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtc_agent.offline.validation import JSON

IdSource = Callable[[str], str]  # prefix ("item", "event", ...) -> a new id such as "item_x1"
Clock = Callable[[], float]  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Emit:
    """Send this server event to the client."""

    event: JSON


@dataclass(frozen=True, slots=True)
class DetectSpeech:
    """Action: score pcm with the session's speech detector, then hand the scores to
    `Conversation.append_audio(pcm, probabilities, window_ms)`; the audio joins the
    buffer only then. With `restart`, reset the detector first: the VAD timeline
    restarted (commit, clear or new settings) since it last scored audio."""

    pcm: bytes  # whole samples
    restart: bool


@dataclass(frozen=True, slots=True)
class Recognize:
    """Action: recognise a user audio item (always, so the responder can understand it),
    then call `Conversation.transcription_done`.

    With server VAD the recogniser gets the speech plus a short tail of the silence
    after it. That audio is complete long before silence_duration_ms ends the turn, so
    a `speculative` Recognize with the same `key` comes first; when the turn is
    committed with that key, the I/O layer reuses the running result instead of
    starting late (this takes recognition off the speech_stopped -> reply path). A
    speculative Recognize needs no answer, unless it asks to `report` its text: semantic
    VAD reads it to judge whether the caller has finished (`Conversation.heard_so_far`,
    with None if it could not run).
    """

    item_id: str
    audio: bytes
    emit_events: bool  # input transcription was on when the item was committed
    key: tuple[int, int] | None = None  # (speech start ms, last voiced ms) for VAD turns
    speculative: bool = False
    report: bool = False


@dataclass(frozen=True, slots=True)
class StartResponse:
    """Action: generate the content of a response, feeding it back through
    `response_speech` / `response_function_call` and ending with `response_finish`
    (or `response_fail`). `responder_input` says what to answer."""

    response_id: str


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Action: stop generating a response that was cancelled or interrupted."""

    response_id: str


Output = Emit | DetectSpeech | Recognize | StartResponse | CancelResponse


def event(new_id: IdSource, type_: str, **fields: Any) -> Emit:
    return Emit({"type": type_, "event_id": new_id("event"), **fields})


def stamped(new_id: IdSource, events: list[JSON]) -> list[Output]:
    """Emit rendered events, adding their event_id (last, as they are built without one)."""
    out: list[Output] = []
    for raw in events:
        raw.setdefault("event_id", new_id("event"))
        out.append(Emit(raw))
    return out
