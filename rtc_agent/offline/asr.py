"""Offline speech recognition with pocketsphinx (en-US model shipped in the wheel).

A pocketsphinx Decoder is not thread-safe and takes a while to load its language
model, so decoders are kept in a small pool and borrowed per utterance.
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol

import numpy as np

from rtc_agent.media.pcm import as_int16, resample

ASR_RATE = 16000


class Recognizer(Protocol):
    """Turns one utterance of pcm16 mono audio into text."""

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str: ...


def _quiet_decoder(**kwargs: object):  # -> pocketsphinx.Decoder
    from pocketsphinx import Decoder

    return Decoder(samprate=ASR_RATE, loglevel="FATAL", **kwargs)


def _to_16k(pcm: bytes | np.ndarray, rate: int) -> bytes:
    return resample(as_int16(pcm), rate, ASR_RATE).tobytes()


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand"
).split()
# Spoken arithmetic (questions, and answers like "six times eight is forty-eight"): the
# general language model often mishears short number words ("nine plus four" -> "my post
# war"), so such utterances get a second pass with this grammar.
ARITHMETIC_JSGF = f"""#JSGF V1.0;
grammar arithmetic;
<num> = [minus] ({" | ".join(_NUMBER_WORDS)}) ({" | ".join(_NUMBER_WORDS)} | and | point)*;
<op> = plus | minus | times | divided by | multiplied by;
public <question> = [what is | what's | how much is] <num> <op> <num> [is <num>];
"""
_ARITHMETIC_HINTS = set(_NUMBER_WORDS) | {
    "what", "how", "much", "times", "time", "plus", "minus", "divided", "multiplied",
}


class PocketsphinxRecognizer:
    """Full decoding with the default en-US language model.

    When the hypothesis looks like it could be an arithmetic question, the audio is
    decoded again with a small grammar, and the grammar's reading wins if it scores at
    least as well as the language model's: that fixes most misheard number words
    without forcing other sentences into arithmetic.
    """

    def __init__(self, pool_size: int = 2, arithmetic_pass: bool = True) -> None:
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self.arithmetic_pass = arithmetic_pass

    def _borrow(self):  # -> Decoder
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                create = self._created < self.pool_size
                self._created += create
            if create:
                decoder = _quiet_decoder()
                decoder.add_jsgf_string("arithmetic", ARITHMETIC_JSGF)
                return decoder
            return self._pool.get()

    def warm(self) -> None:
        """Create every pooled decoder now (each loads the language model, ~0.5 s)."""
        decoders = [self._borrow() for _ in range(self.pool_size)]
        for decoder in decoders:
            self._pool.put(decoder)

    @staticmethod
    def _decode(decoder, search: str, audio: bytes) -> tuple[str, float]:  # decoder: Decoder
        decoder.activate_search(search)
        decoder.start_utt()
        decoder.process_raw(audio, False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return (hyp.hypstr, float(hyp.best_score)) if hyp is not None else ("", float("-inf"))

    def transcribe(self, pcm: bytes | np.ndarray, rate: int) -> str:
        audio = _to_16k(pcm, rate)
        if not audio:
            return ""
        decoder = self._borrow()
        try:
            heard = self._decode(decoder, "_default", audio)
            grammar = (self._decode(decoder, "arithmetic", audio)
                       if self.arithmetic_pass and wants_arithmetic_pass(heard[0]) else None)
            return choose_reading(heard, grammar)
        finally:
            self._pool.put(decoder)

    def decode(self, pcm: bytes | np.ndarray, rate: int, search: str) -> Reading:
        """One pass only: "_default" (the language model) or "arithmetic" (the grammar).

        The two passes of `transcribe`, to run apart (in two processes at once) and
        join with `choose_reading`.
        """
        audio = _to_16k(pcm, rate)
        if not audio:
            return "", float("-inf")
        decoder = self._borrow()
        try:
            return self._decode(decoder, search, audio)
        finally:
            self._pool.put(decoder)


Reading = tuple[str, float]  # a pass's text and its score


def wants_arithmetic_pass(text: str) -> bool:
    """The language model's reading could be a misheard sum."""
    words = set(text.split())
    # A tool request ("use the tool ... with forty two") is no sum, however well the
    # grammar's reading scores.
    return bool(_ARITHMETIC_HINTS & words) and "tool" not in words


def choose_reading(heard: Reading, grammar: Reading | None) -> str:
    """The language model's text, or the grammar's when the text could be a sum and
    the grammar scores at least as well."""
    text, score = heard
    if grammar is not None and wants_arithmetic_pass(text):
        alt, alt_score = grammar
        if alt and alt_score >= score:
            return alt
    return text


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
