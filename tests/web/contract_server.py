"""A scripted peer that speaks the server's HTTP and data-channel contract.

It exists to test the page's own behaviour deterministically (tool rows,
interrupted replies, the playout reports it sends, the capacity message)
without depending on what a speech backend happens to say. It echoes the
caller's microphone back as the "agent" audio and answers each `text` message
with a fixed script of events from docs/data-channel.md. The real server is
tested end to end by test_call.py; this is not a replacement for it.

Run: python -m tests.web.contract_server --host 0.0.0.0 --port 8080 --ice-address 10.99.1.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from rtc_agent.ice import restrict_host_addresses, rtc_configuration
from rtc_agent.signaling.turn import ice_servers

WEB = Path(__file__).resolve().parents[2] / "web"


class Contract:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls: dict[str, RTCPeerConnection] = {}
        self.playout: list[float] = []
        self.received: list[dict] = []
        self.relay = MediaRelay()
        self.tasks: set[asyncio.Task] = set()

    def servers(self) -> list[dict]:
        return ice_servers(self.args.ice_server, self.args.turn_url, self.args.turn_secret)

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({"iceServers": self.servers(), "tokenRequired": False})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "calls": len(self.calls),
                "max_calls": self.args.max_calls,
                "backend": "contract",
                "playout": self.playout[-20:],
                "received": self.received[-50:],
            }
        )

    async def offer(self, request: web.Request) -> web.Response:
        if len(self.calls) >= self.args.max_calls:
            return web.json_response(
                {"error": {"code": "at_capacity", "message": "all lines are busy"}},
                status=503,
                headers={"Retry-After": "7"},
            )
        body = await request.json()
        pc = RTCPeerConnection(rtc_configuration(self.servers()))
        call_id = uuid.uuid4().hex[:12]
        self.calls[call_id] = pc

        @pc.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            if track.kind == "audio":
                pc.addTrack(self.relay.subscribe(track))

        @pc.on("datachannel")
        def on_dc(channel) -> None:  # type: ignore[no-untyped-def]
            def send(msg: dict) -> None:
                if channel.readyState == "open":
                    channel.send(json.dumps(msg))

            send({"type": "session.ready", "call_id": call_id, "backend": "contract"})
            send({"type": "state", "state": "listening"})

            @channel.on("message")
            def on_message(data: str) -> None:
                msg = json.loads(data)
                if msg.get("type") == "playout":
                    self.playout.append(msg["delay_ms"])
                    return
                self.received.append(msg)
                if msg.get("type") == "text":
                    task = asyncio.ensure_future(self.script(send, msg["text"]))
                    self.tasks.add(task)  # keep a reference until it is done
                    task.add_done_callback(self.tasks.discard)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.hangup(call_id)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response(
            {"sdp": pc.localDescription.sdp, "type": "answer", "call_id": call_id}
        )

    async def script(self, send, text: str) -> None:  # type: ignore[no-untyped-def]
        """The fixed reply to a typed message: a tool call, then a streamed answer."""
        n = len(self.received)
        if text.startswith("/spoken "):
            # stands in for speech: a user transcript with its own item id
            words = text.removeprefix("/spoken ")
            for kind, field in (("transcript.delta", "delta"), ("transcript.done", "text")):
                send({"type": kind, "role": "user", "item_id": f"s{n}", field: words})
            send({"type": "state", "state": "listening"})
            return
        # the echo of a typed message carries an empty item_id, as rtc-agent's does
        send(
            {
                "type": "transcript.done",
                "role": "user",
                "item_id": "",
                "text": text,
                "interrupted": False,
            }
        )
        send({"type": "state", "state": "thinking"})
        send(
            {
                "type": "tool.started",
                "call_id": f"t{n}",
                "name": "lookup",
                "arguments": {"query": text},
            }
        )
        await asyncio.sleep(0.6)
        send(
            {
                "type": "tool.finished",
                "call_id": f"t{n}",
                "name": "lookup",
                "ok": True,
                "duration_ms": 600,
            }
        )
        send({"type": "state", "state": "speaking"})
        for part in ("You said: ", text):
            send(
                {"type": "transcript.delta", "role": "assistant", "item_id": f"a{n}", "delta": part}
            )
            await asyncio.sleep(0.1)
        cut = "interrupt" in text
        send(
            {
                "type": "transcript.done",
                "role": "assistant",
                "item_id": f"a{n}",
                "text": "You said: " if cut else f"You said: {text}",
                "interrupted": cut,
            }
        )
        send({"type": "state", "state": "listening"})

    async def hangup(self, call_id: str) -> None:
        pc = self.calls.pop(call_id, None)
        if pc is not None:
            await pc.close()

    async def delete(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if call_id not in self.calls:
            return web.json_response(
                {"error": {"code": "not_found", "message": "no such call"}}, status=404
            )
        await self.hangup(call_id)
        return web.json_response({"ok": True})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB / "index.html")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-calls", type=int, default=4)
    p.add_argument("--ice-address", action="append", default=[])
    p.add_argument("--ice-server", action="append", default=[])
    p.add_argument("--turn-url", action="append", default=[])
    p.add_argument("--turn-secret")
    args = p.parse_args()
    if args.ice_address:
        restrict_host_addresses(args.ice_address)
    c = Contract(args)
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/config", c.config)
    app.router.add_get("/healthz", c.healthz)
    app.router.add_post("/offer", c.offer)
    app.router.add_delete("/calls/{call_id}", c.delete)
    app.router.add_static("/", WEB)
    web.run_app(app, host=args.host, port=args.port, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
