"""The WebSocket to a Realtime service: connect, read, write, reconnect.

A thin I/O shell around `RealtimeSession`: it turns frames into event dicts
(normalised to GA names) and queued events into frames. Sending never blocks
the media path: audio goes into a small ring that drops its oldest chunk when
the service stalls, control events into a bounded queue. A control event cannot
be dropped without the session falling out of step with the service (a lost
`response.cancel` or `conversation.item.truncate`), so a full control queue
drops the socket instead: the reconnect replays the conversation and both sides
start again in step. A stalled service is also found by the WebSocket keepalive.
`renew` replaces the session on purpose (before the service's cap), the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from rtc_agent.realtime.dialect import normalize_event
from rtc_agent.realtime.service import RealtimeService

log = logging.getLogger(__name__)

# Close codes after which retrying cannot help (auth, unknown model, beta shape).
FATAL_CLOSE_CODES = frozenset({3000, 4000})
MAX_AUDIO_BACKLOG = 50  # 1 s of 20 ms chunks
MAX_CONTROL_BACKLOG = 512


MAX_REFUSAL_BODY = 4096  # of an HTTP refusal's body, read for its error code and message
MAX_DETAIL_CHARS = 200


class UpstreamFailed(Exception):
    """The service could not be reached, or refused us for good.

    `kind` says which, for /healthz: "unauthorized" (HTTP 401/403: the key),
    "unreachable" (no connection, timeouts) or "refused" (any other refusal: an
    unknown model or deployment, a fatal close code)."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


def _printable(text: str) -> str:
    """A service's words, made safe for one log line and a caller's notice."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(cleaned.split())[:MAX_DETAIL_CHARS]


def refusal_detail(body: bytes | bytearray | None) -> str:
    """`code: message` from an HTTP refusal's JSON body (OpenAI and Azure answer
    `{"error": {"code", "message"}}`), else its first line; "" when it says nothing.
    The body is the service's (or a proxy's): read defensively, a bounded prefix."""
    if not body:
        return ""
    head = body[:MAX_REFUSAL_BODY].decode("utf-8", "replace")
    try:
        data = json.loads(head)
    except (ValueError, RecursionError):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        parts = [str(p) for p in (code, message) if isinstance(p, str | int) and p != ""]
        return _printable(": ".join(parts))
    if isinstance(error, str):
        return _printable(error)
    lines = head.strip().splitlines()
    return _printable(lines[0]) if lines and not head.lstrip().startswith("{") else ""


def refused(exc: InvalidStatus) -> UpstreamFailed:
    status = exc.response.status_code
    detail = refusal_detail(exc.response.body)
    kind = "unauthorized" if status in (401, 403) else "refused"
    what = "refused the API key" if kind == "unauthorized" else "refused the connection"
    return UpstreamFailed(f"{what}: HTTP {status}" + (f" ({detail})" if detail else ""), kind)


async def open_socket(service: RealtimeService, timeout_s: float,
                      connector: Callable[..., Awaitable[ClientConnection]] = connect,
                      ) -> ClientConnection:
    """The WebSocket to the service, as every call opens it."""
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
    # lands as the connect completes, and the hung-up call's task would go on
    # serving a socket nobody closes.
    async with asyncio.timeout(timeout_s + 1):
        return await connector(
            service.url,
            additional_headers=dict(service.headers),
            max_size=16 * 1024 * 1024,
            open_timeout=timeout_s,
            ping_interval=20,
            ping_timeout=20,
            # Deflating base64 audio 50 times a second was 8 % of the server's busy
            # time (docs/benchmarks.md) and saves little: CPU, not bandwidth, is what
            # limits calls per box.
            compression=None,
        )


async def probe(service: RealtimeService, timeout_s: float = 10.0) -> UpstreamFailed | None:
    """Connect, authenticate and close, as a call would: None when the service
    accepted us (its first event is not an error), else why not. For `serve`'s
    check at start, so a bad key shows before the first caller finds it."""
    try:
        ws = await open_socket(service, timeout_s)
    except InvalidStatus as exc:
        return refused(exc)
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return UpstreamFailed(f"cannot reach the Realtime service: {exc}", "unreachable")
    try:
        async with asyncio.timeout(timeout_s):
            first = await ws.recv()
        event = json.loads(first) if isinstance(first, str) else None
        if isinstance(event, dict) and event.get("type") == "error":
            error = event.get("error")
            detail = refusal_detail(json.dumps({"error": error}).encode())
            code = error.get("code") if isinstance(error, dict) else None
            kind = "unauthorized" if code in ("invalid_api_key", "unauthorized") else "refused"
            return UpstreamFailed(f"the service answered with an error ({detail})", kind)
        return None
    except (TimeoutError, ValueError, RecursionError, ConnectionClosed) as exc:
        if isinstance(exc, ConnectionClosed) and ws.close_code in FATAL_CLOSE_CODES:
            return UpstreamFailed(f"closed the session ({ws.close_code}): "
                                  f"{_printable(ws.close_reason or '')}", "refused")
        return UpstreamFailed(f"no session from the Realtime service: {exc!r}", "unreachable")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)


RENEWAL = "renewed"  # the reason `on_disconnected` gets for a planned renewal


class RealtimeClient:
    """One call's connection to the Realtime service, with bounded reconnects."""

    def __init__(
        self,
        service: RealtimeService,
        *,
        on_event: Callable[[dict[str, Any]], None],
        on_connected: Callable[[bool], None],
        on_disconnected: Callable[[str], None],
        max_attempts: int = 5,
        backoff_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
        connect_timeout_s: float = 10.0,
        connector: Callable[..., Awaitable[ClientConnection]] | None = None,
    ) -> None:
        self.service = service
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._max_attempts = max_attempts
        self._backoff = backoff_s
        self._connect_timeout = connect_timeout_s
        self._connector = connector or connect
        self._ws: ClientConnection | None = None
        self._audio: deque[str] = deque(maxlen=MAX_AUDIO_BACKLOG)
        self._control: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._expired = False
        self._resync_reason: str | None = None
        self.dropped_audio_chunks = 0
        self.dropped_control_events = 0
        self.reconnects = 0
        self.connected = False
        self.connected_at: float | None = None  # loop time the current socket opened
        self._renewing = False
        self._renewal: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ sending

    def send(self, event: dict[str, Any]) -> None:
        """Queue a control event (dropped while disconnected: a reconnect replays state)."""
        if not self.connected:
            return
        if len(self._control) >= MAX_CONTROL_BACKLOG:
            self.dropped_control_events += 1
            self._resync(f"control backlog full at {event.get('type')}")
            return
        self._control.append(json.dumps(event, separators=(",", ":")))
        self._wake.set()

    def send_audio(self, text: str) -> None:
        """Queue an `input_audio_buffer.append` already serialised."""
        if not self.connected:
            return
        if len(self._audio) == MAX_AUDIO_BACKLOG:
            self.dropped_audio_chunks += 1
        self._audio.append(text)
        self._wake.set()

    def _resync(self, reason: str) -> None:
        """Drop the socket now; `run` reconnects and the session replays its state."""
        ws = self._ws
        if ws is None or self._resync_reason is not None:
            return
        log.warning("Realtime %s: reconnecting to resynchronise", reason)
        self._resync_reason = reason
        self.connected = False  # what is sent from now on is covered by the replay
        self._audio.clear()
        self._control.clear()
        ws.transport.abort()

    def renew(self) -> bool:
        """Replace the session now (before the service's cap, at a quiet moment): close
        the socket; `run` opens a new one at once and the session replays. False when
        there is no socket to replace."""
        ws = self._ws
        if ws is None or not self.connected or self._renewing:
            return False
        self._renewing = True
        self.connected = False
        self._audio.clear()
        self._control.clear()
        # held: the loop keeps only a weak reference to a task
        self._renewal = asyncio.get_running_loop().create_task(ws.close(1000, "session renewal"))
        return True

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Connect, serve, and reconnect until closed; raise UpstreamFailed when giving up."""
        failures = 0
        first = True
        while not self._closing:
            try:
                ws = await open_socket(self.service, self._connect_timeout, self._connector)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
                    raise refused(exc) from exc
                failures += 1
                if failures >= self._max_attempts:
                    if isinstance(exc, InvalidStatus):
                        raise refused(exc) from exc
                    raise UpstreamFailed(f"cannot reach the Realtime service: {exc}",
                                         "unreachable") from exc
                await asyncio.sleep(self._backoff[min(failures - 1, len(self._backoff) - 1)])
                continue
            if self._closing:  # closed while connecting: close() never saw this socket
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)
                return
            self._ws = ws
            self._audio.clear()
            self._control.clear()
            self.connected = True
            self.connected_at = asyncio.get_running_loop().time()
            if not first:
                self.reconnects += 1
            self._on_connected(not first)
            first = False
            reason = await self._serve(ws)
            self.connected = False
            self._ws = None
            if self._closing:
                return
            code = ws.close_code
            if self._renewing:
                self._renewing = False
                self._on_disconnected(RENEWAL)
                continue  # planned: straight to the new socket
            # A session that hit its length cap is replaced, whatever the close code.
            if code in FATAL_CLOSE_CODES and not self._expired:
                raise UpstreamFailed(f"closed the session ({code}): "
                                     f"{_printable(ws.close_reason or '')}")
            failures = 1
            self._on_disconnected(reason)
            await asyncio.sleep(self._backoff[0])

    async def _serve(self, ws: ClientConnection) -> str:
        self._expired = False
        self._resync_reason = None
        writer = asyncio.create_task(self._write(ws))
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue
                try:
                    event = json.loads(frame)
                except (ValueError, RecursionError):  # RecursionError: deep nesting
                    log.warning("non-JSON frame from the Realtime service")
                    continue
                if isinstance(event, dict):
                    if event.get("type") == "error" and (
                        (event.get("error") or {}).get("code") == "session_expired"
                    ):
                        self._expired = True
                    try:
                        self._on_event(normalize_event(self.service.dialect, event))
                    except Exception:
                        # One bad event must not end the call's upstream.
                        log.exception("error handling %s", event.get("type"))
            return self._resync_reason or f"closed ({ws.close_code})"
        except ConnectionClosed as exc:
            if self._resync_reason is not None:
                return self._resync_reason
            return f"connection lost ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        finally:
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, ConnectionClosed):
                pass

    async def _write(self, ws: ClientConnection) -> None:
        control, audio = self._control, self._audio
        while True:
            await self._wake.wait()
            self._wake.clear()
            while control or audio:
                # Control first: a cancel or truncate must not wait behind audio.
                frame = control.popleft() if control else audio.popleft()
                await ws.send(frame)

    async def close(self) -> None:
        self._closing = True
        ws, self._ws = self._ws, None
        self.connected = False
        self._audio.clear()
        self._control.clear()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except (TimeoutError, ConnectionClosed, websockets.exceptions.WebSocketException):
                pass
