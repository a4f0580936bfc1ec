"""A scripted WebRTC caller: offer/answer with the server, play prompts, record replies.

One `ScriptedCaller` is one call: HTTP signaling (POST /offer, DELETE
/calls/{id}), the peer connection's lifecycle, and the script's view of it.
What it says lives in `microphone`, what it hears in `received`, and the
server's data-channel messages in `events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from ssl import SSLContext
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer

from rtc_agent.ice import restrict_host_addresses, rtc_configuration
from rtc_agent.loadtest.events import (
    SESSION_READY,
    SESSION_RESUMED,
    CallEnded,
    Event,
    EventLog,
    Predicate,
    call_ended,
)
from rtc_agent.loadtest.microphone import CallerTrack, Prompt
from rtc_agent.loadtest.received import (
    DEFAULT_THRESHOLD_DBFS,
    FRAME_S,
    SAMPLE_RATE,
    ReceivedAudio,
    first_audible_after,
    silent_from,
)


class CallFailed(Exception):
    """A call could not be set up or broke; `kind` is a short machine-readable reason.

    `by_server` marks a call the server ended and said why (`call.ended`): then
    `kind` is the server's end reason and `detail` its message.
    """

    def __init__(self, kind: str, detail: str = "", *, by_server: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.by_server = by_server


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    return host == "localhost" or host.startswith("127.") or host == "::1"


class ScriptedCaller:
    """One call to an rtc-agent server, driven by a script.

    `ice_addresses` chooses which local addresses ICE offers (process-wide, see
    `rtc_agent.ice`); by default a loopback `base_url` keeps candidates on
    127.0.0.1 and any other URL leaves aioice's default.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ice_servers: Sequence[dict] = (),
        session: aiohttp.ClientSession | None = None,
        ice_addresses: Sequence[str] | None = None,
        keep_audio_s: float = 30.0,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
        ssl: SSLContext | bool = True,
        jitter_prefetch: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ice_servers = list(ice_servers)
        self._session = session
        self._own_session = session is None
        host = urlparse(self.base_url).hostname
        self.ice_addresses = (
            list(ice_addresses)
            if ice_addresses is not None
            else (["127.0.0.1"] if _loopback(host) else None)
        )
        self.threshold_dbfs = threshold_dbfs
        self.ssl = ssl  # for https servers: an SSLContext trusting their CA, or False
        # aiortc holds 4 frames (~80 ms) in its audio jitter buffer; a browser's
        # adaptive buffer on a clean network holds far less. 0 releases each frame
        # as soon as the next one arrives (~20 ms). None keeps aiortc's default.
        self.jitter_prefetch = jitter_prefetch
        self.call_id: str = ""
        self.connect_ms: float = math.nan  # start of connect() -> ICE+DTLS connected
        self.ready_ms: float = math.nan  # start of connect() -> session.ready received
        self._log = EventLog()
        self.audio = ReceivedAudio(keep_s=keep_audio_s)
        self.track = CallerTrack()
        self.pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._recv_task: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._closed = False
        self.failure: CallFailed | None = None
        # The server's `call.ended` notice, when it ended the call before we hung up.
        self.ended: CallEnded | None = None

    # -- set-up -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def connect(self, timeout: float = 15,  # noqa: ASYNC109 (the contract)
                      resume: tuple[str, str] | None = None) -> None:
        """Offer/answer, then wait for ICE+DTLS connected and `session.ready`.

        With `resume` (a call id and its resume token), carry that call on instead:
        the offer goes to `/calls/{id}/resume` and the wait is for `session.resumed`.

        Raises CallFailed: `at_capacity`, `http_4xx`/`http_5xx`, `http_error`
        (server unreachable), `ice_failed`, `timeout`, or the server's end reason
        (`by_server`) when it ends the call before it is ready.
        """
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await self._connect(t0, resume)
        except TimeoutError:
            state = self.pc.connectionState if self.pc else "none"
            what = "session.ready" if state == "connected" else f"connection (state {state})"
            self.failure = CallFailed("timeout", f"no {what} after {timeout:g} s")
        except CallFailed as exc:
            self.failure = exc
        if self.failure is not None:
            await self.hangup()  # a failed set-up leaves nothing running
            raise self.failure

    async def _connect(self, t0: float, resume: tuple[str, str] | None) -> None:
        if self.ice_addresses is not None:
            restrict_host_addresses(self.ice_addresses)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        self.pc = pc
        channel = pc.createDataChannel("events")
        self._channel = channel
        channel.on("message", self._on_message)
        transceiver = pc.addTransceiver(self.track, direction="sendrecv")
        if self.jitter_prefetch is not None:
            _set_jitter_prefetch(transceiver.receiver, self.jitter_prefetch)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._state_changed.set)
        awaited = SESSION_READY if resume is None else SESSION_RESUMED
        ready = self._log.future(lambda e: e.get("type") == awaited)

        await pc.setLocalDescription(await pc.createOffer())  # gathers fully
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        url = f"{self.base_url}/offer"
        if resume is not None:
            url = f"{self.base_url}/calls/{resume[0]}/resume"
            offer["resume_token"] = resume[1]
        try:
            async with self._session.post(
                url, json=offer, headers=self._headers(), ssl=self.ssl
            ) as resp:
                body: Any
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {}
                if resp.status != 200:
                    raise _http_failure(resp.status, body, resp.headers.get("Retry-After"))
        except aiohttp.ClientError as exc:
            raise CallFailed("http_error", f"{type(exc).__name__}: {exc}") from exc
        self.call_id = str(body.get("call_id", ""))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise CallFailed("ice_failed", f"connection state {pc.connectionState}")
            self._state_changed.clear()
            await self._state_changed.wait()
        self.connect_ms = (time.monotonic() - t0) * 1000
        await ready
        self.ready_ms = (time.monotonic() - t0) * 1000

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._recv_task is None:
            self._recv_task = asyncio.ensure_future(self.audio.record(track))

    # -- data channel -------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        """Keep the message; on `call.ended` fail every wait with the server's reason,
        so a script learns at once why the call ended instead of timing out."""
        self._log.on_message(message)
        if self._closed or self.ended is not None:
            return  # our own hang-up's notice is no failure
        notice = call_ended(self._log.events[-1])
        if notice is None:
            return
        self.ended = notice
        self._log.close(self.ended_failure)

    def ended_failure(self) -> CallFailed:
        """The failure a server-ended call raises (its reason as kind, its message)."""
        notice = self.ended or CallEnded("server_ended", "")
        return CallFailed(notice.reason, notice.message, by_server=True)

    @property
    def backend(self) -> str:
        """The Realtime backend `session.ready` named (`offline`, `openai`, ...), or ""."""
        for event in self._log.events:
            if event.get("type") == SESSION_READY:
                return str(event.get("backend") or "")
        return ""

    @property
    def events(self) -> list[Event]:
        """Every server message so far, in arrival order, each stamped with `_t`."""
        return self._log.events

    async def wait_event(
        self,
        predicate: Predicate,
        timeout: float,  # noqa: ASYNC109
        *,
        start: int | None = None,
        after: float | None = None,
    ) -> Event:
        """The next event matching `predicate`.

        By default only events that arrive after this call count. `start` (an
        index into `events`) or `after` (a monotonic time, compared with `_t`)
        also admit events already received, so a script can write
        `n = len(caller.events)` before acting and wait with `start=n` without
        racing the server. Raises TimeoutError, CallFailed("closed") when the
        call is hung up meanwhile, or the server's reason (`by_server`) when it
        ends the call.
        """
        return await self._log.wait(predicate, timeout, start=start, after=after)

    def send(self, message: dict) -> None:
        """Send one JSON message on the `events` channel (dropped if it is not open)."""
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(json.dumps(message, separators=(",", ":")))

    # -- audio ------------------------------------------------------------------------

    async def speak(self, prompt: Prompt) -> float:
        """Play `prompt` in real time, then silence; returns the monotonic time its
        last non-silent frame was sent (or when it was cut by another `speak`)."""
        return await self.track.play(prompt)

    def start_speaking(self, prompt: Prompt) -> asyncio.Future[float]:
        """Like `speak` without waiting: the future resolves as `speak` would return."""
        return self.track.play(prompt)

    def received_audio(self) -> np.ndarray:
        """Received audio kept so far (the last `keep_audio_s` seconds), 48 kHz mono int16."""
        return self.audio.samples()

    def first_audible_after(self, t: float, threshold: float | None = None) -> float | None:
        """Arrival time of the first received frame after `t` above `threshold` dBFS."""
        th = self.threshold_dbfs if threshold is None else threshold
        return first_audible_after(self.audio.times, self.audio.levels, t, th)

    def silent_from(
        self, t: float, threshold: float | None = None, min_silence_s: float = 0.3
    ) -> float | None:
        """First time after `t` from which received audio stays silent for
        `min_silence_s` (for barge-in: when the reply stopped)."""
        th = self.threshold_dbfs if threshold is None else threshold
        return silent_from(self.audio.times, self.audio.levels, t, th, min_silence_s)

    async def wait_audible(
        self, t: float, timeout: float, threshold: float | None = None  # noqa: ASYNC109
    ) -> float | None:
        """Poll until a frame after `t` is audible; None on timeout. Raises the
        server's reason (CallFailed, `by_server`) if it ends the call meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first_audible_after(t, threshold)
            if found is not None or time.monotonic() >= deadline:
                return found
            if self.ended is not None:
                raise self.ended_failure()
            await asyncio.sleep(0.02)

    async def wait_silent(
        self, t: float, timeout: float, min_silence_s: float = 0.3  # noqa: ASYNC109
    ) -> float | None:
        """Poll until received audio has stayed silent for `min_silence_s` after `t`.

        Raises the server's reason (CallFailed, `by_server`) if it ends the call:
        silence then is the hang-up, not the reply's end."""
        deadline = time.monotonic() + timeout + min_silence_s
        while True:
            if self.ended is not None:
                raise self.ended_failure()
            found = self.silent_from(t, min_silence_s=min_silence_s)
            if found is not None:
                return found
            now = time.monotonic()
            if now >= deadline:
                return None
            # No frames arriving at all also counts as silence.
            last = self.audio.times[-1] if self.audio.times else t
            if now - max(last, t) >= min_silence_s + 0.1:
                return max(last + FRAME_S, t) if last > t else t
            await asyncio.sleep(0.02)

    # -- stats and teardown --------------------------------------------------------------

    async def stats(self) -> dict:
        """Loss, jitter and RTT from aiortc's getStats (RTCP reports both ways).

        `in_*`: the server's audio as we receive it; `out_*`: ours as the server
        reports it in its receiver reports (absent until one arrives).
        """
        out: dict[str, Any] = {
            "in_packets_received": 0,
            "in_packets_lost": 0,
            "in_jitter_ms": None,
            "out_packets_sent": 0,
            "out_packets_lost": None,
            "out_fraction_lost": None,
            "out_jitter_ms": None,
            "rtt_ms": None,
            "send_max_lag_ms": round(self.track.max_lag_s * 1000, 1),
        }
        if self.pc is None:
            return out
        report = await self.pc.getStats()
        for s in report.values():
            kind = getattr(s, "type", "")
            # aiortc leaves a figure None until it has measured it (an RTT needs a
            # receiver report first), so each is taken only once it exists.
            if kind == "inbound-rtp" and getattr(s, "kind", "") == "audio":
                out["in_packets_received"] += s.packetsReceived or 0
                out["in_packets_lost"] += s.packetsLost or 0
                if s.jitter is not None:
                    out["in_jitter_ms"] = s.jitter / (SAMPLE_RATE / 1000)
            elif kind == "outbound-rtp" and getattr(s, "kind", "") == "audio":
                out["out_packets_sent"] += s.packetsSent or 0
            elif kind == "remote-inbound-rtp" and getattr(s, "kind", "") == "audio":
                out["out_packets_lost"] = s.packetsLost
                out["out_fraction_lost"] = s.fractionLost
                if s.jitter is not None:
                    out["out_jitter_ms"] = s.jitter / (SAMPLE_RATE / 1000)
                if s.roundTripTime is not None:
                    out["rtt_ms"] = s.roundTripTime * 1000
        return out

    async def hangup(self, delete: bool = True) -> None:
        """DELETE /calls/{id} and close the peer; safe to call more than once.

        `delete=False` only closes this side, leaving the call to a resume (a caller
        whose connection was replaced)."""
        if self._closed:
            return
        self._closed = True
        if delete and self.call_id and self._session is not None and not self._session.closed:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(5):
                    async with self._session.delete(
                        f"{self.base_url}/calls/{self.call_id}", headers=self._headers(),
                        ssl=self.ssl,
                    ):
                        pass
        self._log.close(lambda: CallFailed("closed", "the call was hung up"))
        self.track.stop()
        if self.pc is not None:
            await self.pc.close()
        if self._recv_task is not None:
            self._recv_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recv_task
        if self._own_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> ScriptedCaller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hangup()


def _set_jitter_prefetch(receiver: RTCRtpReceiver, prefetch: int) -> None:
    """Swap an audio receiver's jitter buffer for one with `prefetch` frames (aiortc 1.x
    keeps it in a private attribute; if that changes, fail loudly rather than mismeasure)."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    old = getattr(receiver, attr, None)
    if not isinstance(old, JitterBuffer):
        raise RuntimeError("aiortc internals changed: cannot set the jitter buffer prefetch")
    setattr(receiver, attr, JitterBuffer(capacity=old.capacity, prefetch=prefetch))


def _http_failure(status: int, body: Any, retry_after: str | None) -> CallFailed:
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    message = err.get("message", "") if isinstance(err, dict) else ""
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if retry_after:
        detail += f" (Retry-After {retry_after})"
    if code == "at_capacity":
        return CallFailed("at_capacity", detail)
    return CallFailed(f"http_{status // 100}xx", detail)
