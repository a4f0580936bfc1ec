"""The `events` data channel's wire format: parse what the caller sends.

Schema: docs/data-channel.md. Parsing is pure so that every bad input has a
unit test; a bad message becomes a `CallerMessageError`, which the call turns
into an `error` message while the call goes on.
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024
MAX_TEXT_CHARS = 4000
MAX_PLAYOUT_DELAY_MS = 5000
CALLER_TYPES = ("text", "interrupt", "playout", "ping")


class CallerMessageError(Exception):
    """A caller message we refuse, with the code sent back in the `error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_event(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


def parse_caller_message(raw: str | bytes) -> dict[str, Any]:
    """Validate one message from the caller and return it as a dict."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise CallerMessageError(
            "message_too_large", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"
        )
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CallerMessageError("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise CallerMessageError("invalid_message", "expected a JSON object with a string 'type'")
    mtype = message["type"]
    if mtype not in CALLER_TYPES:
        raise CallerMessageError(
            "unknown_type", f"unknown type {mtype!r}; expected one of {', '.join(CALLER_TYPES)}"
        )
    if mtype == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CallerMessageError("invalid_field", "'text' must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise CallerMessageError("invalid_field", f"'text' exceeds {MAX_TEXT_CHARS} characters")
        message["text"] = text.strip()
    elif mtype == "playout":
        delay = message.get("delay_ms")
        if (
            not isinstance(delay, int | float)
            or isinstance(delay, bool)
            or not 0 <= delay <= MAX_PLAYOUT_DELAY_MS
        ):
            raise CallerMessageError(
                "invalid_field", f"'delay_ms' must be a number from 0 to {MAX_PLAYOUT_DELAY_MS}"
            )
    elif mtype == "ping":
        t = message.get("t")
        if t is not None and (not isinstance(t, int | float) or isinstance(t, bool)):
            raise CallerMessageError("invalid_field", "'t' must be a number")
    return message


def encode_server_message(message: dict[str, Any]) -> list[str]:
    """Serialise a server message, splitting long transcript deltas.

    aiortc's SCTP does no path-MTU discovery, so the server keeps messages small:
    a `transcript.delta` whose text is long goes out as several deltas.
    """
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if len(data.encode()) <= 1000 or message.get("type") != "transcript.delta":
        return [data]
    delta: str = message["delta"]
    out: list[str] = []
    step = 200
    for start in range(0, len(delta), step):
        part = dict(message, delta=delta[start : start + step])
        out.append(json.dumps(part, separators=(",", ":"), ensure_ascii=False))
    return out


class TextRateLimit:
    """A token bucket for typed messages: each one cancels a reply and asks for
    another, so a flood would only churn the model. Pure; the caller passes time."""

    def __init__(self, per_second: float = 2.0, burst: int = 5) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
