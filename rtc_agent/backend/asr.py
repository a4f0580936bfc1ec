"""Offline speech recognition with pocketsphinx (en-US model shipped in the wheel).

A pocketsphinx Decoder is not thread-safe and takes a while to load its language
model, so decoders are kept in a small pool and borrowed per utterance.
"""

from __future__ import annotations

import queue
from typing import Protocol

import numpy as np

from rtc_agent.backend.audio import as_int16, resample

ASR_RATE = 16000


class Recognizer(Protocol):
    """Turns one utterance of pcm16 mono audio into text."""

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str: ...


def _quiet_decoder(**kwargs: object):  # -> pocketsphinx.Decoder
    from pocketsphinx import Decoder

    return Decoder(samprate=ASR_RATE, loglevel="FATAL", **kwargs)


def _to_16k(pcm: bytes | np.ndarray, rate: int) -> bytes:
    return resample(as_int16(pcm), rate, ASR_RATE).tobytes()


class PocketsphinxRecognizer:
    """Full decoding with the default en-US language model."""

    def __init__(self, pool_size: int = 2) -> None:
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self._pool_size = pool_size

    def _borrow(self):  # -> Decoder
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            if self._created < self._pool_size:
                self._created += 1
                return _quiet_decoder()
            return self._pool.get()

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str:
        audio = _to_16k(pcm, rate)
        if not audio:
            return ""
        decoder = self._borrow()
        try:
            decoder.start_utt()
            decoder.process_raw(audio, False, True)
            decoder.end_utt()
            hyp = decoder.hyp()
            return hyp.hypstr if hyp is not None else ""
        finally:
            self._pool.put(decoder)


def spot_keyword(pcm: bytes | np.ndarray, rate: int, keyword: str) -> bool:
    """Keyword spotting: far more reliable than full decoding for short number words."""
    audio = _to_16k(pcm, rate)
    if not audio:
        return False
    decoder = _quiet_decoder(keyphrase=keyword.lower(), kws_threshold=1e-20)
    decoder.start_utt()
    decoder.process_raw(audio, False, True)
    decoder.end_utt()
    return decoder.hyp() is not None


_recognizer: PocketsphinxRecognizer | None = None


def get_recognizer() -> PocketsphinxRecognizer:
    """The process-wide recognizer pool."""
    global _recognizer
    if _recognizer is None:
        _recognizer = PocketsphinxRecognizer()
    return _recognizer
