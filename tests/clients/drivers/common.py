"""What every client driver shares: its command line, the script, speech input, the JSON it prints.

A driver runs inside its client's own virtualenv (tests/clients/venvs.py), so this
module uses the standard library only. The pytest side reads the last stdout line
that starts with RESULT_PREFIX; everything else a client logs goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import traceback
import wave
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_PREFIX = "DRIVER_RESULT "
CHUNK_MS = 20


@dataclass(frozen=True)
class Script:
    """What every client is asked, and the tool each is given, the same for all."""

    text_question: str = "What is twelve times seven?"
    tool_request: str = "Search for the latest news about solar power."
    tool_name: str = "get_news"
    tool_description: str = "Get the latest news about a topic."
    tool_result: dict[str, str] = field(default_factory=lambda: {
        "headline": "Solar power capacity grew by a third last year. Prices fell again."})


SCRIPT = Script()


@dataclass
class TurnResult:
    """What one turn showed from the client's side (the test asserts on it)."""

    transcript: str = ""  # the assistant's words as the client surfaced them
    user_transcript: str = ""  # the caller's words as recognised (audio turns)
    audio_bytes: int = 0  # 24 kHz pcm16 the client handed over as the reply's audio
    audio_file: str | None = None  # where that audio was written, for pocketsphinx
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name + parsed arguments
    tool_results_sent: int = 0
    events: list[str] = field(default_factory=list)  # client-level events, in order
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="ws://HOST:PORT/v1/realtime of the backend")
    p.add_argument("--speech", required=True, type=Path, help="mono s16 WAV of the question")
    p.add_argument("--out-dir", required=True, type=Path, help="where reply audio is written")
    p.add_argument("--turn-timeout-s", type=float, default=60.0)
    p.add_argument("--turns", default="text,audio,tool")
    p.add_argument("--log-level", default="WARNING", help="the client's own logging, to stderr")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return args


def read_wav(path: Path) -> tuple[bytes, int]:
    """(pcm16 mono bytes, sample rate) of a WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need mono 16-bit PCM")
        return w.readframes(w.getnframes()), w.getframerate()


def chunks(pcm: bytes, rate: int, ms: int = CHUNK_MS) -> Iterator[bytes]:
    """Fixed-size pieces of pcm16, as a microphone delivers them."""
    step = rate * ms // 1000 * 2
    for i in range(0, len(pcm), step):
        yield pcm[i : i + step]


def spoken_chunks(path: Path) -> tuple[list[bytes], int]:
    """The spoken question in microphone-sized pieces of pcm16, and its sample rate."""
    pcm, rate = read_wav(path)
    return list(chunks(pcm, rate)), rate


def save_audio(out_dir: Path, name: str, pcm: bytes, rate: int = 24000) -> str:
    """Write reply audio as a WAV for the test to listen to; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return str(path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def run_turns(
    client: str, version: str, args: argparse.Namespace,
    turns: dict[str, Callable[[TurnResult], Awaitable[None]]],
) -> int:
    """Run the selected turns, each bounded by the turn timeout; print the result line.

    A turn that raises or times out records the error and the next turn still runs,
    so one failure does not hide what the others show.
    """
    results: dict[str, Any] = {}
    for name in args.turns.split(","):
        result = TurnResult()
        started = time.monotonic()
        try:
            await asyncio.wait_for(turns[name](result), args.turn_timeout_s)
        except TimeoutError:
            result.errors.append(f"turn timed out after {args.turn_timeout_s:g} s")
        except Exception as exc:  # reported, not raised: the test asserts on it
            result.errors.append(f"{type(exc).__name__}: {exc}")
            log(traceback.format_exc())
        result.seconds = round(time.monotonic() - started, 3)
        results[name] = asdict(result)
        log(f"{client} {name} turn: {json.dumps(results[name])}")
    print(RESULT_PREFIX + json.dumps({"client": client, "version": version, "turns": results}),
          flush=True)
    return 0


def drive(client: str, package: str, args: argparse.Namespace,
          turns: dict[str, Callable[[TurnResult], Awaitable[None]]]) -> int:
    """A driver's main: say which client release runs against which URL, run its turns."""
    release = metadata.version(package)
    log(f"{package} {release} against {args.url}")
    return asyncio.run(run_turns(client, release, args, turns))
