"""A scripted WebRTC caller: offer/answer with the server, play prompts, record replies.

Built for load: many callers share one process, so a caller must cost little.
Prompts are Opus-encoded once and the encoded packets are handed to aiortc's
sender, which then only packs them into RTP (aiortc's `RTCRtpSender` skips its
encoder and its per-frame audio-level loop for `av.Packet`s). Received audio is
decoded by aiortc (one Opus decode per frame, the cheap direction); the caller
keeps a per-frame energy for every frame and the samples of only the last
`keep_audio_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import time
import wave
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any
from urllib.parse import urlparse

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from rtc_agent.ice import restrict_host_addresses, rtc_configuration
from rtc_agent.media import opus
from rtc_agent.media.opus import silence_packet
from rtc_agent.media.pcm import resample

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
# A 20 ms frame is "audible" above this RMS level (dB relative to int16 full scale).
# Opus-decoded digital silence sits far below (-90 dBFS or exactly zero); quiet
# speech sits around -40..-20 dBFS.
DEFAULT_THRESHOLD_DBFS = -50.0


class CallFailed(Exception):
    """A call could not be set up or broke; `kind` is a short machine-readable reason."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def frame_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf-safe: silence gives -120)."""
    if samples.size == 0:
        return -120.0
    x = samples.astype(np.float32)
    ms = float(np.dot(x, x)) / x.size
    if ms <= 1.0:
        return -120.0
    return 10.0 * math.log10(ms / (32768.0 * 32768.0))


def _encode_opus(pcm: np.ndarray) -> list[bytes]:
    """Opus-encode mono 48 kHz int16 (length a multiple of 960) with aiortc's settings.

    One packet per 20 ms frame. The encoder delays by its lookahead, so the
    caller pads the input with silence; packets are re-timed by the track.
    """
    codec = opus.encoder(SAMPLE_RATE, 64000)
    out: list[bytes] = []
    for i in range(0, len(pcm), FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            pcm[i : i + FRAME_SAMPLES].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        frame.time_base = TIME_BASE
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return out


def _read_wav_48k_mono(path: str | Path) -> np.ndarray:
    """Read a PCM WAV as mono int16 at 48 kHz (resampling with libswresample if needed)."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * width}-bit)")
    data = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)
    mono = data.mean(axis=1).astype(np.int16) if channels > 1 else data[:, 0].copy()
    return resample(mono, rate, SAMPLE_RATE)


@dataclass
class Prompt:
    """A prompt to speak: 48 kHz mono audio, framed in 20 ms, encoded to Opus once.

    `packets[i]` is the Opus packet for frame i, `pcm_frames[i]` the raw frame
    (used when `encoded` is False, so aiortc encodes as it would a microphone),
    `speech_frames` is the index after the last frame above the silence
    threshold: the caller's speech "ends" when that frame has been sent.
    """

    name: str
    pcm: np.ndarray
    packets: list[bytes]
    speech_frames: int
    encoded: bool = True
    speech_start: int = 0  # index of the first frame above the threshold

    @property
    def n_frames(self) -> int:
        return len(self.packets)

    @property
    def duration_s(self) -> float:
        return self.n_frames * FRAME_S

    @classmethod
    def from_pcm(
        cls,
        pcm: np.ndarray,
        name: str = "prompt",
        *,
        encoded: bool = True,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
    ) -> Prompt:
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        pad = (-len(pcm)) % FRAME_SAMPLES
        pcm = np.concatenate([pcm, np.zeros(pad, np.int16)])
        n = len(pcm) // FRAME_SAMPLES
        frames = pcm.reshape(n, FRAME_SAMPLES)
        loud = [i for i in range(n) if frame_dbfs(frames[i]) > threshold_dbfs]
        speech_start = loud[0] if loud else 0
        speech_frames = loud[-1] + 1 if loud else 0
        # Two frames of tail let the encoder flush its lookahead into the stream.
        padded = np.concatenate([pcm, np.zeros(2 * FRAME_SAMPLES, np.int16)])
        packets = _encode_opus(padded)
        # libopus emits one packet per input frame (plus the flushed tail); keep n+2.
        packets = packets[: n + 2]
        return cls(name, padded, packets, speech_frames, encoded, speech_start)

    def without_lead(self) -> Prompt:
        """This prompt starting at its first audible frame (to talk over a reply at once)."""
        start = self.speech_start * FRAME_SAMPLES
        end = self.speech_frames * FRAME_SAMPLES
        return Prompt.from_pcm(self.pcm[start:end], self.name, encoded=self.encoded)

    @classmethod
    def from_wav(cls, path: str | Path, *, encoded: bool = True) -> Prompt:
        return cls.from_pcm(_read_wav_48k_mono(path), Path(path).name, encoded=encoded)


class _Speaking:
    """A prompt being played: the frame position and a future for `speak`."""

    def __init__(self, prompt: Prompt, done: asyncio.Future[float]) -> None:
        self.prompt = prompt
        self.index = 0
        self.done = done
        self.speech_start_t: float | None = None
        self.speech_end_t: float | None = None
        self.last_t: float | None = None


class CallerTrack(MediaStreamTrack):
    """The caller's microphone: a prompt when speaking, Opus silence otherwise.

    Paced on an absolute 20 ms schedule, like a sound card: if the event loop
    falls behind, frames go out back to back until it catches up, and the worst
    lateness is kept in `max_lag_s` so a load test can tell when the generator
    itself was the bottleneck.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0
        self._speaking: _Speaking | None = None
        self.max_lag_s = 0.0
        self.frames_sent = 0
        # when the latest prompt's first audible frame went out (barge-in start)
        self.speech_started_t: float | None = None
        self._silence = silence_packet()
        self._silence_pcm = np.zeros((1, FRAME_SAMPLES), np.int16)

    def play(self, prompt: Prompt) -> asyncio.Future[float]:
        """Start `prompt` at the next frame (cutting any prompt being played)."""
        self._finish()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._speaking = _Speaking(prompt, fut)
        return fut

    def _finish(self) -> None:
        sp = self._speaking
        self._speaking = None
        if sp is not None and not sp.done.done():
            end = sp.speech_end_t or sp.last_t or time.monotonic()
            sp.done.set_result(end)

    async def recv(self) -> Packet | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / SAMPLE_RATE
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            else:
                self.max_lag_s = max(self.max_lag_s, now - due)
        data: bytes | None = None
        pcm: np.ndarray | None = None
        encoded = True
        sp = self._speaking
        if sp is not None:
            prompt = sp.prompt
            i = sp.index
            encoded = prompt.encoded
            if encoded:
                data = prompt.packets[i]
            else:
                pcm = prompt.pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].reshape(1, -1)
            sp.index = i + 1
            sp.last_t = now
            if i == prompt.speech_start:
                sp.speech_start_t = now
                self.speech_started_t = now
            if sp.index == prompt.speech_frames:
                sp.speech_end_t = now
            if sp.index >= prompt.n_frames:
                self._finish()
        self.frames_sent += 1
        if encoded:
            packet = Packet(data if data is not None else self._silence)
            packet.pts = self._pts
            packet.time_base = TIME_BASE
            return packet
        frame = av.AudioFrame.from_ndarray(
            pcm if pcm is not None else self._silence_pcm, format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame

    def stop(self) -> None:
        self._finish()
        super().stop()


class ReceivedAudio:
    """Frames heard from the server: arrival time and level of every frame (bounded),
    and the samples of the most recent `keep_s` seconds in a ring buffer."""

    def __init__(self, keep_s: float = 30.0, max_frames: int = 50 * 3600) -> None:
        self.times: deque[float] = deque(maxlen=max_frames)
        self.levels: deque[float] = deque(maxlen=max_frames)
        # arrival minus media time (RTP timestamp): its growth is how far the
        # stream fell behind real time (a sender that cannot keep up)
        self.offsets: deque[float] = deque(maxlen=max_frames)
        self._cap = max(0, int(keep_s * SAMPLE_RATE))
        self._ring = np.zeros(self._cap, np.int16)
        self._written = 0  # total samples ever written

    def add(self, t: float, mono: np.ndarray, media_t: float | None = None) -> None:
        self.times.append(t)
        self.levels.append(frame_dbfs(mono))
        if media_t is not None:
            self.offsets.append(t - media_t)
        if self._cap == 0:
            return
        n = len(mono)
        if n >= self._cap:
            self._ring[:] = mono[-self._cap :]
            self._written += n
            return
        start = self._written % self._cap
        first = min(n, self._cap - start)
        self._ring[start : start + first] = mono[:first]
        if first < n:
            self._ring[: n - first] = mono[first:]
        self._written += n

    def lags_ms(self, skip: int = 0) -> list[float]:
        """Per-frame lag behind the stream's best-seen schedule, in ms, from frame `skip`.

        0 means a frame arrived as early, relative to its timestamp, as the best
        frame did; a server that falls behind shows a growing lag.
        """
        offs = list(self.offsets)[skip:]
        if not offs:
            return []
        base = min(offs)
        return [(o - base) * 1000 for o in offs]

    def samples(self) -> np.ndarray:
        """The kept samples in arrival order (a copy)."""
        if self._written <= self._cap:
            return self._ring[: self._written].copy()
        start = self._written % self._cap
        return np.concatenate([self._ring[start:], self._ring[:start]])


def first_audible_after(
    times: Sequence[float], levels: Sequence[float], t: float, threshold_dbfs: float
) -> float | None:
    """Arrival time of the first frame after `t` louder than the threshold."""
    for ft, lv in zip(times, levels, strict=True):
        if ft > t and lv > threshold_dbfs:
            return ft
    return None


def silent_from(
    times: Sequence[float],
    levels: Sequence[float],
    t: float,
    threshold_dbfs: float,
    min_silence_s: float,
) -> float | None:
    """Start of the first run of silent frames after `t` lasting at least `min_silence_s`.

    Frames that stop arriving also count as silence (a server may send nothing
    when it has nothing to say), so a run may end at a gap: what matters is that
    no audible frame arrives within `min_silence_s` of the run's start. Returns
    None when no such run is known yet.
    """
    run_start: float | None = None
    last_t: float | None = None
    for ft, lv in zip(times, levels, strict=True):
        if ft <= t:
            continue
        if lv > threshold_dbfs:
            if run_start is not None and ft - run_start >= min_silence_s:
                return run_start
            run_start = None
        elif run_start is None:
            run_start = ft
        last_t = ft
    if run_start is not None and last_t is not None and last_t - run_start >= min_silence_s:
        return run_start
    return None


def _loopback(host: str | None) -> bool:
    return bool(host) and (host == "localhost" or host.startswith("127.") or host == "::1")


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
        self.events: list[dict] = []
        self.audio = ReceivedAudio(keep_s=keep_audio_s)
        self.track = CallerTrack()
        self.pc: RTCPeerConnection | None = None
        self._channel: Any = None
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future[dict]]] = []
        self._recv_task: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._closed = False
        self.failure: CallFailed | None = None

    # -- set-up -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def connect(self, timeout: float = 15) -> None:  # noqa: ASYNC109 (the contract)
        """Offer/answer, then wait for ICE+DTLS connected and `session.ready`.

        Raises CallFailed: `at_capacity`, `http_4xx`/`http_5xx`, `http_error`
        (server unreachable), `ice_failed`, `timeout`.
        """
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await self._connect(t0)
        except TimeoutError:
            state = self.pc.connectionState if self.pc else "none"
            what = "session.ready" if state == "connected" else f"connection (state {state})"
            self.failure = CallFailed("timeout", f"no {what} after {timeout:g} s")
        except CallFailed as exc:
            self.failure = exc
        if self.failure is not None:
            await self.hangup()  # a failed set-up leaves nothing running
            raise self.failure

    async def _connect(self, t0: float) -> None:
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
        ready = self._future(lambda e: e.get("type") == "session.ready")

        await pc.setLocalDescription(await pc.createOffer())  # gathers fully
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        try:
            async with self._session.post(
                f"{self.base_url}/offer", json=offer, headers=self._headers(), ssl=self.ssl
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
            self._recv_task = asyncio.ensure_future(self._receive(track))

    async def _receive(self, track: MediaStreamTrack) -> None:
        """Drain the server's audio: aiortc decodes; we keep the left channel's level."""
        add = self.audio.add
        wraps = 0
        last_pts = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            arr = frame.to_ndarray()
            # packed s16: shape (1, samples * channels), interleaved
            ch = len(frame.layout.channels)
            mono = arr.reshape(-1)[::ch] if ch > 1 else arr.reshape(-1)
            if frame.sample_rate != SAMPLE_RATE:  # aiortc's Opus decoder gives 48 kHz
                continue
            pts = frame.pts
            if pts is not None:
                # RTP timestamps start at random and wrap at 2**32
                if last_pts is not None and pts < last_pts - (1 << 31):
                    wraps += 1
                last_pts = pts
                pts += wraps << 32
            add(t, mono, pts / SAMPLE_RATE if pts is not None else None)

    # -- data channel -------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            event = {"type": "_invalid", "raw": str(message)[:200]}
        if not isinstance(event, dict):
            event = {"type": "_invalid", "raw": str(message)[:200]}
        event["_t"] = time.monotonic()
        self.events.append(event)
        if self._waiters:
            remaining = []
            for pred, fut in self._waiters:
                if fut.done():
                    continue
                try:
                    hit = pred(event)
                except Exception as exc:  # a broken predicate fails its own wait only
                    fut.set_exception(exc)
                    continue
                if hit:
                    fut.set_result(event)
                else:
                    remaining.append((pred, fut))
            self._waiters = remaining

    def _future(self, predicate: Callable[[dict], bool]) -> asyncio.Future[dict]:
        fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        return fut

    async def wait_event(
        self,
        predicate: Callable[[dict], bool],
        timeout: float,  # noqa: ASYNC109
        *,
        start: int | None = None,
        after: float | None = None,
    ) -> dict:
        """The next event matching `predicate`.

        By default only events that arrive after this call count. `start` (an
        index into `events`) or `after` (a monotonic time, compared with `_t`)
        also admit events already received, so a script can write
        `n = len(caller.events)` before acting and wait with `start=n` without
        racing the server. Raises TimeoutError, or CallFailed("closed") when
        the call is hung up meanwhile.
        """
        if start is not None or after is not None:
            for event in self.events[start or 0 :]:
                if after is not None and event["_t"] <= after:
                    continue
                if predicate(event):
                    return event
        fut = self._future(predicate)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            fut.cancel()

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
        """Poll until a frame after `t` is audible; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first_audible_after(t, threshold)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.02)

    async def wait_silent(
        self, t: float, timeout: float, min_silence_s: float = 0.3  # noqa: ASYNC109
    ) -> float | None:
        """Poll until received audio has stayed silent for `min_silence_s` after `t`."""
        deadline = time.monotonic() + timeout + min_silence_s
        while True:
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
            if kind == "inbound-rtp" and getattr(s, "kind", "") == "audio":
                out["in_packets_received"] += s.packetsReceived
                out["in_packets_lost"] += s.packetsLost
                out["in_jitter_ms"] = s.jitter / (SAMPLE_RATE / 1000)
            elif kind == "outbound-rtp" and getattr(s, "kind", "") == "audio":
                out["out_packets_sent"] += s.packetsSent
            elif kind == "remote-inbound-rtp" and getattr(s, "kind", "") == "audio":
                out["out_packets_lost"] = s.packetsLost
                out["out_fraction_lost"] = s.fractionLost
                out["out_jitter_ms"] = s.jitter / (SAMPLE_RATE / 1000)
                out["rtt_ms"] = s.roundTripTime * 1000
        return out

    async def hangup(self) -> None:
        """DELETE /calls/{id} and close the peer; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self.call_id and self._session is not None and not self._session.closed:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(5):
                    async with self._session.delete(
                        f"{self.base_url}/calls/{self.call_id}", headers=self._headers(),
                        ssl=self.ssl,
                    ):
                        pass
        for _, fut in self._waiters:
            if not fut.done():
                # waiters see a CallFailed, not a CancelledError they did not ask for
                fut.set_exception(CallFailed("closed", "the call was hung up"))
                fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._waiters = []
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


def _set_jitter_prefetch(receiver: Any, prefetch: int) -> None:
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
