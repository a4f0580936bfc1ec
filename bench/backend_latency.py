"""Latency and CPU cost of the offline Realtime backend per spoken turn.

Starts `python -m rtc_agent.offline.command --port 0` as a child process, then runs
spoken turns (piper speech appended in 20 ms chunks at real-time pace, server VAD,
transcription on) from one or more concurrent sessions. Reports, per turn:

* speech_stopped -> first audio delta (what a caller waits for after they stop talking),
* speech_stopped -> response.done,
* server CPU seconds per turn (utime+stime of the server process, from /proc).

Usage: .venv/bin/python bench/backend_latency.py [--turns 8] [--sessions 1 4] [--tts-cache 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech import speak_pcm  # noqa: E402

QUESTIONS = ["what is twelve times seven", "what is six times eight", "what time is it",
             "what is nine plus four"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def session(url: str, turns: int, offset: int, out: list[dict]) -> None:
    async with websockets.connect(url + "?model=gpt-realtime", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}}))
        for turn in range(turns):
            pcm = speak_pcm(QUESTIONS[(turn + offset) % len(QUESTIONS)], 24000).tobytes()
            marks: dict[str, float] = {}
            done = asyncio.Event()

            async def reader(marks: dict[str, float] = marks, done: asyncio.Event = done) -> None:
                while not done.is_set():
                    event = json.loads(await ws.recv())
                    now = time.perf_counter()
                    kind = event["type"]
                    if kind == "input_audio_buffer.speech_stopped":
                        marks["stopped"] = now
                    elif kind == "response.output_audio.delta" and "first_audio" not in marks:
                        marks["first_audio"] = now
                    elif kind == "response.done":
                        marks["done"] = now
                        done.set()

            task = asyncio.create_task(reader())
            start = time.perf_counter()
            for i, pos in enumerate(range(0, len(pcm), 960)):  # real-time pace, 20 ms chunks
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[pos:pos + 960]).decode()}))
                delay = start + (i + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.wait_for(task, 60)
            out.append({"first_audio_ms": (marks["first_audio"] - marks["stopped"]) * 1000,
                        "done_ms": (marks["done"] - marks["stopped"]) * 1000})


async def run(args: argparse.Namespace, url: str, pid: int) -> list[dict]:
    rows = []
    # Warm-up turn (decoder pools, caches), not counted.
    await session(url, 1, 0, [])
    for n in args.sessions:
        results: list[dict] = []
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(session(url, args.turns, k, results) for k in range(n)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
        first = sorted(r["first_audio_ms"] for r in results)
        rows.append({
            "sessions": n, "turns": len(results),
            "first_audio_ms_p50": statistics.median(first),
            "first_audio_ms_p95": first[min(len(first) - 1, int(len(first) * 0.95))],
            "done_ms_p50": statistics.median(r["done_ms"] for r in results),
            "cpu_s_per_turn": cpu / len(results), "server_cpu_share": cpu / wall,
        })
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--turns", type=int, default=8, help="turns per session")
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4],
                   help="concurrent sessions per round")
    p.add_argument("--tts", default="piper", choices=["piper", "espeak"])
    p.add_argument("--tts-cache", type=int, default=512)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = p.parse_args()
    cmd = [sys.executable, "-m", "rtc_agent.offline.command", "--port", "0",
           "--tts", args.tts, "--tts-cache", str(args.tts_cache)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[1]  # type: ignore[union-attr]
        rows = asyncio.run(run(args, url, proc.pid))
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"tts={args.tts} tts_cache={args.tts_cache} turns/session={args.turns}")
    print("| sessions | turns | stop->first audio p50 | p95 | stop->done p50 | CPU s/turn "
          "| server CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sessions']} | {r['turns']} | {r['first_audio_ms_p50']:.0f} ms "
              f"| {r['first_audio_ms_p95']:.0f} ms | {r['done_ms_p50']:.0f} ms "
              f"| {r['cpu_s_per_turn']:.2f} | {r['server_cpu_share'] * 100:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
