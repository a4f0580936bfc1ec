"""A tiny aiortc peer for testing the scripted caller without the real server.

It speaks the server's signaling contract (POST /offer, DELETE /calls/{id}),
sends `session.ready` when the data channel opens, answers `ping` (both built
by the server's own `rtc_agent.datachannel`, so the fake cannot drift from the
schema), and plays the caller's audio straight back, so what the caller hears
is what it said. With `end=(reason, message)` it ends each call from its side as
the server does: `call.ended`, then the hang-up, either instead of
`session.ready` (a service that refused the key) or `end_after_s` after it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from rtc_agent import datachannel
from rtc_agent.ice import rtc_configuration

END_NOTICE_S = 0.2  # as the server: the notice goes out this long before the hang-up


class EchoPeer:
    def __init__(self, max_calls: int = 10, end: tuple[str, str] | None = None,
                 end_after_s: float | None = None) -> None:
        self.max_calls = max_calls
        self.end = end
        self.end_after_s = end_after_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.deleted: list[str] = []
        self.received: list[dict] = []
        self.relay = MediaRelay()

    async def offer(self, request: web.Request) -> web.Response:
        if len(self.pcs) >= self.max_calls:
            return web.json_response(
                {"error": {"code": "at_capacity", "message": "full"}},
                status=503,
                headers={"Retry-After": "1"},
            )
        body = await request.json()
        if body.get("type") != "offer":
            return web.json_response(
                {"error": {"code": "invalid_offer", "message": "not an offer"}}, status=400
            )
        call_id = uuid.uuid4().hex[:12]
        pc = RTCPeerConnection(rtc_configuration([]))
        self.pcs[call_id] = pc

        @pc.on("datachannel")
        def on_channel(channel) -> None:  # type: ignore[no-untyped-def]
            def ready() -> None:
                if self.end is None or self.end_after_s is not None:
                    channel.send(json.dumps(datachannel.session_ready(call_id, "custom")))
                if self.end is not None:
                    task = asyncio.ensure_future(self._end_call(call_id, channel))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

            @channel.on("message")
            def on_message(message: str) -> None:
                event = json.loads(message)
                self.received.append(event)
                if event.get("type") == "ping":
                    channel.send(json.dumps(datachannel.pong(event["t"], 0)))

            if channel.readyState == "open":
                ready()
            else:
                channel.on("open", ready)

        @pc.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            pc.addTrack(self.relay.subscribe(track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response(
            {"sdp": pc.localDescription.sdp, "type": "answer", "call_id": call_id}
        )

    async def _end_call(self, call_id: str, channel) -> None:  # type: ignore[no-untyped-def]
        assert self.end is not None
        await asyncio.sleep(self.end_after_s or 0.0)
        if call_id not in self.pcs:
            return
        channel.send(json.dumps(datachannel.call_ended(*self.end)))
        await asyncio.sleep(END_NOTICE_S)
        pc = self.pcs.pop(call_id, None)
        if pc is not None:
            await pc.close()

    async def delete(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        pc = self.pcs.pop(call_id, None)
        if pc is None:
            return web.json_response({"error": {"code": "not_found", "message": ""}}, status=404)
        self.deleted.append(call_id)
        await pc.close()
        return web.json_response({"ok": True})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pc in list(self.pcs.values()):
            await pc.close()
        self.pcs.clear()


@asynccontextmanager
async def run_echo_peer(
    max_calls: int = 10, end: tuple[str, str] | None = None, end_after_s: float | None = None,
) -> AsyncIterator[tuple[str, EchoPeer]]:
    """Serve an EchoPeer on 127.0.0.1 (free port); yields (base_url, peer)."""
    peer = EchoPeer(max_calls, end, end_after_s)
    app = web.Application()
    app.router.add_post("/offer", peer.offer)
    app.router.add_delete("/calls/{call_id}", peer.delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", peer
    finally:
        await peer.close()
        await runner.cleanup()
