"""The shared speech helpers in tests/speech.py and the engines under them."""

from __future__ import annotations

import time
import wave
from pathlib import Path

from rtc_agent.offline.tts import CachedSynthesizer, get_synthesizer
from tests.speech import hears, read_wav, speak_wav, transcribe


def test_speak_wav_format_padding_and_cache(tmp_path: Path) -> None:
    path = speak_wav("what is six times eight", tmp_path / "q.wav", rate=48000)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48000)
    samples, rate = read_wav(path)
    assert not samples[: int(0.45 * rate)].any()  # ~0.5 s of leading silence
    assert not samples[-int(1.4 * rate):].any()  # ~1.5 s of trailing silence
    assert samples.any()
    t0 = time.perf_counter()
    again = speak_wav("what is six times eight", tmp_path / "q2.wav", rate=48000)
    assert time.perf_counter() - t0 < 0.05  # cached
    assert again.read_bytes() == path.read_bytes()


def test_transcribe_and_hears() -> None:
    samples, rate = read_wav(speak_wav("what is six times eight", rate=16000))
    assert transcribe(samples, rate) == "what is six times eight"
    assert hears(samples, rate, "six")
    assert not hears(samples, rate, "ninety")


def test_tts_cache_and_espeak() -> None:
    cache = CachedSynthesizer(get_synthesizer("espeak"), max_entries=2)
    a = cache.synthesize("one")
    assert cache.synthesize("one") is a and cache.hits == 1
    cache.synthesize("two")
    cache.synthesize("three")
    assert cache.synthesize("one") is not a and cache.misses == 4  # evicted (LRU of 2)
    assert len(a) > 48 * 200  # espeak said something at 24 kHz
