"""A scripted peer that speaks the server's HTTP and data-channel contract.

It exists to test the page's own behaviour deterministically (tool rows,
interrupted replies, the playout reports it sends, the capacity message)
without depending on what a speech backend happens to say. It echoes the
caller's microphone back as the "agent" audio and answers each `text` message
with a fixed script of events from docs/data-channel.md. The real server is
tested end to end by test_call.py; this is not a replacement for it.

Typed commands play other scripts (see `Contract.command`): `/spoken WORDS`,
`/slow` (a reply streamed over 6 s), `/heard` and `/heard-ms` (interrupted
replies, with and without `heard_text`), `/turn MS` (an end of speech, then a
tone as the reply MS later: a known turn latency), `/end REASON` (call.ended,
then the hang-up).

Run: python -m tests.web.contract_server --host 0.0.0.0 --port 8080 --ice-address 10.99.1.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from av import AudioFrame

from rtc_agent.ice import restrict_host_addresses, rtc_configuration
from rtc_agent.signaling.turn import ice_servers

WEB = Path(__file__).resolve().parents[2] / "web"
TONE_HZ = 440.0
END_NOTICE_S = 0.2  # call.ended goes out this long before the hang-up, as rtc-agent's

# /heard: an interrupted reply, and the part of it the caller heard
HEARD_TEXT = "The first part was played. "
UNHEARD_TEXT = "The second part never was."
# /heard-ms: no heard_text, so the page splits by heard_ms / audio_ms (half)
HEARD_MS_TEXT = "one two three four five six seven eight"
SLOW_WORDS = 20


class ScriptedAudio(MediaStreamTrack):
    """The agent's audio: the caller's microphone echoed back, or (while a script
    says so) silence or a tone, on the echo's clock and in its format."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.mode = "echo"  # echo | silence | tone
        self.phase = 0

    async def recv(self) -> AudioFrame:
        frame = await self.source.recv()
        if self.mode == "echo":
            return frame
        channels = len(frame.layout.channels)
        if self.mode == "tone":
            t = (self.phase + np.arange(frame.samples)) / frame.sample_rate
            mono = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        else:
            mono = np.zeros(frame.samples, np.int16)
        self.phase += frame.samples
        out = AudioFrame.from_ndarray(np.repeat(mono, channels).reshape(1, -1),
                                      format="s16", layout=frame.layout.name)
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


class Contract:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls: dict[str, RTCPeerConnection] = {}
        self.audio: dict[str, ScriptedAudio] = {}
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
                self.audio[call_id] = ScriptedAudio(self.relay.subscribe(track))
                pc.addTrack(self.audio[call_id])

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
                if msg.get("type") == "ping":  # the page pings every second, as the server does
                    send({"type": "pong", "t": msg.get("t"), "server_t": 0})
                    return
                self.received.append(msg)
                if msg.get("type") == "text":
                    task = asyncio.ensure_future(self.script(send, msg["text"], call_id))
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

    async def command(self, send: Callable[[dict], None], text: str, call_id: str) -> None:
        """The scripts behind typed commands (the module's docstring lists them)."""
        n = len(self.received)
        name, _, arg = text.partition(" ")
        assistant = {"type": "transcript.delta", "role": "assistant", "item_id": f"a{n}"}
        if name == "/slow":
            # a reply streamed a word every 300 ms for 6 s: there is time to lose
            # the connection (or stall it) in the middle of it
            send({"type": "state", "state": "speaking"})
            for i in range(SLOW_WORDS):
                send({**assistant, "delta": f"word{i} "})
                await asyncio.sleep(0.3)
            send({"type": "transcript.done", "role": "assistant", "item_id": f"a{n}",
                  "text": "".join(f"word{i} " for i in range(SLOW_WORDS)),
                  "interrupted": False})
            send({"type": "state", "state": "listening"})
        elif name in ("/heard", "/heard-ms"):
            whole = HEARD_TEXT + UNHEARD_TEXT if name == "/heard" else HEARD_MS_TEXT
            send({"type": "state", "state": "speaking"})
            send({**assistant, "delta": whole[: len(whole) // 3]})
            await asyncio.sleep(0.2)
            done = {"type": "transcript.done", "role": "assistant", "item_id": f"a{n}",
                    "text": whole, "interrupted": True, "heard_ms": 2000, "audio_ms": 4000}
            if name == "/heard":
                done["heard_text"] = HEARD_TEXT
            send(done)
            send({"type": "state", "state": "listening"})
        elif name == "/turn":
            # the caller's speech ends (the server's state leaves user_speaking);
            # the reply's first audio leaves here `arg` ms later
            audio = self.audio[call_id]
            audio.mode = "silence"
            send({"type": "state", "state": "user_speaking"})
            await asyncio.sleep(0.4)  # the echo in the caller's jitter buffer drains
            send({"type": "state", "state": "thinking"})
            await asyncio.sleep(int(arg) / 1000)
            audio.mode = "tone"
            send({"type": "state", "state": "speaking"})
            await asyncio.sleep(1.0)
            audio.mode = "silence"
            send({"type": "state", "state": "listening"})
        elif name == "/end":
            send({"type": "call.ended", "reason": arg, "message": f"Scripted ending ({arg})."})
            await asyncio.sleep(END_NOTICE_S)
            await self.hangup(call_id)
        else:
            raise ValueError(f"unknown command {name!r}")

    async def script(self, send, text: str, call_id: str) -> None:  # type: ignore[no-untyped-def]
        """The fixed reply to a typed message: a tool call, then a streamed answer."""
        n = len(self.received)
        if text.startswith("/") and not text.startswith("/spoken "):
            await self.command(send, text, call_id)
            return
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
        self.audio.pop(call_id, None)
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
