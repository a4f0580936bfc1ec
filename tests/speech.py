"""Shared speech helpers for tests: piper-spoken WAVs and pocketsphinx checks.

Built on the backend's own engines (rtc_agent.offline.tts / asr) so there is one
speech code path. Everything is offline; WAVs are cached by text and rate.
"""

from __future__ import annotations

import hashlib
import tempfile
import wave
from pathlib import Path

import numpy as np

from rtc_agent.media.pcm import resample
from rtc_agent.offline.asr import get_recognizer, spot_keyword
from rtc_agent.offline.tts import PiperSynthesizer, get_synthesizer

__all__ = ["hears", "read_wav", "speak_pcm", "speak_wav", "transcribe"]

_CACHE_DIR = Path(tempfile.gettempdir()) / "rtc-agent-test-speech"
LEAD_SILENCE_S = 0.5
TRAIL_SILENCE_S = 1.5


def speak_pcm(text: str, rate: int = 24000) -> np.ndarray:
    """Piper speech for text as int16 mono at rate, padded with 0.5 s / 1.5 s silence."""
    synth = get_synthesizer("piper")
    assert isinstance(synth, PiperSynthesizer)
    speech = resample(synth.synthesize_native(text), synth.native_rate, rate)
    lead = np.zeros(int(rate * LEAD_SILENCE_S), np.int16)
    trail = np.zeros(int(rate * TRAIL_SILENCE_S), np.int16)
    return np.concatenate([lead, speech, trail])


def speak_wav(text: str, path: Path | None = None, rate: int = 48000) -> Path:
    """Write a piper-spoken mono s16 WAV (cached by text+rate; copied to path if given)."""
    # The version tag changes whenever the voice settings do (v2: piper without noise).
    key = hashlib.sha1(f"v2:{rate}:{text}".encode()).hexdigest()[:16]
    cached = _CACHE_DIR / f"{key}-{rate}.wav"
    if not cached.exists():
        _CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{np.random.randint(1 << 30)}.tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(speak_pcm(text, rate).tobytes())
        tmp.replace(cached)  # atomic, so parallel tests never read a half-written file
    if path is None:
        return cached
    path = Path(path)
    if path.resolve() != cached.resolve():
        path.write_bytes(cached.read_bytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(int16 mono samples, rate) from a WAV file (first channel if stereo)."""
    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data[::channels].copy(), rate


def transcribe(pcm: bytes | np.ndarray, rate: int) -> str:
    """pocketsphinx full decode (resampled to 16 kHz)."""
    return get_recognizer().transcribe(pcm, rate)


def hears(pcm: bytes | np.ndarray, rate: int, keyword: str) -> bool:
    """True if pocketsphinx finds keyword in the audio.

    Keyword spotting first; if it misses, the full decode (whose second pass is tuned
    for spoken arithmetic) is checked for the word. Spotting alone misses some short
    number words in piper speech ("four", "thirteen").
    """
    if spot_keyword(pcm, rate, keyword):
        return True
    return keyword.lower() in transcribe(pcm, rate).lower().replace("-", " ").split()
