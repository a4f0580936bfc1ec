"""The caller protocol: the `events` data channel's messages, both ways.

Schema: docs/data-channel.md. Everything here is pure. Inbound, every bad input
becomes a `CallerMessageError`, which the call turns into an `error` message
while the call goes on. Outbound, each message type has one constructor, so the
session and the call cannot drift from the schema; `web/` reads the same names
(a test compares them).
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any, Literal

MAX_MESSAGE_BYTES = 16 * 1024
MAX_TEXT_CHARS = 4000
MAX_PLAYOUT_DELAY_MS = 5000
# What one caller may send: the page sends a few messages a second at most, so a
# flood is dropped before it is parsed, and refusals are themselves rate-limited.
CALLER_MESSAGES_PER_S = 20.0
CALLER_MESSAGES_BURST = 40
CALLER_TYPES = ("text", "interrupt", "playout", "ping")
SERVER_TYPES = (
    "session.ready", "state", "transcript.delta", "transcript.done",
    "tool.started", "tool.finished", "error", "pong", "call.ended", "session.resumed", "usage",
)

ServerMessage = dict[str, Any]
Role = Literal["user", "assistant"]


class CallState(StrEnum):
    """The agent's turn state, as the caller's page shows it."""

    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    RECONNECTING = "reconnecting"


# ---------------------------------------------------------------- server -> caller


def session_ready(call_id: str, backend: str, *, node: str | None = None,
                  worker: str | None = None, recorded: bool = False,
                  resume_token: str | None = None) -> ServerMessage:
    """The call is ready; `node` and `worker` name the process that holds it,
    `recorded` says the server records it (the page must show that), and
    `resume_token` lets this caller bring the call back on a new connection."""
    message: ServerMessage = {"type": "session.ready", "call_id": call_id, "backend": backend,
                              "recorded": recorded}
    if resume_token is not None:
        message["resume_token"] = resume_token
    if node is not None:
        message["node"] = node
    if worker is not None:
        message["worker"] = worker
    return message


def session_resumed(call_id: str) -> ServerMessage:
    """The call goes on over the new connection (`POST /calls/{id}/resume`)."""
    return {"type": "session.resumed", "call_id": call_id}


def state_changed(state: CallState) -> ServerMessage:
    return {"type": "state", "state": str(state)}


def transcript_delta(role: Role, item_id: str, delta: str) -> ServerMessage:
    return {"type": "transcript.delta", "role": role, "item_id": item_id, "delta": delta}


def transcript_done(
    role: Role,
    item_id: str,
    text: str,
    *,
    interrupted: bool = False,
    heard_ms: int | None = None,
    audio_ms: int | None = None,
    heard_text: str | None = None,
) -> ServerMessage:
    """A final transcript; spoken assistant replies also say how much was heard, and
    an interrupted one which part of its text (`heard_text`, a prefix of `text`)."""
    message: ServerMessage = {"type": "transcript.done", "role": role, "item_id": item_id,
                              "text": text, "interrupted": interrupted}
    if heard_ms is not None:
        message["heard_ms"] = heard_ms
    if audio_ms is not None:
        message["audio_ms"] = audio_ms
    if heard_text is not None:
        message["heard_text"] = heard_text
    return message


def tool_started(call_id: str, name: str, arguments: dict[str, Any]) -> ServerMessage:
    return {"type": "tool.started", "call_id": call_id, "name": name, "arguments": arguments}


def tool_finished(call_id: str, name: str, ok: bool, duration_ms: int) -> ServerMessage:
    return {"type": "tool.finished", "call_id": call_id, "name": name, "ok": ok,
            "duration_ms": duration_ms}


def error(code: str, message: str) -> ServerMessage:
    return {"type": "error", "code": code, "message": message}


def pong(t: Any, server_t: int) -> ServerMessage:
    return {"type": "pong", "t": t, "server_t": server_t}


def usage(tokens: dict[str, int], cost_usd: float | None) -> ServerMessage:
    """The call's Realtime tokens so far, by kind, after each response; `cost_usd`
    is the estimate from the server's price table (absent without one)."""
    message: ServerMessage = {"type": "usage", "tokens": tokens}
    if cost_usd is not None:
        message["cost_usd"] = cost_usd
    return message


def call_ended(reason: str, message: str) -> ServerMessage:
    """The server is hanging up, and why: `reason` is the call's end reason (the
    metrics' `end_reason`), `message` a sentence the page can show as it is."""
    return {"type": "call.ended", "reason": reason, "message": message}


# ---------------------------------------------------------------- caller -> server


class CallerMessageError(Exception):
    """A caller message we refuse, with the code sent back in the `error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_event(self) -> ServerMessage:
        return error(self.code, self.message)


def parse_caller_message(raw: str | bytes) -> dict[str, Any]:
    """Validate one message from the caller and return it as a dict."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise CallerMessageError(
            "message_too_large", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"
        )
    try:
        message = json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: deep nesting
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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and a browser's JSON.parse) does not.
    raise ValueError(f"{name} is not JSON")


def _finite(value: Any) -> Any:
    """A copy of value with non-finite floats replaced by null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(message: ServerMessage) -> str:
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        # A non-finite number from elsewhere (a model's tool arguments, say) would
        # make the caller's JSON.parse fail on the whole message.
        return json.dumps(_finite(message), separators=(",", ":"), ensure_ascii=False)


def encode_server_message(message: ServerMessage) -> list[str]:
    """Serialise a server message as strict JSON, splitting long transcript deltas.

    aiortc's SCTP does no path-MTU discovery, so the server keeps messages small:
    a `transcript.delta` whose text is long goes out as several deltas.
    """
    data = _dumps(message)
    if len(data.encode()) <= 1000 or message.get("type") != "transcript.delta":
        return [data]
    delta: str = message["delta"]
    out: list[str] = []
    step = 200
    for start in range(0, len(delta), step):
        out.append(_dumps(dict(message, delta=delta[start : start + step])))
    return out


class TokenBucket:
    """`per_second` events on average, `burst` at once. Pure; the caller passes time.

    Used for everything a caller sends (floods are dropped unparsed), for typed
    messages (each cancels a reply and asks for another, so a flood would only
    churn the model), and for the error replies to refused messages."""

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
