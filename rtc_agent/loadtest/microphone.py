"""The caller's microphone: prompts to speak, and the track that plays them in real time.

Built for load: many callers share one process, so speaking must cost little.
A prompt is Opus-encoded once and the encoded packets are handed to aiortc's
sender, which then only packs them into RTP (aiortc's `RTCRtpSender` skips its
encoder and its per-frame audio-level loop for `av.Packet`s).
"""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from rtc_agent.loadtest.received import (
    DEFAULT_THRESHOLD_DBFS,
    FRAME_S,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    frame_dbfs,
)
from rtc_agent.media import opus
from rtc_agent.media.opus import silence_packet
from rtc_agent.media.pcm import resample

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


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

    `packets[i]` is the Opus packet for frame i; `pcm` holds the raw frames
    (sent when `encoded` is False, so aiortc encodes as it would a microphone);
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
