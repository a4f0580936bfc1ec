"""The server's messages on the `events` data channel, as a script waits for them.

Every message is kept, stamped with its arrival time (`_t`, monotonic), so a
script can look back as well as wait: it notes `len(events)` before acting and
waits from there without racing the server. The bookkeeping lives here, apart
from the peer connection, because its rules (which waits a message resolves,
how a hang-up ends the rest) are what scripts rely on.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtc_agent.datachannel import SERVER_TYPES

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

# The loadtest's own type for a message that was not a JSON object.
INVALID = "_invalid"


def _server_type(name: str) -> str:
    """`name`, checked against the server's protocol: a renamed type fails at import
    instead of leaving every wait for it to time out."""
    if name not in SERVER_TYPES:
        raise RuntimeError(f"{name!r} is not a server message type in rtc_agent.datachannel")
    return name


SESSION_READY = _server_type("session.ready")
SESSION_RESUMED = _server_type("session.resumed")
STATE = _server_type("state")
TRANSCRIPT_DONE = _server_type("transcript.done")
CALL_ENDED = _server_type("call.ended")

# An end reason becomes a failure kind in reports and JSON keys, so only a short
# snake_case word is taken as it is; anything else is counted as SERVER_ENDED.
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
SERVER_ENDED = "server_ended"
MAX_END_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class CallEnded:
    """The server's word that it is ending the call: why (`reason`, e.g.
    `upstream_failed`, `max_duration`, `server_shutdown`) and a human `message`."""

    reason: str
    message: str


def call_ended(event: Event) -> CallEnded | None:
    """The `call.ended` notice in `event`, if it is one, with its reason made safe to
    count by (a missing or odd reason becomes `server_ended`, the message is trimmed)."""
    if event.get("type") != CALL_ENDED:
        return None
    reason = event.get("reason")
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        reason = SERVER_ENDED
    message = event.get("message")
    text = " ".join(message.split()) if isinstance(message, str) else ""
    if len(text) > MAX_END_MESSAGE_CHARS:
        text = text[: MAX_END_MESSAGE_CHARS - 1] + "…"
    return CallEnded(reason, text)


class EventLog:
    """Messages received so far, and the waits for the next one matching a predicate."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._waiters: list[tuple[Predicate, asyncio.Future[Event]]] = []
        self._failure: Callable[[], Exception] | None = None  # set by close()

    def on_message(self, message: str | bytes) -> None:
        """Keep one message (the data channel's `message` handler) and resolve its waits."""
        try:
            event = json.loads(message)
        except ValueError:
            event = {"type": INVALID, "raw": str(message)[:200]}
        if not isinstance(event, dict):
            event = {"type": INVALID, "raw": str(message)[:200]}
        event["_t"] = time.monotonic()
        self.events.append(event)
        if self._waiters:
            remaining = []
            for pred, fut in self._waiters:
                if fut.done():
                    continue
                try:
                    hit = pred(event)
                except Exception as exc:  # a broken predicate fails its own wait only
                    fut.set_exception(exc)
                    continue
                if hit:
                    fut.set_result(event)
                else:
                    remaining.append((pred, fut))
            self._waiters = remaining

    def future(self, predicate: Predicate) -> asyncio.Future[Event]:
        """A future for the next message matching `predicate` (none already received).

        Once the log is closed no message will come: the future fails at once."""
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        if self._failure is not None:
            fut.set_exception(self._failure())
            return fut
        self._waiters.append((predicate, fut))
        return fut

    async def wait(
        self,
        predicate: Predicate,
        timeout: float,  # noqa: ASYNC109
        *,
        start: int | None = None,
        after: float | None = None,
    ) -> Event:
        """The next message matching `predicate`; see `ScriptedCaller.wait_event`."""
        if start is not None or after is not None:
            for event in self.events[start or 0 :]:
                if after is not None and event["_t"] <= after:
                    continue
                if predicate(event):
                    return event
        fut = self.future(predicate)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            fut.cancel()

    def close(self, failure: Callable[[], Exception]) -> None:
        """End every pending wait, and any wait started later, with its own
        `failure()`, so waiters see why the call ended rather than a CancelledError
        they did not ask for or a timeout. The first close's reason stands."""
        if self._failure is None:
            self._failure = failure
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(failure())
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._waiters = []
