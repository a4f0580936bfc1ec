"""Turn-taking on input audio, without I/O: the buffer, server VAD, early recognition.

The buffer holds what the client appended since the last commit or clear, placed on
the session's cumulative millisecond timeline (the one `audio_start_ms` and
`audio_end_ms` are measured on). With turn detection on, audio comes with the
detector's speech probabilities, one per window of `window_ms`; scoring is left to
the caller because the detector is a model with state and a cost. From those scores
the buffer decides when speech starts and stops, when the speech is complete enough to
recognise early, and which old audio no turn can still claim (an idle session keeps a
few hundred milliseconds, not an hour). It returns what happened as TurnEvents; the
conversation decides what that means for items and responses.

Semantic VAD is approximated on the same machinery. The service's model judges from
the words whether the caller has finished; here the recognition that starts at the
first pause (SpeechPaused) is that judge: its text comes back through `heard_so_far`,
and `sounds_unfinished` reads it. A finished-sounding phrase ends the turn after the
eagerness's short silence; an unfinished-sounding one ("...and", "nine plus") waits
up to the eagerness's maximum, as the service documents it (8, 4 or 2 s). Until the
text is back the turn waits for it, never beyond that maximum. The words cost nothing
extra: the same recognition becomes the turn's transcript when the turn ends there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtc_agent.protocol import BYTES_PER_MS

MIN_SPEECH_WINDOWS = 2  # consecutive voiced windows before speech_started (rejects clicks)
RECOGNITION_TAIL_MS = 96  # silence kept after the last voiced window for the recogniser
IDLE_KEEP_WINDOWS = 4  # while idle, keep this many windows beyond the prefix padding


# semantic_vad: eagerness -> (quiet that ends a finished-sounding turn, the longest it
# waits). The longest is the service's documented "max timeout" per eagerness; the short
# silences are ours, from a quick answer ("high") to a patient one ("low").
SEMANTIC_WAIT_MS: dict[str, tuple[int, int]] = {
    "low": (800, 8000), "medium": (500, 4000), "auto": (500, 4000), "high": (250, 2000),
}

# What an unfinished phrase ends with: joining words, articles, prepositions that do not
# end an English sentence, possessives, fillers. Kept short on purpose: a word that often
# ends a sentence too ("that", "on", "can") would hold finished turns for seconds.
# Operators count only after a number ("nine plus"), not in "good times".
_CONTINUES = frozenset("""
    and but or so because if than nor while as
    the a an of to for with from into onto about between by
    my your our their what's whats let's lets wanna gonna
    um uh er erm hmm mm ah
""".split())
_OPERATORS = frozenset("plus minus times over multiplied divided add added subtract".split())
_NUMBERS = frozenset("""
    zero oh one two three four five six seven eight nine ten eleven twelve thirteen
    fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty
    seventy eighty ninety hundred thousand million billion point
""".split())
_WORD = re.compile(r"[a-z0-9']+")
MAX_JUDGED_CHARS = 4096  # only the end of a phrase is read (a hostile one is bounded)


def sounds_unfinished(text: str) -> bool:
    """Whether a recognised phrase sounds as if the speaker will go on (see _CONTINUES)."""
    words = _WORD.findall(text[-MAX_JUDGED_CHARS:].lower())
    if not words:
        return False
    last = words[-1]
    if last in _CONTINUES:
        return True
    before = words[-2] if len(words) > 1 else ""
    return last in _OPERATORS and (before in _NUMBERS or before.isdigit())


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """The VAD settings turn-taking uses, read from a session's turn_detection."""

    threshold: float  # a window is voiced at or above this probability
    prefix_padding_ms: int  # audio kept before the first voiced window
    silence_ms: int  # quiet after the last voiced window that ends the turn
    # semantic_vad: silence_ms ends a finished-sounding turn; an unfinished-sounding or
    # not yet recognised one ends after max_silence_ms (server_vad: the same as silence_ms)
    semantic: bool = False
    max_silence_ms: int = 0

    @classmethod
    def from_session(cls, td: Mapping[str, Any]) -> TurnDetection:
        threshold, padding = td.get("threshold", 0.5), td.get("prefix_padding_ms", 300)
        if td.get("type") == "semantic_vad":
            short, longest = SEMANTIC_WAIT_MS[td.get("eagerness", "auto")]
            return cls(threshold, padding, short, semantic=True, max_silence_ms=longest)
        silence = td.get("silence_duration_ms", 200)
        return cls(threshold, padding, silence, max_silence_ms=silence)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Enough consecutive voiced windows: a turn began (prefix padding included)."""

    item_id: str  # the id the turn's item will have when committed
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Quiet for RECOGNITION_TAIL_MS but not yet for the silence that ends the turn.

    The audio the recogniser will get is complete, so it may start now; if the turn
    ends without more speech, SpeechStopped carries the same key and audio.
    """

    item_id: str
    audio: bytes  # the speech plus RECOGNITION_TAIL_MS of the quiet after it
    key: tuple[int, int]  # (speech start ms, last voiced ms)


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Quiet for the silence duration: the turn ended and its audio left the buffer."""

    item_id: str
    audio_end_ms: int
    audio: bytes  # what the item keeps: prefix padding, speech and the silence after it
    recognition_audio: bytes  # the speech plus at most RECOGNITION_TAIL_MS of quiet
    key: tuple[int, int]  # as in SpeechPaused


TurnEvent = SpeechStarted | SpeechPaused | SpeechStopped


class InputBuffer:
    """The input audio buffer of one session and its VAD state."""

    def __init__(self, new_id: Callable[[str], str], max_buffer_ms: int,
                 turn_detection: TurnDetection | None) -> None:
        self._new_id = new_id
        self.max_buffer_ms = max_buffer_ms
        self.turn_detection = turn_detection
        self._buffer = bytearray()
        self._start_ms = 0  # where _buffer[0] sits on the session timeline
        self._odd_byte = b""  # half a sample, waiting for the append that completes it
        # VAD state, (re)set by _restart_vad.
        self._vad_origin_ms = 0  # where the windows are counted from
        self._scored_ms = 0  # how much audio has been scored since then
        self._detector_restart = True
        self._speaking = False
        self._voiced_run = 0  # consecutive voiced windows while not speaking
        self._speech_start_ms = 0  # of the current turn, prefix padding included
        self._last_voice_ms = 0
        self._pending_item_id: str | None = None  # the id speech_started announced
        self._speculated: tuple[int, int] | None = None  # the key SpeechPaused was sent for
        # semantic VAD: (key, whether its words sound unfinished), once they are known
        self._verdict: tuple[tuple[int, int], bool] | None = None
        self._restart_vad()

    # --- what the conversation reads ------------------------------------------------

    @property
    def end_ms(self) -> int:
        """The session-timeline position just after the buffered audio."""
        return self._start_ms + len(self._buffer) // BYTES_PER_MS

    @property
    def buffered_ms(self) -> float:
        return len(self._buffer) / BYTES_PER_MS

    @property
    def speaking(self) -> bool:
        """Speech started and has not stopped yet."""
        return self._speaking

    def take_detector_restart(self) -> bool:
        """Whether the detector must be reset before it scores new audio (true once per
        restart of the VAD timeline: a commit, a clear or new turn-detection settings)."""
        restart, self._detector_restart = self._detector_restart, False
        return restart

    # --- what the conversation does -------------------------------------------------

    def whole_samples(self, pcm: bytes) -> bytes:
        """pcm cut to whole 16-bit samples; a split sample is completed by the next call."""
        pcm = self._odd_byte + pcm
        cut = len(pcm) - len(pcm) % 2
        self._odd_byte = pcm[cut:]
        return pcm[:cut]

    def configure(self, turn_detection: TurnDetection | None) -> None:
        """New turn-detection settings (None: off); the VAD timeline restarts here."""
        self.turn_detection = turn_detection
        self._restart_vad()

    def append(self, pcm: bytes, probabilities: Sequence[float] = (),
               window_ms: int = 0) -> list[TurnEvent]:
        """Buffer whole-sample audio; probabilities score it in windows of window_ms.

        Scores are ignored while turn detection is off.
        """
        self._buffer.extend(pcm)
        events: list[TurnEvent] = []
        td = self.turn_detection
        if td is not None:
            for p in probabilities:
                self._scored_ms += window_ms
                events += self._step(p, self._vad_origin_ms + self._scored_ms, window_ms, td)
        self._limit()
        return events

    def heard_so_far(self, key: tuple[int, int], text: str | None) -> list[TurnEvent]:
        """Semantic VAD: the words of the speech SpeechPaused(key) carried (None: they
        could not be recognised, judged as finished). May end the turn at once, when the
        quiet since then is already enough for a finished phrase."""
        td = self.turn_detection
        if td is None or not td.semantic or not self._speaking \
                or key != (self._speech_start_ms, self._last_voice_ms):
            return []  # not waiting for these words (the caller spoke on, or it is over)
        self._verdict = (key, text is not None and sounds_unfinished(text))
        t = self._vad_origin_ms + self._scored_ms
        if t - self._last_voice_ms >= self._silence_needed(key, td):
            return [self._stop(t, key)]
        return []

    def commit(self) -> tuple[str, bytes]:
        """Take all buffered audio as a turn: its item id (the one speech_started announced,
        if speech had started) and its audio. The buffer is left empty."""
        audio = bytes(self._buffer)
        item_id = self._pending_item_id or self._new_id("item")
        self.clear()
        return item_id, audio

    def clear(self) -> None:
        """Drop the buffered audio; the timeline goes on from where it ended."""
        self._start_ms = self.end_ms
        self._buffer.clear()
        self._restart_vad()

    # --- VAD ------------------------------------------------------------------------

    def _restart_vad(self) -> None:
        self._vad_origin_ms = self.end_ms
        self._scored_ms = 0
        self._detector_restart = True
        self._speaking = False
        self._voiced_run = 0
        self._speech_start_ms = 0
        self._last_voice_ms = 0
        self._pending_item_id = None
        self._speculated = None
        self._verdict = None

    def _silence_needed(self, key: tuple[int, int], td: TurnDetection) -> int:
        """The quiet that ends the turn whose speech is key."""
        if not td.semantic:
            return td.silence_ms
        if self._verdict is not None and self._verdict == (key, False):
            return td.silence_ms  # its words sound finished
        return td.max_silence_ms  # unfinished-sounding, or not recognised yet

    def _step(self, prob: float, t: int, window_ms: int, td: TurnDetection) -> list[TurnEvent]:
        """One scored window ending at t on the session timeline."""
        voiced = prob >= td.threshold
        if not self._speaking:
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= MIN_SPEECH_WINDOWS:
                first_voiced = t - self._voiced_run * window_ms
                start = max(self._start_ms, first_voiced - td.prefix_padding_ms)
                self._speaking, self._speech_start_ms, self._last_voice_ms = True, start, t
                self._pending_item_id = self._new_id("item")
                return [SpeechStarted(self._pending_item_id, start)]
            # Idle: keep only what prefix padding may still need.
            self._drop_before(t - td.prefix_padding_ms - window_ms * IDLE_KEEP_WINDOWS)
            return []
        if voiced:
            self._last_voice_ms = t
            return []
        quiet_ms = t - self._last_voice_ms
        key = (self._speech_start_ms, self._last_voice_ms)
        if quiet_ms < self._silence_needed(key, td):
            if quiet_ms >= RECOGNITION_TAIL_MS and self._speculated != key:
                self._speculated = key
                audio = self._slice(key[0], key[1] + RECOGNITION_TAIL_MS)
                return [SpeechPaused(self._pending_item_id or "", audio, key)]
            return []
        return [self._stop(t, key)]

    def _stop(self, t: int, key: tuple[int, int]) -> SpeechStopped:
        """End the turn whose speech is key at t on the session timeline."""
        item_id = self._pending_item_id or self._new_id("item")
        self._speaking, self._voiced_run, self._pending_item_id = False, 0, None
        self._verdict = None
        audio = self._slice(self._speech_start_ms, t)
        recognition_audio = self._slice(key[0], min(t, key[1] + RECOGNITION_TAIL_MS))
        self._drop_before(t)
        return SpeechStopped(item_id, t, audio, recognition_audio, key)

    # --- the buffer on the session timeline -----------------------------------------

    def _slice(self, start_ms: int, end_ms: int) -> bytes:
        """Buffered audio between two points of the session timeline."""
        lo = max(0, (start_ms - self._start_ms) * BYTES_PER_MS)
        hi = max(lo, (end_ms - self._start_ms) * BYTES_PER_MS)
        return bytes(self._buffer[lo:hi])

    def _drop_before(self, ms: int) -> None:
        """Forget buffered audio before ms on the session timeline."""
        if ms <= self._start_ms:
            return
        whole = len(self._buffer) - len(self._buffer) % BYTES_PER_MS  # keep the ms grid exact
        n = min(whole, (ms - self._start_ms) * BYTES_PER_MS)
        del self._buffer[:n]
        self._start_ms += n // BYTES_PER_MS

    def _limit(self) -> None:
        """Past max_buffer_ms the oldest audio goes, even mid-turn (the turn then starts later)."""
        excess_ms = len(self._buffer) // BYTES_PER_MS - self.max_buffer_ms
        if excess_ms > 0:
            self._drop_before(self._start_ms + excess_ms)
            self._speech_start_ms = max(self._speech_start_ms, self._start_ms)
