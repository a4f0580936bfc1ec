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
import time
from collections.abc import Callable
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
STATE = _server_type("state")
TRANSCRIPT_DONE = _server_type("transcript.done")


class EventLog:
    """Messages received so far, and the waits for the next one matching a predicate."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._waiters: list[tuple[Predicate, asyncio.Future[Event]]] = []

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
        """A future for the next message matching `predicate` (none already received)."""
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
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
        """End every pending wait with its own `failure()`, so waiters see why the call
        ended rather than a CancelledError they did not ask for."""
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(failure())
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._waiters = []
