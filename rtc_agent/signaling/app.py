"""Signaling over HTTP (aiohttp): the routes that place, end and report calls.

Routes: POST /offer, DELETE /calls/{call_id}, GET /healthz, GET /config, and
the web client from web/ at /. Every error is JSON: {"error": {"code", "message"}}.
Started by `rtc_agent.serve`, which chooses the Realtime service and listens.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from rtc_agent.call import Call
from rtc_agent.config import ServeConfig
from rtc_agent.realtime.service import RealtimeService
from rtc_agent.signaling.turn import ice_servers as build_ice_servers
from rtc_agent.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
RETRY_AFTER_S = 5


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers or None
    )


@dataclass
class SignalingServer:
    """The state behind the HTTP routes: config, Realtime service, calls."""

    config: ServeConfig
    service: RealtimeService
    tools: ToolRegistry
    calls: dict[str, Call] = field(default_factory=dict)
    scheme: str = "http"
    ca_cert: Path | None = None  # the local CA, offered at /ca.pem for phones to trust
    pending: int = 0  # offers being answered, counted against --max-calls
    calls_total: int = 0

    def ice_servers(self) -> list[dict[str, Any]]:
        return build_ice_servers(self.config.ice_servers, self.config.turn_urls,
                                 self.config.turn_secret)

    # ------------------------------------------------------------ guards

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or origin == f"{request.scheme}://{request.host}":
            return True
        return "*" in self.config.allow_origins or origin in self.config.allow_origins

    # ------------------------------------------------------------ routes

    async def offer(self, request: web.Request) -> web.Response:
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed",
                              "this origin may not place calls (see --allow-origin)")
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
            return json_error(413, "too_large", f"offers are limited to {MAX_OFFER_BYTES} bytes")
        body = await request.content.read(MAX_OFFER_BYTES + 1)
        if len(body) > MAX_OFFER_BYTES:
            return json_error(413, "too_large", f"offers are limited to {MAX_OFFER_BYTES} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: deep nesting
            return json_error(400, "invalid_json", "the body is not JSON")
        if not isinstance(data, dict):
            return json_error(400, "invalid_offer", "expected a JSON object {sdp, type}")
        if data.get("type") != "offer":
            return json_error(400, "invalid_type", "'type' must be \"offer\"")
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            return json_error(400, "invalid_sdp", "'sdp' must be a non-empty string")
        if "\nm=audio " not in "\n" + sdp.replace("\r\n", "\n"):
            return json_error(400, "no_audio", "the offer has no audio m-line")
        if len(self.calls) + self.pending >= self.config.max_calls:
            return json_error(503, "at_capacity", "the server is at capacity; try again shortly",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        self.pending += 1
        call_id = secrets.token_urlsafe(9)
        call = Call(
            call_id,
            service=self.service,
            settings=self.config.session,
            tools=self.tools,
            ice_servers=self.ice_servers(),
            connect_timeout_s=self.config.connect_timeout_s,
            decode_on_loop=self.config.decode_on_loop,
            on_closed=self._forget,
        )
        try:
            answer = await call.answer(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc's SDP parser raises many kinds
            await call.close("bad offer")
            return json_error(400, "invalid_sdp", f"cannot use this offer: {exc}"[:300])
        finally:
            self.pending -= 1
        if call.closed:
            return json_error(500, "call_failed", call.close_reason or "the call ended")
        self.calls[call_id] = call
        self.calls_total += 1
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)

    async def hang_up(self, request: web.Request) -> web.Response:
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed", "this origin may not manage calls")
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return json_error(404, "no_such_call", "no call with that id")
        await call.close("hung up by the caller")
        return web.json_response({"call_id": call.call_id, "closed": True})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({
            "ok": True,
            "calls": len(self.calls),
            "max_calls": self.config.max_calls,
            "calls_total": self.calls_total,
            "backend": self.service.kind,
        })

    async def client_config(self, request: web.Request) -> web.Response:
        # Short-lived TURN credentials, minted per request; never a cloud key.
        return web.json_response({
            "iceServers": self.ice_servers(),
            "tokenRequired": bool(self.config.token),
        })

    async def index(self, request: web.Request) -> web.StreamResponse:
        # no-cache: a page cached from an older release would load stale modules.
        return web.FileResponse(self.config.web_dir / "index.html",
                                headers={"Cache-Control": "no-cache"})

    async def ca_pem(self, request: web.Request) -> web.StreamResponse:
        """The local CA certificate (public), so a phone on the LAN can install it."""
        if self.ca_cert is None or not self.ca_cert.is_file():
            return json_error(404, "not_found", "no local CA in use (see `rtc-agent certs`)")
        return web.FileResponse(self.ca_cert,
                                headers={"Content-Type": "application/x-x509-ca-cert"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of the web client; anything outside web/ or missing is a JSON 404."""
        root = self.config.web_dir.resolve()
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return json_error(404, "not_found", "no such file")
        headers = {"Cache-Control": "no-cache"}
        if path.suffix == ".js":
            # Module scripts need a JavaScript type; some hosts map .js to text/plain.
            headers["Content-Type"] = "text/javascript"
        return web.FileResponse(path, headers=headers)

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close("server shutting down") for c in list(self.calls.values())))


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing errors (404, 405) and crashes answer in the same JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal_error", "internal server error")


def cors(server: SignalingServer) -> Any:
    """CORS for the origins named by --allow-origin (a page hosted elsewhere)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (
            "*" in server.config.allow_origins or origin in server.config.allow_origins
        )
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return middleware


def create_app(server: SignalingServer) -> web.Application:
    app = web.Application(middlewares=[cors(server), json_errors],
                          client_max_size=MAX_OFFER_BYTES * 2)
    app.router.add_post("/offer", server.offer)
    app.router.add_delete("/calls/{call_id}", server.hang_up)
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/config", server.client_config)
    app.router.add_get("/", server.index)
    app.router.add_get("/ca.pem", server.ca_pem)
    app.router.add_get("/{path:.+}", server.static)

    async def on_shutdown(app: web.Application) -> None:
        await server.close_all()

    app.on_shutdown.append(on_shutdown)
    return app
