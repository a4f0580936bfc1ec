"""Signaling over HTTP (aiohttp): the routes that place, end and report calls.

Routes: POST /offer, GET /calls, GET|DELETE /calls/{call_id}, GET /healthz,
GET /metrics, GET /config, and the web client from web/ at /. Every error is
JSON: {"error": {"code", "message"}}. An offer is placed on the least-loaded
worker of the node or cluster (`rtc_agent.cluster`) and requests about a call
reach its owner, through `create_internal_app`'s routes, which take only
requests carrying the cluster secret. Started by `rtc_agent.serve`, which
chooses the Realtime service and listens through `limits.GuardedSite`. What one
offer may cost is `offer.py`'s business; connection caps, the head/idle deadline
and per-address rate limits `limits.py`'s;
the scheme, host and client address a trusted reverse proxy forwards `proxy.py`'s
(handlers see them as `request.scheme`, `.host` and `.remote`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from rtc_agent.call import Call
from rtc_agent.cluster.forward import (
    CLIENT_HEADER,
    SECRET_HEADER,
    USER_AGENT_HEADER,
    Forwarder,
    ForwardFailed,
    authentic,
)
from rtc_agent.cluster.membership import Membership
from rtc_agent.config import ServeConfig
from rtc_agent.ice import PortRangeExhausted
from rtc_agent.media.recorder import CallRecorder
from rtc_agent.observability.call_log import CallLog
from rtc_agent.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rtc_agent.observability.metrics import Metrics
from rtc_agent.realtime.health import UpstreamHealth
from rtc_agent.realtime.service import RealtimeService
from rtc_agent.signaling.limits import (
    ConnectionLimits,
    RateLimiter,
    address_key,
    exempt,
    parse_networks,
)
from rtc_agent.signaling.offer import MAX_OFFER_BYTES, Refusal, read_body, sdp_refusal
from rtc_agent.signaling.proxy import middleware as proxy_middleware
from rtc_agent.signaling.proxy import view as forwarded_view
from rtc_agent.signaling.turn import ice_servers as build_ice_servers
from rtc_agent.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
VIA_HEADER = "X-Rtc-Agent-Via"
RECORDING_FINISH_S = 5.0  # at shutdown, for a recording's last pages
MAX_PLACEMENT_TRIES = 8  # workers asked for one offer before answering 503
BACKEND_RETRY_AFTER_S = 10  # the offline backend restarts in a few seconds

# The page loads only its own modules and stylesheet; its scripts set styles
# through the CSSOM (allowed), never inline. `data:` is the empty favicon.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# A web client file: path segments of plain characters, none starting with a dot
# (so no "..", no dotfiles), not too long. Anything else is a 404 without
# touching the file system.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}"
MAX_RESUME_TOKEN = 128
RESUMES_PER_OFFER = 3  # a resume budget per address: three times --offers-per-minute
NO_SUCH_CALL = ("no_such_call", "no call with that id")
# A resume for a call that is over: the page shows this as it is.
CALL_ENDED = ("call_ended", "This call has ended; start a new one.")
STATIC_PATH = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,7}}")


# Where json_error leaves its code, for the metrics (no re-reading of the body).
ERROR_CODE = web.ResponseKey("error_code", str)


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    response = web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers or None
    )
    response[ERROR_CODE] = code
    return response


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
    # The Realtime backend's health, "up" | "restarting" | "down", and its restarts
    # (None: a cloud service, taken as up).
    backend_state: Callable[[], str] | None = None
    backend_restarts: Callable[[], int] | None = None
    # The offline backend's speech recognition processes that died and were restarted.
    recognizer_restarts: Callable[[], int] | None = None
    limits: ConnectionLimits = field(init=False)
    offer_limiter: RateLimiter = field(init=False)
    resume_limiter: RateLimiter = field(init=False)
    _answering: dict[str, int] = field(default_factory=dict)  # per address key
    _call_address: dict[str, str] = field(default_factory=dict)  # call id -> address key
    _exempt: list[Any] = field(init=False)  # networks the per-address limits skip
    proxies: list[Any] = field(init=False)  # --trusted-proxy networks (proxy.py)
    # This worker's place in its node and cluster; a lone process is a node of one.
    membership: Membership = None  # type: ignore[assignment]  # set in __post_init__
    forwarder: Forwarder | None = None  # None: no other worker to forward to
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=Metrics)
    call_log: CallLog | None = None  # --call-log
    upstream: UpstreamHealth = field(default_factory=UpstreamHealth)  # for /healthz

    def __post_init__(self) -> None:
        cfg = self.config
        self.limits = ConnectionLimits(
            max_total=cfg.max_connections, max_per_address=cfg.max_connections_per_address,
            head_timeout_s=cfg.header_timeout_s, exempt_networks=cfg.limit_exempt,
            proxy_networks=cfg.trusted_proxies)
        self.offer_limiter = RateLimiter(cfg.offers_per_minute)
        # Resumes have a budget of their own: a phone on a flaky network resumes more
        # often than anyone places calls, and a 429 there would lose the call.
        self.resume_limiter = RateLimiter(cfg.offers_per_minute * RESUMES_PER_OFFER)
        self._exempt = parse_networks(cfg.limit_exempt)
        self.proxies = parse_networks(cfg.trusted_proxies)
        if self.membership is None:
            self.membership = Membership(
                node=cfg.node_id or "local", index=0, url="", capacity=cfg.max_calls,
                load=lambda: len(self.calls) + self.pending, calls=self.calls.keys,
                calls_total=lambda: self.calls_total)

    @property
    def _barge_in(self) -> bool:
        """The caller's speech interrupts the agent (server turn detection, on by default)."""
        td = self.config.session.turn_detection
        return td is not None and td.interrupt_response

    def ice_servers(self, user: str = "rtc-agent") -> list[dict[str, Any]]:
        return build_ice_servers(self.config.ice_servers, self.config.turn_urls,
                                 self.config.turn_secret, self.config.turn_ttl_s, user)

    def state(self) -> str:
        """The backend's state: "up" | "restarting" | "down"."""
        return self.backend_state() if self.backend_state is not None else "up"

    # ------------------------------------------------------------ guards

    def _given_token(self, request: web.Request) -> str | None:
        """The token a request presents: `Authorization: Bearer` (any case), else ?token=."""
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.query.get("token") or None

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = self._given_token(request) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    def _limited(self, request: web.Request) -> bool:
        """Whether the per-address limits apply to this caller (see --limit-exempt).

        `request.remote` is the client a trusted proxy forwards for (proxy.py)."""
        return not exempt(request.remote, self._exempt)

    def _pending_from(self, key: str) -> int:
        """Calls from this address not yet connected, and offers being answered."""
        waiting = sum(
            1 for call_id, call in self.calls.items()
            if self._call_address.get(call_id) == key and not call.closed
            and call.pc.connectionState in ("new", "connecting"))
        return waiting + self._answering.get(key, 0)

    def _origin_allowed(self, request: web.Request) -> bool:
        """Same origin as the page (the scheme and host the client used, which a
        trusted proxy forwards), or one named by --allow-origin."""
        origin = request.headers.get("Origin")
        if origin is None or origin == f"{request.scheme}://{request.host}":
            return True
        return "*" in self.config.allow_origins or origin in self.config.allow_origins

    # ------------------------------------------------------------ routes

    async def offer(self, request: web.Request) -> web.Response:
        response = await self._offer(request)
        if response.status >= 400:
            self.metrics.rejected(_error_code(response))
        return response

    async def _offer(self, request: web.Request) -> web.Response:
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed",
                              "this origin may not place calls (see --allow-origin)")
        key = address_key(request.remote)
        limited = self._limited(request)
        # Before the token check, so guessing tokens is rate-limited too.
        wait = self.offer_limiter.take(key) if limited else 0.0
        if wait:
            return json_error(429, "rate_limited", "too many call attempts from your address",
                              **{"Retry-After": str(math.ceil(wait))})
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        if self.state() != "up":
            return json_error(503, "backend_unavailable",
                              f"the speech backend is {self.state()}; try again shortly",
                              **{"Retry-After": str(BACKEND_RETRY_AFTER_S)})
        read = await self._offer_body(request)
        if isinstance(read, web.Response):
            return read
        body, _, sdp = read
        cap = self.config.max_pending_per_address
        if limited and cap and self._pending_from(key) >= cap:
            return json_error(429, "too_many_pending",
                              "too many calls from your address are still connecting",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        self._answering[key] = self._answering.get(key, 0) + 1
        try:
            return await self._place(request, body, sdp, key)
        finally:
            left = self._answering.get(key, 1) - 1
            if left > 0:
                self._answering[key] = left
            else:
                self._answering.pop(key, None)

    async def _offer_body(self, request: web.Request
                          ) -> tuple[bytes, dict[str, Any], str] | web.Response:
        """An offer's body (of `/offer` or a resume): read whole within its bounds,
        a JSON object {sdp, type: "offer"}, its SDP vetted; else the error to send."""
        try:
            body = await read_body(request, MAX_OFFER_BYTES, self.config.body_timeout_s)
        except Refusal as refused:
            response = json_error(refused.status, refused.code, refused.message)
            if refused.status in (408, 413):
                response.force_close()  # do not read on what the caller is still sending
            return response
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
        refusal = sdp_refusal(sdp)  # before aiortc parses it: bounds what one offer costs
        if refusal is not None:
            return json_error(refusal.status, refusal.code, refusal.message)
        return body, data, sdp

    async def _place(self, request: web.Request, body: bytes, sdp: str,
                     key: str) -> web.Response:
        """Answer here, or on the least-loaded worker of the node (or cluster) that will.

        A worker refusing for want of room (503) is skipped and the next one tried, so
        the caller gets 503 only when every worker is full or draining.
        """
        membership = self.membership
        received = time.monotonic()
        tried: set[str] = set()
        refused: web.Response | None = None
        for _ in range(MAX_PLACEMENT_TRIES):
            candidates = await membership.candidates(exclude=tried)
            if not candidates:
                break
            target = candidates[0]
            tried.add(target.id)
            if target.id == membership.id:
                response = await self._answer_here(sdp, key, request.remote, received,
                                                   request.headers.get("User-Agent", ""))
                if response.status != 503:
                    return response
                refused = response
                continue
            if self.forwarder is None:
                continue
            membership.placed(target.id)
            try:
                forwarded = await self.forwarder.send(
                    "POST", f"{target.url}/offer", client=request.remote, body=body,
                    headers={USER_AGENT_HEADER: request.headers.get("User-Agent", "")[:256]})
            except ForwardFailed as exc:
                log.warning("offer not placed on %s: %s", target.id, exc)
                continue
            response = web.Response(status=forwarded.status, body=forwarded.body,
                                    headers=forwarded.headers)
            if forwarded.status != 503:
                return response
            refused = response
        if refused is not None:
            return refused
        if membership.node_draining():
            return json_error(503, "draining", "the server is shutting down; try again shortly",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        return json_error(503, "at_capacity", "the server is at capacity; try again shortly",
                          **{"Retry-After": str(RETRY_AFTER_S)})

    async def _answer_here(self, sdp: str, key: str, remote: str | None, received: float,
                           user_agent: str) -> web.Response:
        """Take the call on this worker, if it has room."""
        if self.membership.node_draining():
            return json_error(503, "draining", "this worker is shutting down",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        if len(self.calls) + self.pending >= self.membership.capacity:
            return json_error(503, "at_capacity", "the server is at capacity; try again shortly",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        self.pending += 1
        self.membership.publish()
        call_id = secrets.token_urlsafe(9)
        call = Call(
            call_id,
            service=self.service,
            settings=self.config.session,
            tools=self.tools,
            ice_servers=self.ice_servers(user=f"call-{call_id}"),
            connect_timeout_s=self.config.connect_timeout_s,
            max_duration_s=self.config.max_call_s or None,
            resume_window_s=self.config.resume_window_s,
            pricing=self.config.pricing,
            idle_timeout_s=self.config.idle_timeout_s,
            idle_prompt=self.config.idle_prompt,
            goodbye=self.config.goodbye,
            session_renew_s=self.config.session_renew_s,
            tool_ack_ms=self.config.tool_ack_ms,
            decode_on_loop=self.config.decode_on_loop,
            ptime_ms=self.config.ptime_ms,
            dtx=self.config.dtx,
            on_closed=self._forget,
            node=self.membership.node,
            worker=self.membership.id,
            metrics=self.metrics if self.config.metrics else None,
            user_agent=user_agent,
            started=received,
            recorder=(CallRecorder(self.config.record_dir, call_id,
                                   max_s=self.config.record_max_s)
                      if self.config.record_dir is not None else None),
            upstream_health=self.upstream,
        )
        try:
            answer = await call.answer(RTCSessionDescription(sdp=sdp, type="offer"))
        except PortRangeExhausted as exc:
            await call.close("no media port", "error")
            log.warning("offer refused: %s", exc)
            return json_error(503, "no_media_ports", "no UDP port is free for the call's media",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        except Exception as exc:  # aiortc's SDP parser raises many kinds
            await call.close("bad offer", "error")
            return json_error(400, "invalid_sdp", f"cannot use this offer: {exc}"[:300])
        finally:
            self.pending -= 1
        if call.closed:
            return json_error(500, "call_failed", call.close_reason or "the call ended")
        self.calls[call_id] = call
        self._call_address[call_id] = key
        self.calls_total += 1
        self.metrics.calls_active.inc()
        self.metrics.calls_started.inc()
        self.membership.call_started(call_id)
        log.info("call %s placed on %s for %s", call_id, self.membership.id, remote)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    def _forget(self, call: Call) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.membership.call_ended(call.call_id)
            self.metrics.calls_active.dec()
            self.metrics.ended(call.record.end_reason or "error")
            if self.call_log is not None:
                self.call_log.write(call.record.summary())
        self._call_address.pop(call.call_id, None)
        if not self.calls and self.membership.draining:
            self.drained.set()

    async def hang_up(self, request: web.Request) -> web.Response:
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed", "this origin may not manage calls")
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        call_id = request.match_info["call_id"]
        if call_id in self.calls:
            return await self._hang_up_here(call_id)
        return await self._to_owner(request, call_id)

    async def resume(self, request: web.Request) -> web.Response:
        """`POST /calls/{id}/resume` {sdp, type, resume_token}: the caller's new connection
        for a call whose path died (docs/data-channel.md); answered like `/offer`."""
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed", "this origin may not manage calls")
        key = address_key(request.remote)
        # Rate-limited before any token check (an offer's SDP costs to parse, whoever
        # sends it), on a budget of its own.
        wait = self.resume_limiter.take(key) if self._limited(request) else 0.0
        if wait:
            return json_error(429, "rate_limited", "too many call attempts from your address",
                              **{"Retry-After": str(math.ceil(wait))})
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        read = await self._offer_body(request)
        if isinstance(read, web.Response):
            return read
        body, data, sdp = read
        token = data.get("resume_token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_RESUME_TOKEN:
            return json_error(400, "invalid_resume_token",
                              "'resume_token' must be the token session.ready gave")
        call_id = request.match_info["call_id"]
        if call_id in self.calls:
            return await self._resume_here(call_id, sdp, token)
        return await self._to_owner(request, call_id, body=body, missing=CALL_ENDED)

    async def _resume_here(self, call_id: str, sdp: str, token: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None or call.closed:
            return json_error(404, *CALL_ENDED)
        if not call.token_matches(token):
            return json_error(403, "invalid_resume_token", "that token is not this call's")
        try:
            answer = await call.resume(RTCSessionDescription(sdp=sdp, type="offer"))
        except PortRangeExhausted as exc:
            log.warning("resume of %s refused: %s", call_id, exc)
            return json_error(503, "no_media_ports", "no UDP port is free for the call's media",
                              **{"Retry-After": str(RETRY_AFTER_S)})
        except Exception as exc:  # aiortc's SDP parser raises many kinds; the call waits on
            if call.closed:
                return json_error(404, *CALL_ENDED)
            return json_error(400, "invalid_sdp", f"cannot use this offer: {exc}"[:300])
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    async def internal_resume(self, request: web.Request) -> web.Response:
        """A resume another worker received, already vetted there."""
        read = await self._forwarded_offer(request)
        if isinstance(read, web.Response):
            return read
        sdp, data = read
        token = data.get("resume_token")
        if not isinstance(token, str):
            return json_error(400, "invalid_resume_token", "expected a vetted resume")
        return await self._resume_here(request.match_info["call_id"], sdp, token)

    async def _hang_up_here(self, call_id: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None:
            return json_error(404, "no_such_call", "no call with that id")
        await call.close("hung up by the caller", "hangup")
        return web.json_response({"call_id": call.call_id, "closed": True})

    # ------------------------------------------------------------ observability

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus text format, for the whole node (docs/observability.md)."""
        token = self.config.metrics_token
        if token and not hmac.compare_digest((self._given_token(request) or "").encode(),
                                             token.encode()):
            return json_error(401, "unauthorized", "a valid metrics token is required")
        body = await asyncio.to_thread(self.metrics.exposition)  # reads the node's files
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE,
                                                "Cache-Control": "no-store"})

    def _live_calls(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [call.record.summary(now) for call in list(self.calls.values())]

    async def list_calls(self, request: web.Request) -> web.Response:
        """Live calls with their figures, on every worker of the node (and cluster)."""
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        calls = self._live_calls()
        if self.forwarder is not None:
            workers = await self.membership.cluster_workers() or self.membership.node_workers()
            others = [w for w in workers if w.id != self.membership.id]
            answers = await asyncio.gather(
                *(self.forwarder.send("GET", f"{w.url}/calls", client=request.remote)
                  for w in others), return_exceptions=True)
            for worker, answer in zip(others, answers, strict=True):
                if isinstance(answer, BaseException) or answer.status != 200:
                    log.warning("GET /calls: no answer from %s", worker.id)
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    calls.extend(json.loads(answer.body)["calls"])
        return web.json_response({"calls": calls}, headers={"Cache-Control": "no-store"})

    async def get_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return json_error(401, "unauthorized", "a valid access token is required")
        call_id = request.match_info["call_id"]
        if call_id in self.calls:
            return self._call_here(call_id)
        return await self._to_owner(request, call_id)

    def _call_here(self, call_id: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None:
            return json_error(404, "no_such_call", "no call with that id")
        return web.json_response(call.record.summary(time.monotonic()),
                                 headers={"Cache-Control": "no-store"})

    async def internal_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self._live_calls()})

    async def internal_call(self, request: web.Request) -> web.Response:
        return self._call_here(request.match_info["call_id"])

    async def _to_owner(self, request: web.Request, call_id: str, *, body: bytes | None = None,
                        missing: tuple[str, str] = NO_SUCH_CALL) -> web.Response:
        """Pass a request about a call held by another worker on to it (404 `missing`:
        nobody has it). `body`: what was already read of the request."""
        if self.forwarder is not None and STATIC_PATH.fullmatch(call_id):
            if body is None and request.can_read_body:
                body = await request.read()
            for worker in await self.membership.owners(call_id):
                try:
                    forwarded = await self.forwarder.send(
                        request.method, f"{worker.url}{request.rel_url.path}",
                        client=request.remote, body=body)
                except ForwardFailed as exc:
                    log.warning("cannot reach %s for call %s: %s", worker.id, call_id, exc)
                    continue
                if forwarded.status != 404:
                    # Which worker passed it on: an operator (and a test) can tell a
                    # forwarded request from one its owner received.
                    return web.Response(status=forwarded.status, body=forwarded.body,
                                        headers={**forwarded.headers,
                                                 VIA_HEADER: self.membership.id})
        return json_error(404, *missing)

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness for anyone (status code and `status`); the details need the token.

        `status` is "ok", "draining" (a node shutting down: a load balancer should send
        it nothing new) or "unavailable" (its speech backend is down)."""
        state = self.state()
        up = state == "up"
        draining = self.membership.node_draining()
        status = "unavailable" if not up else "draining" if draining else "ok"
        body: dict[str, Any] = {"status": status}
        if self._authorized(request):
            node = await self.membership.health()
            body.update({
                "ok": status == "ok",
                **node,
                "max_calls": self.config.max_calls,
                "backend": self.service.kind,
                "backend_state": state,
                "backend_restarts": self.backend_restarts() if self.backend_restarts else 0,
                "recognizer_restarts": (self.recognizer_restarts()
                                        if self.recognizer_restarts else 0),
                "upstream": self.upstream.as_json(),
                "connections": self.limits.total,
            })
        return web.json_response(body, status=200 if status == "ok" else 503,
                                 headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------ internal routes

    async def _forwarded_offer(self, request: web.Request
                               ) -> tuple[str, dict[str, Any]] | web.Response:
        """The SDP and body of an offer (or resume) another worker vetted: checked
        again, briefly, since a worker trusts no input it did not read itself."""
        try:
            body = await read_body(request, MAX_OFFER_BYTES, self.config.body_timeout_s)
            data = json.loads(body)
        except (Refusal, ValueError, RecursionError):
            return json_error(400, "invalid_offer", "expected a JSON offer")
        sdp = data.get("sdp") if isinstance(data, dict) else None
        if not isinstance(sdp, str) or sdp_refusal(sdp) is not None:
            return json_error(400, "invalid_sdp", "expected a vetted offer")
        return sdp, data

    async def internal_offer(self, request: web.Request) -> web.Response:
        """An offer another worker placed here, already vetted and admitted there."""
        read = await self._forwarded_offer(request)
        if isinstance(read, web.Response):
            return read
        sdp = read[0]
        client = request.headers.get(CLIENT_HEADER)
        return await self._answer_here(sdp, address_key(client), client, time.monotonic(),
                                       request.headers.get(USER_AGENT_HEADER, ""))

    async def internal_hang_up(self, request: web.Request) -> web.Response:
        return await self._hang_up_here(request.match_info["call_id"])

    async def client_config(self, request: web.Request) -> web.Response:
        """What the page needs to call: ICE servers with TURN credentials minted for this
        request (never a cloud key). With --token they go only to a valid token; without
        one the page learns that it must ask for it."""
        if not self._origin_allowed(request):
            return json_error(403, "origin_not_allowed", "this origin may not use this server")
        no_store = {"Cache-Control": "no-store"}  # credentials: no cache may keep them
        if self.config.token:
            if self._given_token(request) is None:
                return web.json_response({"tokenRequired": True}, headers=no_store)
            if not self._authorized(request):
                return json_error(401, "unauthorized", "a valid access token is required")
        user = f"web-{secrets.token_hex(6)}"
        if self.config.turn_urls:
            log.info("TURN credentials %s (%d s) for %s", user, self.config.turn_ttl_s,
                     request.remote)
        return web.json_response({
            "iceServers": self.ice_servers(user=user),
            "tokenRequired": bool(self.config.token),
            # how long a call whose connection died waits for the page to resume it
            "resumeWindowS": self.config.resume_window_s,
            # whether the caller's voice cuts the agent off: the page mutes the stale
            # rest of a reply locally only when it does
            "bargeIn": self._barge_in,
        }, headers=no_store)

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
        """A file of the web client; anything outside web/, odd or missing is a JSON 404."""
        name = request.match_info["path"]
        if not STATIC_PATH.fullmatch(name):  # NUL, "..", dotfiles, overlong: never looked up
            return json_error(404, "not_found", "no such file")
        try:
            root = self.config.web_dir.resolve()
            path = (root / name).resolve()
            found = path.is_relative_to(root) and path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            return json_error(404, "not_found", "no such file")
        headers = {"Cache-Control": "no-cache"}
        if path.suffix == ".js":
            # Module scripts need a JavaScript type; some hosts map .js to text/plain.
            headers["Content-Type"] = "text/javascript"
        return web.FileResponse(path, headers=headers)

    async def close_all(self) -> None:
        """End every call, telling each caller why first (`server_shutdown`), and let their
        recordings finish writing (the writer thread does not outlive the process)."""
        calls = list(self.calls.values())
        await asyncio.gather(*(c.end("server_shutdown", "The server is shutting down.")
                               for c in calls))
        recorders = [c.recorder for c in calls if c.recorder is not None]
        if recorders:
            await asyncio.to_thread(lambda: [r.wait_closed(RECORDING_FINISH_S)
                                             for r in recorders])

    def start_draining(self) -> None:
        """Take no new calls here; `drained` is set once the last call has ended."""
        self.membership.start_draining()
        if not self.calls:
            self.drained.set()


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


def hsts_applies(host: str) -> bool:
    """Whether HSTS suits this Host: a DNS name, but not localhost or a .local name.

    HSTS binds a name, on every port, to HTTPS: set on `localhost` or `NAME.local`
    it would break the plain-http sites a developer's machine serves under the same
    name. Browsers ignore it on IP addresses anyway.
    """
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal, [addr]:port
        return False
    if name.count(":") == 1:  # name:port
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if not name or name == "localhost":
        return False
    if name.endswith((".localhost", ".local")):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


def security_headers(server: SignalingServer) -> Any:
    """Headers for every response the app sends (the page, files, JSON)."""

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")  # ?token= must not leak onward
        headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for older browsers
        # The original request (aiohttp prepares responses with it): a trusted
        # proxy's view of it was kept there by the proxy middleware.
        seen = forwarded_view(request)
        if seen.scheme == "https" and server.config.hsts_max_age_s and hsts_applies(seen.host):
            headers.setdefault("Strict-Transport-Security",
                               f"max-age={server.config.hsts_max_age_s}")

    return on_response_prepare


def create_app(server: SignalingServer) -> web.Application:
    app = web.Application(middlewares=[server.limits.middleware(),
                                       proxy_middleware(server.proxies), cors(server),
                                       json_errors],
                          client_max_size=MAX_OFFER_BYTES * 2)
    app.on_response_prepare.append(security_headers(server))
    app.router.add_post("/offer", server.offer)
    app.router.add_delete("/calls/{call_id}", server.hang_up)
    app.router.add_post("/calls/{call_id}/resume", server.resume)
    app.router.add_get("/calls", server.list_calls)
    app.router.add_get("/calls/{call_id}", server.get_call)
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/metrics", server.metrics_text)
    app.router.add_get("/config", server.client_config)
    app.router.add_get("/", server.index)
    app.router.add_get("/ca.pem", server.ca_pem)
    app.router.add_get("/{path:.+}", server.static)

    async def on_shutdown(app: web.Application) -> None:
        await server.close_all()

    app.on_shutdown.append(on_shutdown)
    return app


def _error_code(response: web.Response) -> str:
    """The code json_error gave a refusal (for the metrics); a refusal passed on from
    another worker carries only its status."""
    return str(response.get(ERROR_CODE, response.status))


def create_internal_app(server: SignalingServer, secret: str) -> web.Application:
    """The routes other workers forward to; nothing without the cluster secret."""

    @web.middleware
    async def cluster_only(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not authentic(request.headers.get(SECRET_HEADER), secret):
            return json_error(403, "forbidden", "internal address: cluster members only")
        return await handler(request)

    app = web.Application(middlewares=[cluster_only, json_errors],
                          client_max_size=MAX_OFFER_BYTES * 2)
    app.router.add_post("/offer", server.internal_offer)
    app.router.add_delete("/calls/{call_id}", server.internal_hang_up)
    app.router.add_post("/calls/{call_id}/resume", server.internal_resume)
    app.router.add_get("/calls", server.internal_calls)
    app.router.add_get("/calls/{call_id}", server.internal_call)
    return app
