"""Speak a text into a prompt WAV for `rtc-agent loadtest --prompts`.

    rtc-agent say "what is nine plus four" -o q.wav

Uses the offline backend's own speech synthesis (piper with the bundled joe
voice, or espeak-ng): nothing is downloaded, and the backend's speech
recognition hears piper's voice well. The file is what the load tester's
microphone plays without converting: 16-bit PCM, mono, 48 kHz, with a little
silence before and after the speech. Exit status 2 for an empty text or an
output path that cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from rtc_agent.loadtest.received import SAMPLE_RATE
from rtc_agent.media.pcm import resample
from rtc_agent.offline.tts import EspeakSynthesizer, PiperSynthesizer, get_synthesizer

ENGINES = ("piper", "espeak")  # the offline backend's --tts choices
# Silence around the speech, as a caller leaves before and after talking. The
# tail is short: the load tester measures from the last audible frame anyway.
LEAD_SILENCE_S = 0.5
TRAIL_SILENCE_S = 0.5
EXIT_USAGE = 2


class SayError(Exception):
    """A mistake in what was asked: reported as one line, exit status 2."""


def speak(text: str, engine: str = "piper", rate: int = SAMPLE_RATE) -> np.ndarray:
    """`text` spoken by `engine` as int16 mono at `rate`, padded with silence.

    Resamples once from the voice's own rate (22.05 kHz) rather than through the
    backend's 24 kHz, which would resample twice.
    """
    text = " ".join(text.split())
    if not text:
        raise SayError("nothing to say: the text is empty")
    synth = get_synthesizer(engine)
    if not isinstance(synth, PiperSynthesizer | EspeakSynthesizer):
        raise SayError(f"unknown speech engine {engine!r}")
    speech = resample(synth.synthesize_native(text), synth.native_rate, rate)
    if speech.size == 0 or not np.any(speech):
        raise SayError(f"{engine} produced no audio for {text!r}")
    lead = np.zeros(int(rate * LEAD_SILENCE_S), np.int16)
    trail = np.zeros(int(rate * TRAIL_SILENCE_S), np.int16)
    return np.concatenate([lead, speech, trail])


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written, before the voice is loaded."""
    if path.is_dir():
        raise SayError(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.exists():
        raise SayError(f"cannot write {path}: no such directory {parent}")
    if not parent.is_dir():
        raise SayError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SayError(f"cannot write {path}: {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise SayError(f"cannot write {path}: the file is not writable")


def write_wav(path: Path, pcm: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono s16 PCM atomically: a failed write leaves no half-written prompt."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.astype("<i2").tobytes())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the example's line
    parser.add_argument("text", nargs="+",
                        help="what to say (several words are joined with spaces)")
    parser.add_argument("-o", "--output", required=True, metavar="WAV",
                        help="the prompt file to write (16-bit PCM, mono, 48 kHz)")
    parser.add_argument("--tts", choices=ENGINES, default="piper",
                        help="speech engine, as the offline backend's --tts (default piper, "
                             "which its speech recognition hears best)")


def run(args: argparse.Namespace) -> int:
    path = Path(args.output)
    text = " ".join(" ".join(args.text).split())
    try:
        if not text:
            raise SayError("nothing to say: the text is empty")
        check_output(path)
        pcm = speak(text, args.tts)
        try:
            write_wav(path, pcm)
        except OSError as exc:
            raise SayError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except SayError as exc:
        print(f"rtc-agent say: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    seconds = len(pcm) / SAMPLE_RATE
    print(f"{path}: {seconds:.1f} s, {args.tts}, 48 kHz mono 16-bit: {text!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtc-agent say", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
