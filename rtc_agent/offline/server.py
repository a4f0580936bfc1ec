"""The offline Realtime WebSocket endpoint: routing, auth, dialect choice, limits.

Thin I/O around SessionDriver/Conversation, on the `websockets` (v14+) asyncio API.
Here the pure conversation gets its real id source and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.driver import Engines, Limits, SessionDriver
from rtc_agent.protocol import Dialect, azure_version_dialect

log = logging.getLogger(__name__)

PATHS = {"/v1/realtime", "/realtime", "/openai/realtime", "/openai/v1/realtime"}
KEY_PROTOCOL = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"
REALTIME_PROTOCOL = Subprotocol("realtime")


def random_id(prefix: str) -> str:
    """A fresh id in the cloud's style: "item_" and 20 URL-safe letters and digits."""
    return f"{prefix}_{secrets.token_urlsafe(15).replace('-', 'x').replace('_', 'y')}"


# A session with no client event for this long is closed. The service documents no idle
# limit (only its 60-minute session cap, and a ping every 20 s); a call streams audio
# all the time, so ten quiet minutes mean a client that is gone or stuck.
IDLE_TIMEOUT_S = 600.0
RECOGNIZER_PROCESSES = 2  # decodes at once; each process holds its own models (~150 MB RSS)


@dataclass
class OfflineServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_session_s: float | None = None  # None: the dialect's cloud value (3600 GA, 1800 beta)
    idle_timeout_s: float = IDLE_TIMEOUT_S  # 0: never close an idle session
    compression: bool = True  # permessage-deflate when offered, as the cloud does
    sock: socket.socket | None = None  # listen here instead of host:port (a supervisor's)


def offered_protocols(request: Request) -> list[str]:
    return [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",") if p.strip()]


def request_key(request: Request) -> str | None:
    """The API key from Authorization, api-key (header or query) or the subprotocol."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if request.headers.get("api-key"):
        return request.headers["api-key"]
    query = parse_qs(urlsplit(request.path).query)
    if query.get("api-key"):
        return query["api-key"][0]
    for proto in offered_protocols(request):
        if proto.startswith(KEY_PROTOCOL):
            return proto[len(KEY_PROTOCOL):]
    return None


def choose_dialect(request: Request) -> Dialect:
    """Beta on the OpenAI-Beta header, the beta subprotocol, or Azure's `/openai/realtime`
    path with a beta `api-version` (a `-preview` one or one older than GA); else GA."""
    if "realtime=v1" in request.headers.get("OpenAI-Beta", "").replace(" ", ""):
        return Dialect.BETA
    if BETA_PROTOCOL in offered_protocols(request):
        return Dialect.BETA
    url = urlsplit(request.path)
    versions = parse_qs(url.query).get("api-version")
    if url.path.rstrip("/") == "/openai/realtime" and versions:
        return azure_version_dialect(versions[0])
    return Dialect.GA


class RealtimeServer:
    """Accepts Realtime WebSocket sessions and runs each with a SessionDriver.

    `engines` may still be loading (an awaitable): the server then listens at once and
    each session waits for them after its handshake, so a restarted backend takes
    connections a model-load sooner.
    """

    def __init__(self, config: OfflineServerConfig,
                 engines: Engines | Awaitable[Engines]) -> None:
        self.config = config
        self._loading: asyncio.Future[Engines] | None = None
        self.engines: Engines | None = None
        if isinstance(engines, Engines):
            self.engines = engines
        else:
            self._loading = asyncio.ensure_future(engines)
        self.sessions: set[SessionDriver] = set()
        self._server: Server | None = None
        self.on_session: Callable[[SessionDriver], None] | None = None  # test/bench hook

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}/v1/realtime"

    async def start(self) -> None:
        hard_cap = self.config.limits.max_message_bytes * 2 + (1 << 20)
        where: dict[str, Any] = ({"sock": self.config.sock} if self.config.sock is not None
                                 else {"host": self.config.host, "port": self.config.port})
        self._server = await serve(
            self._handle, **where,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=hard_cap,  # beyond this websockets closes (1009); below, an error event
            # Frames read ahead of the handler: 4 (not websockets' 16) of up to max_size
            # each, so a client that outruns its session cannot park half a gigabyte.
            max_queue=4,
            ping_interval=20, ping_timeout=20,
            compression="deflate" if self.config.compression else None,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> RealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path.rstrip("/") or "/"
        if path not in PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found: use /v1/realtime\n")
        expected = self.config.api_key
        if expected is not None:
            given = request_key(request) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid or missing API key\n")
        return None

    @staticmethod
    def _select_subprotocol(connection: ServerConnection,
                            subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        # Browsers fail unless one offered protocol is selected; never echo the key entry.
        return REALTIME_PROTOCOL if REALTIME_PROTOCOL in subprotocols else None

    async def _engines(self) -> Engines:
        if self.engines is None:
            assert self._loading is not None
            self.engines = await asyncio.shield(self._loading)
        return self.engines

    async def _handle(self, ws: ServerConnection) -> None:
        engines = await self._engines()
        request = ws.request
        assert request is not None
        dialect = choose_dialect(request)
        query = parse_qs(urlsplit(request.path).query)
        model = (query.get("model") or query.get("deployment") or ["gpt-realtime"])[0]
        conv = Conversation(dialect, model, new_id=random_id, clock=time.time,
                            max_buffer_ms=int(self.config.limits.max_buffer_s * 1000),
                            max_session_s=self.config.max_session_s)

        async def send(events: list[dict[str, Any]]) -> None:
            with contextlib.suppress(ConnectionClosed):
                for event in events:
                    await ws.send(json.dumps(event))

        session = SessionDriver(conv, engines, send, self.config.limits)
        self.sessions.add(session)
        if self.on_session is not None:
            self.on_session(session)
        expiry = asyncio.get_running_loop().create_task(
            self._expire(ws, session, conv.max_session_s))
        idle = self.config.idle_timeout_s or None
        try:
            await session.start()
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), idle)
                except TimeoutError:
                    await ws.close(1000, "idle timeout")
                    break
                except ConnectionClosed:
                    break
                await session.handle_frame(frame)
        finally:
            expiry.cancel()
            await session.close()
            self.sessions.discard(session)

    @staticmethod
    async def _expire(ws: ServerConnection, session: SessionDriver, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await session.expire()
        await ws.close(1000, "invalid_request_error.session_expired")


def build_engines(tts: str = "piper", tts_cache: int = 512, llm_url: str | None = None,
                  llm_model: str = "default", llm_api_key: str | None = None,
                  on_recognizer_restart: Callable[[int], None] | None = None) -> Engines:
    """The real engines (loads the piper voice; call from a thread if the loop is running).

    Recognition runs in worker processes (started on first use or by `warm`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from rtc_agent.offline.recognizer_processes import RecognizerProcesses
    from rtc_agent.offline.responder import ChatCompletionsResponder, Responder, RuleResponder
    from rtc_agent.offline.tts import CachedSynthesizer, Synthesizer, get_synthesizer
    from rtc_agent.offline.vad import SileroDetector

    synth: Synthesizer = get_synthesizer(tts)
    if tts_cache > 0:
        synth = CachedSynthesizer(synth, tts_cache)
    responder: Responder = (ChatCompletionsResponder(llm_url, llm_model, llm_api_key)
                            if llm_url else RuleResponder())
    # A thread per worker process, each waiting on its worker's answer.
    recognizer = RecognizerProcesses(RECOGNIZER_PROCESSES, on_restart=on_recognizer_restart)
    return Engines(synthesizer=synth, recognizer=recognizer, responder=responder,
                   detector_factory=SileroDetector,
                   asr_executor=ThreadPoolExecutor(recognizer.pool_size, "asr"))
