"""One call: the caller's peer connection, its Realtime session, and its teardown.

`Call` owns every resource of a call (the RTCPeerConnection, the inbound pump,
the playout track, the Realtime WebSocket, running tools, its recording) so that
ending a call has one place, and leak checks one target. It wires I/O to the pure
`RealtimeSession` and executes the effects the session returns, and tells the pure
`CallRecord` (and the metrics) what happened when.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from rtc_agent import datachannel as caller
from rtc_agent.datachannel import (
    CALLER_MESSAGES_BURST,
    CALLER_MESSAGES_PER_S,
    CallerMessageError,
    CallState,
    ServerMessage,
    TokenBucket,
    encode_server_message,
    parse_caller_message,
)
from rtc_agent.ice import rtc_configuration
from rtc_agent.media.inbound import InboundAudio, append_event, decode_on_loop
from rtc_agent.media.playout import PlayoutTrack
from rtc_agent.media.recorder import CallRecorder
from rtc_agent.observability.call_record import CallRecord, estimate_cost, log_line
from rtc_agent.observability.metrics import Metrics
from rtc_agent.realtime.client import RENEWAL, RealtimeClient, UpstreamFailed
from rtc_agent.realtime.health import UpstreamHealth
from rtc_agent.realtime.service import RealtimeService
from rtc_agent.realtime.session import (
    Effect,
    EndItemAudio,
    FlushPlayout,
    PlayAudio,
    RealtimeSession,
    RunTool,
    SendCaller,
    SendUpstream,
)
from rtc_agent.realtime.settings import SessionSettings
from rtc_agent.tools.registry import CallTools, ToolRegistry, cancelled_result

log = logging.getLogger(__name__)

MAX_EARLY_MESSAGES = 64  # held until the caller's data channel opens
# aiortc queues what a data channel sends without limit; a caller that stops
# reading (its SCTP window closed) must not grow the server's memory.
MAX_CALLER_BACKLOG_BYTES = 1 << 20
END_NOTICE_S = 0.2  # an ending's reason goes out this long before the hang-up
# A call ended before its data channel opened (a refused key fails in ~0.1 s, while
# ICE and DTLS take ~1 s) waits this long for the channel, so the caller learns why.
END_WAIT_CHANNEL_S = 5.0
STATS_INTERVAL_S = 5.0  # RTP statistics for the metrics, per call
# A connected caller sends audio all the time (silence too): none for this long means
# its path died, noticed in seconds rather than at aioice's 30 s consent timeout.
AUDIO_SILENCE_S = 2.0
PATH_WATCH_S = 0.25
# Ending a call itself (idle, --max-call-s), the agent lets the reply on air finish,
# then says its goodbye: each wait at most this long.
FAREWELL_WAIT_S = 20.0
# Messages sent on a path that had already died (before the server noticed) are lost;
# those a page can take twice are sent again after a resume: the ones sent since just
# before the caller's last audio arrived.
RESENDABLE = frozenset({"transcript.done", "tool.finished", "usage"})
RECENT_SENT = 32
RESEND_MARGIN_S = 0.5
TOOL_ACK = "One moment, let me look that up."
OPUS_RTP_CLOCK = 48000  # aiortc reports jitter in RTP timestamp units
MAX_USER_AGENT = 256
# What a recording's JSON keeps of the caller protocol: the transcript and its timing.
RECORDED_MESSAGES = frozenset({"transcript.done", "tool.started", "tool.finished", "error",
                               "state"})


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Call:
    """A caller bridged to a Realtime session."""

    def __init__(
        self,
        call_id: str,
        *,
        service: RealtimeService,
        settings: SessionSettings,
        tools: ToolRegistry,
        ice_servers: Iterable[dict[str, Any]] = (),
        connect_timeout_s: float = 30.0,
        max_duration_s: float | None = None,
        decode_on_loop: bool = True,
        ptime_ms: int = 20,
        dtx: bool = False,
        on_closed: Callable[[Call], None] | None = None,
        node: str | None = None,
        worker: str | None = None,
        metrics: Metrics | None = None,
        user_agent: str = "",
        started: float | None = None,
        recorder: CallRecorder | None = None,
        upstream_health: UpstreamHealth | None = None,
        resume_window_s: float = 30.0,
        pricing: dict[str, float] | None = None,
        idle_timeout_s: float = 0.0,
        idle_prompt: str = "Are you still there?",
        goodbye: str = "Thank you for calling. Goodbye!",
        session_renew_s: float = 0.0,
        tool_ack_ms: int = 0,
    ) -> None:
        self.call_id = call_id
        self.upstream_health = upstream_health
        self.node = node
        self.worker = worker
        self.service = service
        self.created = time.monotonic()
        self.metrics = metrics
        self.record = CallRecord(
            call_id, started=self.created if started is None else started,
            started_utc=_utc_now(), node=node, worker=worker, backend=service.kind,
            user_agent=user_agent[:MAX_USER_AGENT], pricing=dict(pricing or {}))
        self.recorder = recorder
        self._late_frames_seen = 0
        self._lost_seen = 0
        self._tools: ToolRegistry | CallTools = tools  # the call's own once listed
        # The call's tools are known: at once, unless some are listed per call (MCP).
        self._tools_ready = asyncio.Event()
        if not tools.per_call:
            self._tools_ready.set()
        self._on_closed = on_closed
        self._connect_timeout_s = connect_timeout_s
        self._max_duration_s = max_duration_s
        self._decode_on_loop = decode_on_loop
        self._ice_servers = list(ice_servers)
        self._resume_window_s = resume_window_s
        self._idle_timeout_s = idle_timeout_s
        self._idle_prompt = idle_prompt
        self._goodbye = goodbye
        self._session_renew_s = session_renew_s
        self._tool_ack_s = tool_ack_ms / 1000
        self._idle_stage = 0  # 1: the idle prompt was said; caller activity resets it
        self._listening_since: float | None = None  # the agent listening, since when
        self._farewell = False  # the call is ending itself (goodbye said or being said)
        self._renewing = False
        self._tools_running = 0
        self._tools_acknowledged = False
        self._cancellable_tools: set[asyncio.Task[Any]] = set()  # running, cancellable
        self._cancelled_tools: set[asyncio.Task[Any]] = set()  # cancelled by the caller
        # Lets this caller bring the call back on a new connection; never logged.
        self.resume_token = secrets.token_urlsafe(24)
        # When the media path was lost (or replaced) and no caller audio has come
        # since; None while the path works.
        self._path_lost_at: float | None = None
        self._last_audio: float | None = None  # the caller's last audio frame
        self._connected_at: float | None = None  # the current connection's DTLS completed
        self._old_peers: set[asyncio.Task[None]] = set()  # closing replaced connections
        self._pc_retired = False  # the current connection is given up (closing or closed)
        self._recent_sent: deque[tuple[float, str]] = deque(maxlen=RECENT_SENT)
        self._resend: list[str] = []  # to send again on the resumed channel
        self._rtp_before = (0, 0)  # packets received and lost on replaced connections
        self._rtp_now = (0, 0)
        self.pc = RTCPeerConnection(rtc_configuration(self._ice_servers))
        self.session = RealtimeSession(service.dialect, settings, tools.definitions())
        self.playout = PlayoutTrack(
            on_item_started=self._on_item_started,
            on_item_finished=self._on_item_finished,
            on_frame=self._on_frame,
            frame_ms=ptime_ms,
            dtx=dtx,
        )
        self.client = RealtimeClient(
            service,
            on_event=self._on_upstream_event,
            on_connected=self._on_upstream_connected,
            on_disconnected=self._on_upstream_disconnected,
        )
        self._channel: RTCDataChannel | None = None
        self._early: deque[str] = deque(maxlen=MAX_EARLY_MESSAGES)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready_sent = False
        self._session_configured = False
        self._closed = asyncio.Event()
        self._closing = False
        self._ending = False
        self._channel_open = asyncio.Event()  # also set at close: nothing to wait for then
        self.close_reason: str | None = None
        self.caller_errors = 0
        self._text_limit = TokenBucket(per_second=2.0, burst=5)
        self._inbound_limit = TokenBucket(CALLER_MESSAGES_PER_S, CALLER_MESSAGES_BURST)
        self._refusal_limit = TokenBucket(per_second=1.0, burst=5)
        self.caller_dropped = 0  # caller messages dropped unread (flood)
        self.caller_backlog_dropped = 0  # messages to a caller that stopped reading
        self._wire_peer(self.pc, resumed=False)

    # ------------------------------------------------------------ set-up

    def _wire_peer(self, pc: RTCPeerConnection, *, resumed: bool) -> None:
        """Events of one peer connection; those of a connection already replaced by a
        resume (or given up) are ignored."""

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != "events" or pc is not self.pc or self._closing:
                return
            self._channel = channel
            channel.on("message", self._on_caller_message)
            if resumed:
                for data in encode_server_message(caller.session_resumed(self.call_id)):
                    channel.send(data)
                for data in self._resend:
                    channel.send(data)
                self._resend = []
                self._early.append(encode_server_message(
                    caller.state_changed(self.session.state))[0])
            while self._early:
                channel.send(self._early.popleft())
            self._channel_open.set()
            self._maybe_ready()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and pc is self.pc:
                self._spawn(self._pump_inbound(track, pc), "inbound")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc or self._pc_retired:
                return
            if pc.connectionState == "connected":
                self._connected_at = time.monotonic()
            elif pc.connectionState == "closed":
                # The caller closed it (DTLS close): gone on purpose, no resume to wait for.
                await self.close("peer connection closed", "caller_gone")
            elif pc.connectionState == "failed":
                self._lose_path("peer connection failed")

    async def _accept(self, pc: RTCPeerConnection,
                      offer: RTCSessionDescription) -> RTCSessionDescription:
        await pc.setRemoteDescription(offer)
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise ValueError("the offer has no audio m-line")
        for transceiver in audio:
            if self._decode_on_loop and not decode_on_loop(transceiver.receiver):
                log.warning("aiortc internals changed: decoding caller audio on a thread")
        pc.addTrack(self.playout)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)  # aiortc gathers every candidate here
        return pc.localDescription

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the caller's offer and return an answer carrying all candidates."""
        # Open the Realtime socket while ICE and DTLS proceed.
        if isinstance(self._tools, ToolRegistry) and self._tools.per_call:
            self._spawn(self._open_tools(self._tools), "tools")
        self._spawn(self._run_upstream(), "upstream")
        self._spawn(self._watch_connect(), "connect-timeout")
        self._spawn(self._watch_path(), "path")
        if self._max_duration_s:
            self._spawn(self._limit_duration(self._max_duration_s), "max-duration")
        if self.metrics is not None:
            self._spawn(self._sample_stats(), "stats")
        return await self._accept(self.pc, offer)

    @property
    def resumes(self) -> int:
        """Times the caller brought the call back on a new connection (the record's)."""
        return self.record.resumes

    @property
    def path_lost(self) -> bool:
        """No working media path: lost, or replaced and not yet carrying audio."""
        return self._path_lost_at is not None

    def token_matches(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self.resume_token.encode())

    async def resume(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Carry the call on over a new peer connection (the caller changed networks).

        The Realtime session, the playout and the call's books stay; the old
        connection is closed (if the server had not noticed it die, it is given up
        now, as a lost path). `session.resumed` goes out on the new data channel.
        Raises what aiortc raises for a bad offer; the call then still waits."""
        if self._closing:
            raise RuntimeError("the call has ended")
        self._lose_path("replaced by a resume")
        pc = RTCPeerConnection(rtc_configuration(self._ice_servers))
        self.pc, self._pc_retired = pc, False
        self._wire_peer(pc, resumed=True)
        self._last_audio = self._connected_at = None
        self.playout = self.playout.successor()  # the old one stops with its connection
        try:
            answer = await self._accept(pc, offer)
        except BaseException:
            self._retire_current()
            raise
        self.record.resumed()
        if self.metrics is not None:
            self.metrics.resumes.inc()
        log.info("call %s resumed on a new connection (%d so far)", self.call_id, self.resumes)
        return answer

    def _lose_path(self, why: str) -> None:
        """The media path is gone: cut what was playing where the caller last heard
        it, hold the rest, and wait up to the resume window for the caller to come
        back (`_watch_path` ends the call then). With no window, end now."""
        if self._closing:
            return
        if self._path_lost_at is None:
            now = time.monotonic()
            self._path_lost_at = now
            if self._resume_window_s <= 0:
                self._spawn(self.close(f"media path lost: {why}", "caller_gone"), "end")
                return
            # Audio sent since the caller's last audio reached us went into the void.
            unheard_ms = (now - self._last_audio) * 1000 if self._last_audio is not None else 0.0
            log.info("call %s: media path lost (%s); waiting up to %g s for a resume",
                     self.call_id, why, self._resume_window_s)
            if self.metrics is not None:
                self.metrics.paths_lost.inc()
            self._channel = None  # what is said meanwhile waits for the new channel
            self._channel_open.clear()
            cutoff = (self._last_audio or now) - RESEND_MARGIN_S
            self._resend = [data for at, data in self._recent_sent if at >= cutoff]
            self._recent_sent.clear()
            self._apply(self.session.on_path_lost(unheard_ms))
        self._retire_current()

    def _retire_current(self) -> None:
        """Close the current connection (once), counting its packets first."""
        if self._pc_retired:
            return
        self._pc_retired = True
        pc = self.pc

        async def retire() -> None:
            with contextlib.suppress(Exception):
                await self._take_stats(pc)
            received, lost = self._rtp_now
            self._rtp_before = (self._rtp_before[0] + received, self._rtp_before[1] + lost)
            self._rtp_now = (0, 0)
            with contextlib.suppress(Exception):
                await pc.close()

        task = asyncio.create_task(retire(), name=f"{self.call_id}:retire-connection")
        self._old_peers.add(task)
        task.add_done_callback(self._old_peers.discard)

    async def _watch_path(self) -> None:
        """Notice a path that died without a close (caller audio stopped), and end a
        call whose caller did not resume within the window; also the call's other
        clocks: the idle caller, the session's renewal."""
        while True:
            await asyncio.sleep(PATH_WATCH_S)
            now = time.monotonic()
            self._check_idle(now)
            self._check_renewal()
            lost_at = self._path_lost_at
            if lost_at is None:
                # a connection whose audio never came counts from when it connected
                last = self._last_audio if self._last_audio is not None else self._connected_at
                if last is not None and now - last > AUDIO_SILENCE_S:
                    self._lose_path(f"no audio from the caller for {AUDIO_SILENCE_S:g} s")
            elif self._resume_window_s > 0 and now - lost_at > self._resume_window_s:
                await self.close("the caller did not come back", "caller_gone")
                return

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.call_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _limit_duration(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._say_goodbye("max_duration", f"The call reached its {seconds:g} s limit.")

    async def _until(self, done: Callable[[], bool], within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not done():
            if self._closing or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _say_goodbye(self, reason: str, message: str) -> None:
        """End the call from the agent's side, politely: let the reply on air finish,
        say the goodbye, then `end` (each wait bounded)."""
        if self._farewell or self._closing:
            return
        self._farewell = True
        log.info("call %s: ending (%s): %s", self.call_id, reason, message)
        session = self.session
        if self._path_lost_at is None:
            await self._until(lambda: session.quiet, FAREWELL_WAIT_S)
            said = session.say(self._goodbye)
            if said:
                self._apply(said)
                await self._until(lambda: session.state != CallState.LISTENING, 5.0)
                await self._until(lambda: session.quiet, FAREWELL_WAIT_S)
        await self.end(reason, message)

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self.resumes == 0 and self.pc.connectionState != "connected":
            await self.close("ICE did not connect in time", "connect_timeout")

    def _check_idle(self, now: float) -> None:
        """--idle-timeout-s: a caller silent that long is asked whether they are still
        there; silent as long again, the agent says goodbye and ends the call."""
        since = self._listening_since
        if (not self._idle_timeout_s or since is None or self._farewell
                or self._path_lost_at is not None or now - since < self._idle_timeout_s
                or not self.session.quiet):
            return
        if self._idle_stage == 0:
            said = self.session.say(self._idle_prompt)
            if said:
                self._idle_stage = 1
                self._listening_since = now  # the next period runs from here at the latest
                self._apply(said)
        else:
            silent = 2 * self._idle_timeout_s
            self._spawn(self._say_goodbye(
                "idle", f"The call ended after {silent:g} s without a word from the caller."),
                "idle-goodbye")

    def _check_renewal(self) -> None:
        """--session-renew-s: replace the Realtime session before the service's cap, at
        a quiet moment, so no reply is cut and the cap never closes it mid-sentence."""
        client = self.client
        opened = client.connected_at
        if (not self._session_renew_s or opened is None or not client.connected
                or self._farewell or self._path_lost_at is not None or not self.session.quiet
                or asyncio.get_running_loop().time() - opened < self._session_renew_s):
            return
        if client.renew():
            self._renewing = True
            log.info("call %s: renewing the Realtime session after %g s", self.call_id,
                     self._session_renew_s)

    def _caller_active(self) -> None:
        """The caller spoke or typed: the idle clock starts over, and tools marked
        cancellable stop (their answers are no longer wanted); others run on."""
        self._idle_stage = 0
        for task in self._cancellable_tools - self._cancelled_tools:
            self._cancelled_tools.add(task)
            task.cancel()

    # ------------------------------------------------------------ media

    def _on_item_started(self, item_id: str) -> None:
        # Called from the playout track's recv(): an exception here would stop
        # the sender, so it is logged instead.
        try:
            latency = self.record.reply_audio_started(time.monotonic())
            if latency is not None and self.metrics is not None:
                self.metrics.turn_latency.observe(latency)
            self._apply(self.session.on_item_started(item_id))
        except Exception:
            log.exception("call %s: item start", self.call_id)

    def _on_item_finished(self, item_id: str, sent_ms: float) -> None:
        try:
            self._apply(self.session.on_item_finished(item_id, sent_ms))
        except Exception:
            log.exception("call %s: item end", self.call_id)

    def _on_frame(self, pcm: bytearray | None) -> None:
        """Every tick of the playout (20 ms; 10 ms with --ptime 10): the recording's clock,
        the reply's text released as its audio plays, and a barge-in is complete at its
        first silence."""
        if self.recorder is not None:  # told the tick's length: a silent tick has no pcm
            self.recorder.agent_frame(pcm, self.playout.frame_ms)
        if pcm is not None and self.session.captions_held:
            playout = self.playout
            self._apply(self.session.on_playout_progress(playout.current_item, playout.sent_ms))
        if pcm is None and self.record.barge_in_open:
            took = self.record.playout_silent(time.monotonic())
            if took is not None and self.metrics is not None:
                self.metrics.barge_in.observe(took)

    async def _pump_inbound(self, track: MediaStreamTrack, pc: RTCPeerConnection) -> None:
        inbound = InboundAudio()
        send_audio = self.client.send_audio
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame) or pc is not self.pc:
                continue
            now = time.monotonic()
            self._last_audio = now
            if first:
                first = False
                if self._path_lost_at is not None:  # a resumed path: audio flows again
                    self._path_lost_at = None
                    log.info("call %s: audio flowing on the new connection", self.call_id)
                setup = self.record.media_flowing(now)
                if setup is not None and self.metrics is not None:
                    self.metrics.call_setup.observe(setup)
            for chunk in inbound.push(frame):
                send_audio(append_event(chunk))
                if self.recorder is not None:
                    self.recorder.caller_audio(chunk)

    # ------------------------------------------------------------ upstream

    async def _run_upstream(self) -> None:
        try:
            await self.client.run()
        except Exception as exc:
            if not isinstance(exc, UpstreamFailed):
                log.exception("call %s: upstream crashed", self.call_id)
            elif self.upstream_health is not None and self.upstream_health.failed(
                    exc.kind, str(exc), datetime.datetime.now(datetime.UTC)):
                log.warning("Realtime service %s: %s", exc.kind, exc)
            log.warning("call %s: upstream failed: %s", self.call_id, exc)
            await self.end("upstream_failed", f"The agent's service {exc}."
                           if isinstance(exc, UpstreamFailed) and exc.kind != "unreachable"
                           else f"The agent's service is unavailable: {exc}.")

    def _on_upstream_connected(self, reconnected: bool) -> None:
        if reconnected and self._renewing:
            self._renewing = False
            self.record.session_renewed()
            self._apply(self.session.on_reconnected())
            return
        if self.upstream_health is not None and self.upstream_health.ok(
                datetime.datetime.now(datetime.UTC)):
            log.info("Realtime service ok: %s", self.service.describe())
        if reconnected:
            self.record.upstream_reconnected()
            if self.metrics is not None:
                self.metrics.upstream_reconnects.inc()
            self._apply(self.session.on_reconnected())
        elif self._tools_ready.is_set():
            self._apply(self.session.start())
        else:  # the session.update carries the call's tools: it waits for their listing
            self._spawn(self._start_with_tools(), "session-start")

    async def _open_tools(self, registry: ToolRegistry) -> None:
        """The call's own tools (an MCP server's are listed per call, bounded in time,
        while ICE proceeds); `close` frees what they opened."""
        try:
            self._tools = await registry.for_call()
            self.session.tools = self._tools.definitions()
        finally:
            self._tools_ready.set()

    async def _start_with_tools(self) -> None:
        await self._tools_ready.wait()
        self._apply(self.session.start())

    def _on_upstream_disconnected(self, reason: str) -> None:
        if reason == RENEWAL:  # planned, at a quiet moment: nothing to warn the caller of
            self._apply(self.session.on_disconnected())
            return
        log.info("call %s: upstream disconnected (%s), reconnecting", self.call_id, reason)
        self._to_caller(caller.error("upstream_reconnecting",
                                     "Lost the agent's service; reconnecting."))
        self._apply(self.session.on_disconnected())

    def _observe(self, event: dict[str, Any]) -> None:
        """What the call's books and the metrics take from the service's events."""
        etype = event.get("type")
        if etype == "input_audio_buffer.speech_stopped":
            self.record.speech_stopped(time.monotonic())
        elif etype == "input_audio_buffer.speech_started":
            self.record.speech_started(time.monotonic())
            self._caller_active()
        elif etype == "response.done":
            response = event.get("response")
            added = self.record.tokens.add(response.get("usage")
                                           if isinstance(response, dict) else None)
            if added:
                if self.metrics is not None:
                    self.metrics.add_tokens(added.items())
                summary = self.record.tokens.as_dict()
                cost = (round(estimate_cost(self.record.tokens, self.record.pricing), 6)
                        if self.record.pricing else None)
                self._to_caller(caller.usage(summary, cost))
        elif etype == "error":
            self.record.upstream_error()
            if self.metrics is not None:
                error = event.get("error")
                self.metrics.upstream_error(error.get("code") if isinstance(error, dict)
                                            else None)

    def _on_upstream_event(self, event: dict[str, Any]) -> None:
        self._observe(event)
        if event.get("type") == "session.updated" and not self._session_configured:
            self._session_configured = True
            self._maybe_ready()
        self._apply(self.session.handle_upstream(event))

    def _maybe_ready(self) -> None:
        if self._ready_sent or not self._session_configured or self._channel is None:
            return
        self._ready_sent = True
        self._to_caller(caller.session_ready(self.call_id, self.service.kind,
                                             node=self.node, worker=self.worker,
                                             recorded=self.recorder is not None,
                                             resume_token=self.resume_token))
        self._to_caller(caller.state_changed(self.session.state))

    # ------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, PlayAudio):
                self.playout.enqueue(effect.item_id, effect.pcm)
            elif isinstance(effect, SendUpstream):
                self.client.send(effect.event)
            elif isinstance(effect, SendCaller):
                self._to_caller(effect.message)
            elif isinstance(effect, EndItemAudio):
                self.playout.end_item(effect.item_id)
            elif isinstance(effect, FlushPlayout):
                flushed = self.playout.flush()
                if flushed.item_id is not None and not effect.unheard_ms:
                    self.record.playout_flushed()  # a barge-in, timed to the playout's silence
                heard = max(0.0, flushed.sent_ms - effect.unheard_ms)
                self._apply(self.session.on_playout_flushed(flushed.item_id, heard))
            elif isinstance(effect, RunTool):
                self._spawn(self._run_tool(effect), f"tool:{effect.name}")

    async def _run_tool(self, effect: RunTool) -> None:
        self._tools_running += 1
        ack = (asyncio.get_running_loop().call_later(self._tool_ack_s, self._acknowledge_tools)
               if self._tool_ack_s > 0 else None)
        task = asyncio.current_task()
        if task is not None and self._tools.cancellable(effect.name):
            self._cancellable_tools.add(task)
        started = time.monotonic()
        try:
            result = await self._tools.run(effect.name, effect.arguments)
        except asyncio.CancelledError:
            if self._closing or task is None or task not in self._cancelled_tools:
                raise  # the call is ending: nobody waits for the answer
            task.uncancel()
            result = cancelled_result(int((time.monotonic() - started) * 1000))
        finally:
            if task is not None:
                self._cancellable_tools.discard(task)
                self._cancelled_tools.discard(task)
            if ack is not None:
                ack.cancel()
            self._tools_running -= 1
            if self._tools_running == 0:
                self._tools_acknowledged = False
        self.record.tool_finished(effect.name, result.outcome, result.duration_ms / 1000)
        if self.metrics is not None:
            self.metrics.tool_calls.labels(effect.name, result.outcome).inc()
            self.metrics.tool_seconds.labels(effect.name).observe(result.duration_ms / 1000)
        if not self._closing:
            self._apply(self.session.on_tool_result(
                effect.call_id, result.ok, result.output, result.duration_ms,
                moved_on=result.cancelled))

    def _acknowledge_tools(self) -> None:
        """--tool-ack-ms: a tool still running says so, once per round, rather than
        leave the caller in silence; its result follows when it comes."""
        if self._closing or self._tools_acknowledged or not self._tools_running:
            return
        said = self.session.say(TOOL_ACK)
        if said:
            self._tools_acknowledged = True
            self._apply(said)

    # ------------------------------------------------------------ caller

    def _to_caller(self, message: ServerMessage) -> None:
        if message.get("type") == "state":  # the idle clock runs while the agent listens
            listening = message.get("state") == CallState.LISTENING
            self._listening_since = time.monotonic() if listening else None
        if self.recorder is not None and message.get("type") in RECORDED_MESSAGES:
            self.recorder.note({"t_ms": round((time.monotonic() - self.created) * 1000),
                                **message})
        for data in encode_server_message(message):
            channel = self._channel
            if channel is not None and channel.readyState == "open":
                if channel.bufferedAmount > MAX_CALLER_BACKLOG_BYTES:
                    self.caller_backlog_dropped += 1
                    continue
                try:
                    channel.send(data)
                except Exception as exc:  # the channel closed under us: the call is ending
                    log.debug("call %s: data channel send failed: %s", self.call_id, exc)
                    continue
                if message.get("type") in RESENDABLE and message.get("item_id") != "":
                    self._recent_sent.append((time.monotonic(), data))
            elif not self._closing:
                self._early.append(data)

    def _refuse(self, code: str, message: str) -> None:
        """Tell the caller why a message was refused, at most about once a second."""
        if self._refusal_limit.allow(time.monotonic()):
            self._to_caller(caller.error(code, message))

    def _on_caller_message(self, raw: str | bytes) -> None:
        if not self._inbound_limit.allow(time.monotonic()):
            self.caller_dropped += 1
            self._refuse("rate_limited", "too many messages; some were dropped")
            return
        try:
            message = parse_caller_message(raw)
        except CallerMessageError as exc:
            self.caller_errors += 1
            self._refuse(exc.code, exc.message)
            return
        mtype = message["type"]
        if mtype == "ping":
            self._to_caller(caller.pong(message.get("t"), int(time.monotonic() * 1000)))
        elif mtype == "playout":
            self.session.on_playout_delay(message["delay_ms"])
        elif mtype == "interrupt":
            self._caller_active()
            self._apply(self.session.on_interrupt())
        elif mtype == "text":
            if not self._text_limit.allow(time.monotonic()):
                self.caller_errors += 1
                self._refuse("rate_limited", "too many typed messages; slow down")
                return
            self.record.text_sent(time.monotonic())
            self._caller_active()
            self._apply(self.session.on_text(message["text"]))

    # ------------------------------------------------------------ teardown

    async def end(self, reason: str, message: str) -> None:
        """End the call from the server's side, telling the caller why first.

        `call.ended {reason, message}` goes out before the hang-up; a caller still
        connecting gets END_WAIT_CHANNEL_S for its data channel to open. `reason` is
        also the end reason (`server_shutdown`, `upstream_failed`, `max_duration`)."""
        if self._closing or self._ending:
            await self._closed.wait()
            return
        self._ending = True
        self._to_caller(caller.call_ended(reason, message))
        if not self._channel_open.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(END_WAIT_CHANNEL_S):
                    await self._channel_open.wait()
        # Let the notice reach the caller before the peer goes away.
        await asyncio.sleep(END_NOTICE_S)
        await self.close(message, reason)

    async def _sample_stats(self) -> None:
        """Every STATS_INTERVAL_S: the caller's RTP loss and jitter, the playout's lateness."""
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            await self._take_stats()

    async def _take_stats(self, pc: RTCPeerConnection | None = None) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        late = self.playout.late_frames
        if late > self._late_frames_seen:
            metrics.playout_late_frames.inc(late - self._late_frames_seen)
            self._late_frames_seen = late
        try:
            report = await (pc or self.pc).getStats()
        except Exception:  # a closing peer: nothing more to count
            return
        received = lost = 0
        jitter: float | None = None
        for stats in report.values():
            if getattr(stats, "type", None) == "inbound-rtp" and stats.kind == "audio":
                received += stats.packetsReceived
                lost += max(0, stats.packetsLost)
                jitter = max(jitter or 0.0, stats.jitter / OPUS_RTP_CLOCK)
        self._rtp_now = (received, lost)
        # A call's figures span every connection it had (resumes).
        received += self._rtp_before[0]
        lost += self._rtp_before[1]
        self.record.rtp(received, lost, jitter)
        if lost > self._lost_seen:
            metrics.packets_lost.inc(lost - self._lost_seen)
            self._lost_seen = lost
        if jitter is not None and received:
            metrics.jitter.observe(jitter)

    async def close(self, reason: str = "hung up", end_reason: str = "hangup") -> None:
        """Free everything the call holds; safe to call more than once.

        `end_reason` is the metrics' and call log's (see docs/observability.md)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._channel_open.set()
        self.close_reason = reason
        self.record.end(end_reason, time.monotonic(), _utc_now())
        if self.recorder is not None:
            self.recorder.note({"t_ms": round((time.monotonic() - self.created) * 1000),
                                "type": "call.ended", "end_reason": end_reason})
            self.recorder.close()
        if self.metrics is not None and self.pc.connectionState == "connected":
            with contextlib.suppress(Exception):
                await self._take_stats()
        log.info("call %s ended (%s: %s): %s", self.call_id, end_reason, reason,
                 log_line(self.record.summary()))
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self.client.close()
        self.playout.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        pending = [t for t in self._tasks | self._old_peers if t is not current]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if isinstance(self._tools, CallTools):
            await self._tools.aclose()  # e.g. the call's MCP sessions
        self._channel = None
        self._early.clear()
        self._closed.set()
        if self._on_closed:
            self._on_closed(self)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()
