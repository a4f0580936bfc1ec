"""How long speech recognition stalls the offline backend's event loop.

The backend's loop scores the VAD on appended audio; whatever holds the GIL delays
that, and so the end of a turn. This decodes piper prompts the way the backend does
(two at a time, from a thread pool) while a 5 ms ticker runs on the loop, and
reports how late the ticker woke, for recognition in threads (pocketsphinx in this
process: how the backend worked before) against worker processes (how it works
now). Rounds alternate the two, side by side in one run:

    .venv/bin/python bench/recognizer_stall.py --rounds 4 \\
        --json bench/results/recognizer_stall.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtc_agent.loadtest.metrics import percentile
from rtc_agent.offline.asr import PocketsphinxRecognizer
from rtc_agent.offline.recognizer_processes import RecognizerProcesses
from tests.speech import speak_pcm

PROMPTS = ["what is twelve times seven", "what is the weather like in paris today",
           "search for solar power", "what is two plus two"]
TICK_S = 0.005
RATE = 24000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_round(recognizer: Any, pcms: list[Any], pairs: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2, "asr")
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            late.append((loop.time() - due) * 1000)

    ticking = loop.create_task(ticker())
    await asyncio.sleep(0.2)
    decode_ms: list[float] = []
    words: list[str] = []

    async def decode(pcm: Any) -> None:
        started = time.perf_counter()
        words.append(await loop.run_in_executor(executor, recognizer.transcribe, pcm, RATE))
        decode_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    for i in range(pairs):  # a speculative and a final recognition at once, as a turn does
        await asyncio.gather(decode(pcms[i % len(pcms)]), decode(pcms[(i + 1) % len(pcms)]))
    wall = time.perf_counter() - started
    done.set()
    await ticking
    executor.shutdown()
    return {"late_ms": late, "decode_ms": decode_ms, "wall_s": wall,
            "ticks_per_s": len(late) / wall, "words": words}


def pct(values: list[float], p: float) -> float:
    value = percentile(values, p)
    assert value is not None, "no samples"
    return value


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    late = [x for r in rounds for x in r["late_ms"]]
    decode = [x for r in rounds for x in r["decode_ms"]]
    return {
        "ticks": len(late),
        "ticks_per_s": round(statistics.mean(r["ticks_per_s"] for r in rounds), 1),
        "late_ms_p50": round(pct(late, 50), 2),
        "late_ms_p95": round(pct(late, 95), 2),
        "late_ms_p99": round(pct(late, 99), 2),
        "late_ms_max": round(max(late), 1),
        "ticks_over_20ms_late": sum(1 for x in late if x > 20),
        "decode_ms_p50": round(pct(decode, 50), 1),
        "decode_ms_p95": round(pct(decode, 95), 1),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="per mode, alternating")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of decodes per round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pcms = [speak_pcm(p, RATE) for p in PROMPTS]
    threads = PocketsphinxRecognizer(pool_size=2)
    threads.warm()
    processes = RecognizerProcesses(2)
    processes.warm()
    modes: dict[str, Any] = {"threads": threads, "processes": processes}
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        for _ in range(args.rounds):
            for name, recognizer in modes.items():
                results[name].append(await one_round(recognizer, pcms, args.pairs))
        worker_rss = [round(rss_mb(p), 1) for p in processes.worker_pids()]
    finally:
        processes.close()
    report = {m: summary(r) for m, r in results.items()}
    report["processes"]["worker_rss_mb"] = worker_rss
    # Compared as sets per round: two decodes at once finish in either order.
    heard = {m: sorted({w for r in results[m] for w in r["words"]}) for m in modes}
    report["heard"] = heard
    report["same_words"] = heard["threads"] == heard["processes"]
    report["load_at_end"] = os.getloadavg()
    print(f"{'':10} {'ticks/s':>8} {'late p50':>9} {'p95':>7} {'p99':>7} {'max':>7} "
          f"{'>20ms':>6} {'decode p50':>11} {'p95':>7}")
    for m in modes:
        s = report[m]
        print(f"{m:10} {s['ticks_per_s']:8} {s['late_ms_p50']:9} {s['late_ms_p95']:7} "
              f"{s['late_ms_p99']:7} {s['late_ms_max']:7} {s['ticks_over_20ms_late']:6} "
              f"{s['decode_ms_p50']:11} {s['decode_ms_p95']:7}")
    print(f"worker RSS (MB): {worker_rss}; same words both ways: {report['same_words']}")
    for m in modes:
        print(f"{m} heard: {heard[m]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
