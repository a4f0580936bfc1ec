"""Per-frame cost of the agent's media path, stage by stage (CPU microseconds).

    .venv/bin/python bench/media_path.py [--frames 3000]

For one 20 ms frame each way:
- inbound: caller frame -> append event (resample, chunk, base64, JSON text), and
  the same starting from an Opus packet decoded on the loop (what calls do);
- reply: delta JSON -> playout effect (base64 decode, session bookkeeping);
- playout tick with audio (Opus encode at 24 kHz) and idle (cached silence);
- for comparison, aiortc's default outbound path for a plain track: 24->48 kHz
  resample, its audio-level loop and its 48 kHz stereo Opus encode.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import json
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import rtp
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from rtc_agent.media.inbound import InboundAudio, _LoopDecoder, append_event
from rtc_agent.media.playout import PlayoutTrack
from rtc_agent.protocol import Dialect
from rtc_agent.realtime.session import RealtimeSession
from rtc_agent.realtime.settings import SessionSettings


def cpu_us(fn: Callable[[int], object], n: int) -> float:
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def speechlike(samples: int, rate: int) -> np.ndarray:
    t = np.arange(samples) / rate
    tone = np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 900 * t)
    noise = np.random.default_rng(1).normal(0, 0.1, samples)
    return ((tone + noise) * 6000).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=3000)
    n = parser.parse_args().frames

    caller = speechlike(960 * n, 48000)
    frames = []
    for i in range(n):
        f = av.AudioFrame.from_ndarray(np.repeat(caller[i * 960:(i + 1) * 960], 2).reshape(1, -1),
                                       format="s16", layout="stereo")
        f.sample_rate, f.pts = 48000, i * 960
        frames.append(f)
    inbound = InboundAudio()
    results: dict[str, float] = {}
    results["inbound: stereo frame -> append event"] = cpu_us(
        lambda i: [append_event(c) for c in inbound.push(frames[i])], n)

    # The path calls take: Opus packet decoded on the loop to mono, then as above.
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48000, "stereo", "s16"
    opus.time_base = fractions.Fraction(1, 48000)
    packets = [bytes(p) for f in frames for p in opus.encode(f)]
    track_queue: asyncio.Queue = asyncio.Queue()
    decoder = _LoopDecoder(track_queue)
    inbound_mono = InboundAudio()

    def decode_and_send(i: int) -> None:
        decoder.put((None, JitterFrame(data=packets[i % len(packets)], timestamp=i * 960)))
        while not track_queue.empty():
            for c in inbound_mono.push(track_queue.get_nowait()):
                append_event(c)

    results["inbound: Opus packet -> mono decode on loop -> append event"] = cpu_us(
        decode_and_send, min(n, len(packets)))

    reply = speechlike(480 * n, 24000).tobytes()
    deltas = [json.dumps({"type": "response.output_audio.delta", "response_id": "r",
                          "item_id": "a", "delta": base64.b64encode(reply[i * 960:(i + 1) * 960])
                          .decode()}) for i in range(n)]
    session = RealtimeSession(Dialect.GA, SessionSettings())
    session.handle_upstream({"type": "response.created", "response": {"id": "r"}})
    results["reply: delta JSON -> PlayAudio effect"] = cpu_us(
        lambda i: session.handle_upstream(json.loads(deltas[i])), n)

    async def playout() -> tuple[float, float]:
        track = PlayoutTrack(max_buffer_ms=10**7)
        track._pace = _no_pace  # measure the work, not the 20 ms sleeps
        track.enqueue("a", reply)
        start = time.process_time()
        for _ in range(n):
            await track.recv()
        busy = (time.process_time() - start) / n * 1e6
        start = time.process_time()
        for _ in range(n):
            await track.recv()
        idle = (time.process_time() - start) / n * 1e6
        track.stop()
        return busy, idle

    busy, idle = asyncio.run(playout())
    results["playout tick with audio (24 kHz Opus encode)"] = busy
    results["playout tick idle (cached silence)"] = idle

    # aiortc's default path for a track that yields raw 48 kHz frames.
    up = av.AudioResampler(format="s16", layout="mono", rate=48000)
    encoder = OpusEncoder()
    out_frames = []
    for i in range(n):
        f = av.AudioFrame.from_ndarray(
            np.frombuffer(reply[i * 960:(i + 1) * 960], np.int16).reshape(1, -1),
            format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 24000, i * 480, fractions.Fraction(1, 24000)
        out_frames.extend(up.resample(f))

    def aiortc_default(i: int) -> None:
        frame = out_frames[i % len(out_frames)]
        rtp.compute_audio_level_dbov(frame)
        encoder.encode(frame)

    results["aiortc default outbound (level loop + 48 kHz encode)"] = cpu_us(
        aiortc_default, min(n, len(out_frames)))
    results["aiortc default: 24->48 kHz resample"] = cpu_us(
        lambda i: up.resample(_frame24(reply, i)), n)

    width = max(len(k) for k in results)
    print(f"{'stage':<{width}}  us/frame  % of a core per call")
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.1f}  {us * 50 / 1e4:6.2f}")


def _frame24(reply: bytes, i: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(np.frombuffer(reply[i * 960:(i + 1) * 960], np.int16)
                                   .reshape(1, -1), format="s16", layout="mono")
    f.sample_rate, f.pts = 24000, i * 480
    return f


async def _no_pace() -> None:
    return None


if __name__ == "__main__":
    main()
