"""Server VAD on a caller's Opus-coded speech ends the turn as on the original audio.

Issue 14 asked whether end-of-turn comes late after Opus. It does not: a piper prompt
coded the way a browser codes it (libopus at 48 kHz, voip, 32 kbit/s, in-band FEC),
decoded and resampled by the server's own inbound path (`_LoopDecoder`,
`InboundAudio`), ends the turn within one VAD window of the same prompt appended as
24 kHz pcm, wherever the prompt sits on the 20 ms / 32 ms grids. The only systematic
difference is Opus's lookahead: the decoded speech ends 6.5 ms later. What spreads
speech_stopped over ~540-600 ms after the speech is the 32 ms window grid, the same
with or without Opus (bench notes in the issue's report).
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.jitterbuffer import JitterFrame

from rtc_agent.media.inbound import InboundAudio, _LoopDecoder
from rtc_agent.offline.input_buffer import InputBuffer, SpeechStarted, SpeechStopped, TurnDetection
from rtc_agent.offline.vad import SileroDetector
from tests.speech import speak_pcm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROMPT = "what is twelve times seven"
SERVER_VAD = TurnDetection(threshold=0.5, prefix_padding_ms=300, silence_ms=500,
                           max_silence_ms=500)  # the agent's defaults
OPUS_LOOKAHEAD_MS = 312 / 48  # libopus's encoder delay; the decoder does not remove it
WINDOW_MS = SileroDetector.window_ms


def _browser_opus(pcm48: np.ndarray) -> list[bytes]:
    """Opus packets as a browser sends them: 20 ms frames, voip, 32 kbit/s, FEC on."""
    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate, enc.format, enc.layout, enc.sample_rate = 32000, "s16", "mono", 48000
    enc.time_base = fractions.Fraction(1, 48000)
    enc.options = {"application": "voip", "frame_duration": "20", "fec": "1",
                   "packet_loss": "10"}
    pcm48 = np.concatenate([pcm48, np.zeros(-len(pcm48) % 960, np.int16)])
    packets = []
    for i in range(0, len(pcm48), 960):
        frame = av.AudioFrame.from_ndarray(pcm48[None, i:i + 960], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i
        packets += enc.encode(frame)
    return [bytes(p) for p in [*packets, *enc.encode(None)]]


def _server_inbound(packets: list[bytes]) -> list[bytes]:
    """The appends the server makes of those packets (its decoder and resampler)."""
    frames: asyncio.Queue = asyncio.Queue()
    decoder, inbound = _LoopDecoder(frames), InboundAudio()
    appends: list[bytes] = []
    for i, data in enumerate(packets):
        decoder.put((None, JitterFrame(data=data, timestamp=i * 960)))
        while not frames.empty():
            appends += inbound.push(frames.get_nowait())
    return appends


def _turn_end_ms(appends: list[bytes]) -> tuple[int, int]:
    """(speech_stopped's audio_end_ms, how many turns) with the server's VAD and turn logic."""
    detector, buffer = SileroDetector(), InputBuffer(lambda prefix: prefix, 60_000, SERVER_VAD)
    turns, end = 0, -1
    for pcm in appends:
        for event in buffer.append(pcm, detector.probabilities(pcm), detector.window_ms):
            turns += isinstance(event, SpeechStarted)
            if isinstance(event, SpeechStopped):
                end = event.audio_end_ms
    return end, turns


@pytest.fixture(scope="module")
def prompt() -> tuple[np.ndarray, np.ndarray, float]:
    pcm24, pcm48 = speak_pcm(PROMPT, 24000), speak_pcm(PROMPT, 48000)
    speech_end_ms = (np.nonzero(np.abs(pcm24.astype(np.int32)) >= 64)[0][-1] + 1) / 24
    return pcm24, pcm48, float(speech_end_ms)


@pytest.mark.parametrize("offset_ms", [0, 7, 13, 19])
def test_opus_coded_speech_ends_the_turn_within_a_window_of_the_original(
        prompt: tuple[np.ndarray, np.ndarray, float], offset_ms: int) -> None:
    pcm24, pcm48, speech_end_ms = prompt
    direct = np.concatenate([np.zeros(offset_ms * 24, np.int16), pcm24]).tobytes()
    direct_end, direct_turns = _turn_end_ms([direct[i:i + 960] for i in range(0, len(direct), 960)])
    coded = _server_inbound(_browser_opus(
        np.concatenate([np.zeros(offset_ms * 48, np.int16), pcm48])))
    coded_end, coded_turns = _turn_end_ms(coded)

    assert direct_turns == coded_turns == 1  # no split turn, no turn in the coded silence
    direct_late = direct_end - (speech_end_ms + offset_ms)
    coded_late = coded_end - (speech_end_ms + offset_ms + OPUS_LOOKAHEAD_MS)
    silence = SERVER_VAD.silence_ms
    # The silence, plus where the last voiced window and the window grid fall.
    for late in (direct_late, coded_late):
        assert silence <= late <= silence + 3 * WINDOW_MS, (direct_late, coded_late)
    assert abs(coded_late - direct_late) <= WINDOW_MS, (direct_late, coded_late)
