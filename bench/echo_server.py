"""A bare aiortc echo server: the floor a WebRTC media server in Python costs per call.

Each call's audio is decoded (aiortc), resampled 48 -> 24 kHz and back (what a
bridge to a 24 kHz Realtime session must do at least), re-encoded (aiortc) and
sent back. It speaks the same signaling as `rtc-agent serve` (POST /offer,
DELETE /calls/{id}, GET /healthz, `session.ready` on the `events` channel), so
`rtc_agent.loadtest` can drive it unchanged.

    python bench/echo_server.py --port 8090 --max-calls 40
"""

from __future__ import annotations

import argparse
import fractions
import json
import uuid

import av
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtc_agent.ice import restrict_host_addresses, rtc_configuration


class EchoTrack(MediaStreamTrack):
    """Plays the caller's audio back after a 48 -> 24 -> 48 kHz round trip."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.down = av.AudioResampler(format="s16", layout="mono", rate=24000)
        self.up = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
        self.pending: list[av.AudioFrame] = []
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        while not self.pending:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                self.stop()
                raise
            for f24 in self.down.resample(frame):
                self.pending.extend(self.up.resample(f24))
        out = self.pending.pop(0)
        out.pts = self.pts
        out.time_base = fractions.Fraction(1, 48000)
        self.pts += out.samples
        return out


class EchoServer:
    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.pcs: dict[str, RTCPeerConnection] = {}

    async def offer(self, request: web.Request) -> web.Response:
        if len(self.pcs) >= self.max_calls:
            return web.json_response(
                {"error": {"code": "at_capacity", "message": "at --max-calls"}},
                status=503,
                headers={"Retry-After": "1"},
            )
        body = await request.json()
        call_id = uuid.uuid4().hex[:12]
        pc = RTCPeerConnection(rtc_configuration([]))
        self.pcs[call_id] = pc

        @pc.on("datachannel")
        def on_channel(channel) -> None:  # type: ignore[no-untyped-def]
            msg = json.dumps({"type": "session.ready", "call_id": call_id, "backend": "custom"})
            if channel.readyState == "open":
                channel.send(msg)
            else:
                channel.on("open", lambda: channel.send(msg))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                pc.addTrack(EchoTrack(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.drop(call_id)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response(
            {"sdp": pc.localDescription.sdp, "type": "answer", "call_id": call_id}
        )

    async def drop(self, call_id: str) -> bool:
        pc = self.pcs.pop(call_id, None)
        if pc is None:
            return False
        await pc.close()
        return True

    async def delete(self, request: web.Request) -> web.Response:
        found = await self.drop(request.match_info["call_id"])
        return web.json_response({"ok": found}, status=200 if found else 404)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "calls": len(self.pcs), "max_calls": self.max_calls, "backend": "echo"}
        )


def make_app(max_calls: int) -> web.Application:
    server = EchoServer(max_calls)
    app = web.Application()
    app.router.add_post("/offer", server.offer)
    app.router.add_delete("/calls/{call_id}", server.delete)
    app.router.add_get("/healthz", server.healthz)

    async def close_all(_: web.Application) -> None:
        for call_id in list(server.pcs):
            await server.drop(call_id)

    app.on_shutdown.append(close_all)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--max-calls", type=int, default=100)
    parser.add_argument("--ice-address", action="append", default=None)
    args = parser.parse_args()
    restrict_host_addresses(args.ice_address or ["127.0.0.1"])
    web.run_app(make_app(args.max_calls), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
