"""Per-call cost of rtc-agent against a bare aiortc echo server, one run, same machine.

(a) bench/echo_server.py: decode, 48 -> 24 kHz, 24 -> 48 kHz, encode.
(b) `rtc-agent serve --realtime-url` to the offline backend in a second process
    (`rtc-agent realtime-server`, replies from its TTS cache after the first turn).

Each server is pinned to core 0 (`taskset -c 0`); the scripted callers (and the
backend of (b)) run on core 1. For each N the callers talk in a loop
(`rtc-agent loadtest`); the server's CPU is read from /proc over the window in
which all N calls are up (GET /healthz). A server "holds" N when every call
receives >= 49 frames/s, its received stream lags its own schedule by < 100 ms
(p95) and no call fails.

Bridge overhead: heard turn latency of one WebRTC call through (b), minus the
same prompt streamed straight to the backend over a WebSocket (an ideal
zero-latency player on the direct side).

    .venv/bin/python bench/call_cost.py --ns 10 20 --sweep-a 30 40 --sweep-b 30 \
        --duration 25 --json bench/results/call_cost.json --profile-dir bench/results

Every run is bounded (duration + timeouts); servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from rtc_agent.loadtest.metrics import percentile, summarize
from rtc_agent.loadtest.received import frame_dbfs
from rtc_agent.protocol import Dialect
from rtc_agent.realtime.dialect import session_update
from rtc_agent.realtime.settings import SessionSettings

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT_TEXT = "what is twelve times seven"
THRESHOLD_DBFS = -50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds: the event loop holds the GIL on the
    main thread; aiortc's Opus encoder pool and decoder threads are the others."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        secs = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if task.name == str(pid):
            main += secs
        else:
            other += secs
    return main, other


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def healthz(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("RTC_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=offline_env(),
                                cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        if (h := healthz(url)) and h.get("ok"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"server not healthy after {timeout} s: {log.read_text()[-2000:]}")


def wait_line(log: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    raise RuntimeError(f"no {prefix!r} after {timeout} s")


@dataclass
class LoadRun:
    n: int
    doc: dict[str, Any]
    server_cpu_pct: float | None  # % of one core while all N calls were up
    other_cpu_pct: dict[str, float]
    window_s: float
    exit_status: int

    def holds(self) -> bool:
        """Media kept up (50 frames/s, < 100 ms lag) for every call, whatever the replies."""
        calls = self.doc["calls"]
        if len(calls) != self.n or any(c["connect_ms"] is None for c in calls):
            return False
        fps = [c["rx_fps"] or 0 for c in calls]
        lags = [c["rx_lag_ms_p95"] if c["rx_lag_ms_p95"] is not None else 1e9 for c in calls]
        return min(fps) >= 49 and max(lags) < 100

    def row(self) -> dict[str, Any]:
        calls = self.doc["calls"]
        s = self.doc["summary"]
        lags = [c["rx_lag_ms_p95"] for c in calls if c["rx_lag_ms_p95"] is not None]
        send_lag = [c["stats"].get("send_max_lag_ms") or 0 for c in calls if c["stats"]]
        return {
            "n": self.n,
            "server_cpu_pct": self.server_cpu_pct,
            "cpu_per_call_pct": (self.server_cpu_pct / self.n) if self.server_cpu_pct else None,
            "other_cpu_pct": self.other_cpu_pct,
            "window_s": self.window_s,
            "min_rx_fps": min((c["rx_fps"] or 0 for c in calls), default=0),
            "max_rx_lag_p95_ms": max(lags, default=None),
            "caller_send_lag_max_ms": max(send_lag, default=None),
            "failures": s["failures"],
            "answered": not s["calls_failed"],
            "turn_latency_ms": s["turn_latency_ms"],
            "holds": self.holds(),
        }


def run_load(url: str, n: int, duration: float, prompt: Path, tmp: Path, server_pid: int,
             others: dict[str, int], pause: float, extra: tuple[str, ...] = ()) -> LoadRun:
    """`rtc-agent loadtest` on core 1 while sampling the server's CPU."""
    out = tmp / f"load-{n}-{time.monotonic_ns()}.json"
    ramp = min(5.0, n * 0.15)
    cmd = ["taskset", "-c", "1", PY, "-m", "rtc_agent.cli", "loadtest", "--url", url,
           "--calls", str(n), "--ramp", str(ramp), "--duration", str(duration),
           "--prompts", str(prompt), "--json", str(out), "--pause", str(pause),
           "--turn-timeout", "15", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=offline_env(), cwd=ROOT)
    samples: list[tuple[float, float, dict[str, float], int]] = []
    deadline = time.monotonic() + duration + ramp + 120
    while proc.poll() is None and time.monotonic() < deadline:
        h = healthz(url) or {}
        other: dict[str, float] = {"machine": machine_busy_seconds()}
        main, threads = thread_cpu_seconds(server_pid)
        other["server_main_thread"], other["server_other_threads"] = main, threads
        for name, pid in {**others, "callers": proc.pid}.items():
            with contextlib.suppress(OSError):
                other[name] = cpu_seconds(pid)
        samples.append((time.monotonic(), cpu_seconds(server_pid), other, h.get("calls", -1)))
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    full = [s for s in samples if s[3] == n]
    cpu = None
    other_pct: dict[str, float] = {}
    window = 0.0
    if len(full) >= 4:
        a, b = full[1], full[-1]  # skip the first sample: the last call just connected
        window = b[0] - a[0]
        cpu = 100 * (b[1] - a[1]) / window
        for name in b[2]:
            if name in a[2]:
                other_pct[name] = 100 * (b[2][name] - a[2][name]) / window
        # whatever else ran on the machine meanwhile (other people's jobs skew a run)
        ours = cpu + sum(v for k, v in other_pct.items()
                         if k not in ("machine", "server_main_thread", "server_other_threads"))
        other_pct["rest_of_machine"] = other_pct.pop("machine") - ours
    doc = json.loads(out.read_text()) if out.exists() else {
        "summary": {"calls_failed": n, "failures": {"no_json": 1}, "turn_latency_ms": {}},
        "calls": []}
    return LoadRun(n, doc, cpu, other_pct, window, proc.returncode)


# Buckets for the profile summary: the first frame (leaf -> root) matching wins.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("idle (epoll/select wait, thread waits)", ("idle", "select (selectors.py",
                                                 "poll (selectors.py",
                                                 "Condition.wait (threading.py",
                                                 "Event.wait (threading.py",
                                                 "Queue.get (queue.py",
                                                 "_worker (concurrent", "_read_from_self")),
    ("Opus encode (aiortc encoder thread)", ("encode (aiortc/codecs/opus.py",)),
    ("Opus decode (aiortc decoder thread)", ("decode (aiortc/codecs/opus.py",)),
    ("audio level loop (aiortc rtp.py)", ("compute_audio_level_dbov",)),
    ("resampling (av AudioResampler)", ("resample (",)),
    ("SRTP / DTLS transport", ("protect", "unprotect", "rtcdtlstransport.py")),
    ("RTP/RTCP parse+serialize", ("rtp.py",)),
    ("jitter buffer", ("jitterbuffer.py",)),
    ("ICE / UDP transport", ("aioice", "datagram_received", "sendto")),
    ("data channel / SCTP", ("rtcsctptransport.py",)),
    ("WebSocket to backend + JSON/base64", ("websockets/", "json/", "base64")),
    ("numpy", ("numpy/",)),
    ("rtc_agent media path (playout, inbound)", ("rtc_agent/media/",)),
    ("rtc_agent other (call, session, data channel)", ("rtc_agent/",)),
    ("echo track: 48->24->48 kHz resampling (bench/echo_server.py)", ("echo_server.py",)),
    ("aiortc RTP sender loop", ("rtcrtpsender.py",)),
    ("aiortc RTP receiver", ("rtcrtpreceiver.py",)),
    ("aiortc other", ("aiortc/",)),
    ("asyncio event loop", ("asyncio/",)),
]


def profile_summary(raw: Path) -> list[tuple[str, float]]:
    """Share of busy samples per bucket, by the innermost matching frame.

    py-spy's own idle detection does not work in this VM, so samples whose
    innermost frame is a known wait (epoll, a lock or queue wait) are dropped; with
    uvloop a bare `Runner.run` (the loop in C, mostly its epoll wait) is dropped too.
    All threads are sampled: aiortc's encoder pool and decoder threads count.
    """
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")[::-1]  # leaf first
        bucket = "other"
        if frames[0].startswith("Runner.run (asyncio/runners.py"):
            # uvloop runs in C: a bare Runner.run is its epoll wait or its own internals
            frames = ["idle"]
        for frame in frames:
            hit = next((name for name, keys in BUCKETS if any(k in frame for k in keys)), None)
            if hit:
                bucket = hit
                break
        counts[bucket] = counts.get(bucket, 0) + int(n)
        total += int(n)
    busy = {k: v for k, v in counts.items() if not k.startswith("idle")}
    busy_total = sum(busy.values()) or 1
    return sorted(((k, 100 * v / busy_total) for k, v in busy.items()), key=lambda kv: -kv[1])


async def direct_turns(ws_url: str, pcm24: np.ndarray, turns: int,
                       pause: float) -> list[dict[str, float]]:
    """Heard latency of the same prompt streamed straight to the backend over a WebSocket.

    The prompt (and then silence, as a microphone would) is sent in 20 ms chunks
    in real time; the reply counts as heard at the first delta's arrival plus the
    offset of its first audible 20 ms inside the response's audio.
    """
    chunk = 480
    silence = base64.b64encode(np.zeros(chunk, np.int16).tobytes()).decode()
    frames = [pcm24[i:i + chunk] for i in range(0, len(pcm24) - chunk + 1, chunk)]
    loud = [i for i, f in enumerate(frames) if frame_dbfs(f) > THRESHOLD_DBFS]
    last_loud = loud[-1] if loud else len(frames) - 1
    latencies: list[dict[str, float]] = []
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps(session_update(Dialect.GA, SessionSettings(), [])))
        start = time.monotonic()
        state: dict[str, Any] = {"first_delta_t": None, "samples": 0, "heard": None,
                                 "done": False, "stopped": None}

        async def reader() -> None:
            async for message in ws:
                ev = json.loads(message)
                t = ev.get("type", "")
                if t in ("response.output_audio.delta", "response.audio.delta"):
                    now = time.monotonic()
                    pcm = np.frombuffer(base64.b64decode(ev["delta"]), np.int16)
                    if state["first_delta_t"] is None:
                        state["first_delta_t"] = now
                    if state["heard"] is None:
                        for j in range(0, len(pcm) - chunk + 1, chunk):
                            if frame_dbfs(pcm[j:j + chunk]) > THRESHOLD_DBFS:
                                offset = (state["samples"] + j) / 24000
                                state["heard"] = state["first_delta_t"] + offset
                                break
                    state["samples"] += len(pcm)
                elif t == "response.done":
                    state["done"] = True
                elif t == "input_audio_buffer.speech_stopped" and state["stopped"] is None:
                    state["stopped"] = time.monotonic()

        task = asyncio.create_task(reader())
        try:
            for _ in range(turns):
                state.update(first_delta_t=None, samples=0, heard=None, done=False,
                             stopped=None)
                speech_end = None
                for i, f in enumerate(frames):
                    await _paced(start)
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(f.tobytes()).decode()}))
                    start += 0.02
                    if i == last_loud:
                        speech_end = time.monotonic()
                deadline = time.monotonic() + 15
                while not state["done"] and time.monotonic() < deadline:
                    await _paced(start)
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": silence}))
                    start += 0.02
                if state["heard"] is not None and speech_end is not None:
                    latencies.append({
                        "latency_ms": (state["heard"] - speech_end) * 1000,
                        "stopped_ms": _ms_after(state["stopped"], speech_end),
                        "first_delta_ms": _ms_after(state["first_delta_t"], speech_end),
                    })
                # let the reply "play" (its length in real time) and pause, sending silence
                until = time.monotonic() + state["samples"] / 24000 + pause
                while time.monotonic() < until:
                    await _paced(start)
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": silence}))
                    start += 0.02
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return latencies


def _ms_after(t: float | None, t0: float) -> float | None:
    return None if t is None else (t - t0) * 1000


async def _paced(due: float) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="*", default=[10, 20])
    ap.add_argument("--sweep-a", type=int, nargs="*", default=[30, 40],
                    help="extra N for the echo server's capacity")
    ap.add_argument("--sweep-b", type=int, nargs="*", default=[30],
                    help="extra N for rtc-agent's capacity")
    ap.add_argument("--duration", type=float, default=25.0)
    ap.add_argument("--pause", type=float, default=5.0,
                    help="seconds between a reply and the next prompt (the offline backend's "
                         "speech recognition shares core 1 with the callers)")
    ap.add_argument("--latency-turns", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile-dir", type=Path, default=None,
                    help="py-spy both servers at the largest --ns into this folder")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))  # for tests.speech: the piper-spoken prompt
    from tests.speech import speak_wav

    prompt48 = speak_wav(PROMPT_TEXT)
    pcm24 = _read_pcm(speak_wav(PROMPT_TEXT, rate=24000))
    tmp = Path(tempfile.mkdtemp(prefix="call-cost-"))
    results: dict[str, Any] = {"prompt": PROMPT_TEXT, "duration_s": args.duration,
                               "pause_s": args.pause, "a": [], "b": [], "profiles": {}}
    prof_n = max(args.ns, default=0)

    if not args.skip_a:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / "echo.log"
        with process(["taskset", "-c", "0", PY, str(ROOT / "bench" / "echo_server.py"),
                      "--port", str(port), "--max-calls", "200"], log) as srv:
            wait_healthy(url, srv, log)
            for n in sorted(set(args.ns + args.sweep_a)):
                prof = None
                if args.profile_dir and n == prof_n:
                    prof = _profile_later(srv.pid, args.profile_dir / "profile-echo.txt",
                                          args.duration)
                run = run_load(url, n, args.duration, prompt48, tmp, srv.pid, {}, args.pause)
                if prof is not None:
                    prof.wait()
                results["a"].append(run.row())
                print("a", json.dumps(run.row()), flush=True)
        if args.profile_dir and (args.profile_dir / "profile-echo.txt").exists():
            results["profiles"]["a"] = profile_summary(args.profile_dir / "profile-echo.txt")

    if not args.skip_b:
        blog = tmp / "backend.log"
        bport = free_port()
        # The backend shares core 1 with the callers at a lower priority, so its
        # speech recognition bursts do not delay the callers' clocks.
        with process(["taskset", "-c", "1", "nice", "-n", "10", PY, "-m", "rtc_agent.cli",
                      "realtime-server",
                      "--port", str(bport)], blog) as backend:
            ws_url = wait_line(blog, "REALTIME_URL ", backend)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = tmp / "serve.log"
            with process(["taskset", "-c", "0", PY, "-m", "rtc_agent.cli", "serve",
                          "--port", str(port), "--ice-address", "127.0.0.1",
                          "--max-calls", "200", "--realtime-url", ws_url,
                          "--log-level", "WARNING"], log) as srv:
                wait_healthy(url, srv, log)
                # Bridge overhead first, on an idle machine: one WebRTC call, then direct;
                # one direct turn first fills the backend's TTS cache for both.
                asyncio.run(direct_turns(ws_url, pcm24, 1, 0.5))
                one = run_load(url, 1, args.latency_turns * 6.0, prompt48, tmp, srv.pid,
                               {"backend": backend.pid}, args.pause)
                wturns = [t for c in one.doc["calls"] for t in c["turns"]
                          if t["latency_ms"] is not None]
                webrtc = [t["latency_ms"] for t in wturns]
                # the same with the caller's jitter buffer at 0 prefetch instead of aiortc's
                # 4 frames: closer to a browser, and shows what the caller itself adds
                one0 = run_load(url, 1, args.latency_turns * 6.0, prompt48, tmp, srv.pid,
                                {"backend": backend.pid}, args.pause,
                                ("--jitter-prefetch", "0"))
                webrtc0 = [t["latency_ms"] for c in one0.doc["calls"] for t in c["turns"]
                           if t["latency_ms"] is not None]
                dturns = asyncio.run(direct_turns(ws_url, pcm24, args.latency_turns, args.pause))
                direct = [t["latency_ms"] for t in dturns]
                results["bridge"] = {
                    "webrtc_ms": summarize(webrtc), "direct_ms": summarize(direct),
                    "overhead_p50_ms": _diff(percentile(webrtc, 50), percentile(direct, 50)),
                    "overhead_p95_ms": _diff(percentile(webrtc, 95), percentile(direct, 95)),
                    "webrtc_prefetch0_ms": summarize(webrtc0),
                    "overhead_prefetch0_p50_ms": _diff(percentile(webrtc0, 50),
                                                       percentile(direct, 50)),
                    "overhead_prefetch0_p95_ms": _diff(percentile(webrtc0, 95),
                                                       percentile(direct, 95)),
                    # where it goes: end-of-turn detection seen by the caller (state
                    # thinking) vs the backend's speech_stopped; reply start (state
                    # speaking) vs the first audio delta on the direct socket
                    "webrtc_thinking_ms": summarize(t["thinking_ms"] for t in wturns),
                    "webrtc_speaking_ms": summarize(t["speaking_ms"] for t in wturns),
                    "direct_stopped_ms": summarize(t["stopped_ms"] for t in dturns),
                    "direct_first_delta_ms": summarize(t["first_delta_ms"] for t in dturns),
                    "webrtc_samples": wturns, "direct_samples": dturns,
                }
                print("bridge", json.dumps({k: v for k, v in results["bridge"].items()
                                            if not k.endswith("samples")}), flush=True)
                for n in sorted(set(args.ns + args.sweep_b)):
                    prof = None
                    if args.profile_dir and n == prof_n:
                        prof = _profile_later(srv.pid, args.profile_dir / "profile-serve.txt",
                                              args.duration)
                    run = run_load(url, n, args.duration, prompt48, tmp, srv.pid,
                                   {"backend": backend.pid}, args.pause)
                    if prof is not None:
                        prof.wait()
                    results["b"].append(run.row())
                    print("b", json.dumps(run.row()), flush=True)
        if args.profile_dir and (args.profile_dir / "profile-serve.txt").exists():
            results["profiles"]["b"] = profile_summary(args.profile_dir / "profile-serve.txt")

    results["table"] = _table(results)
    print(results["table"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


class _profile_later:
    """Start py-spy on `pid` a few seconds into the next run (once the calls are up)."""

    def __init__(self, pid: int, out: Path, duration: float) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        exe = Path(PY).parent / "py-spy"
        secs = max(5, int(duration * 0.6))
        self.proc = subprocess.Popen(
            ["bash", "-c", f"sleep {min(8.0, duration * 0.3):.1f}; exec {exe} record "
             f"--pid {pid} --duration {secs} --rate 100 --format raw --output {out} "
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if exe.exists() else None

    def wait(self) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=120)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _read_pcm(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()


def _table(results: dict[str, Any]) -> str:
    def fmt(v: Any, nd: int = 1) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    a = {r["n"]: r for r in results["a"]}
    b = {r["n"]: r for r in results["b"]}
    lines = ["| N | (a) echo CPU/call % | (b) rtc-agent CPU/call % | (b)/(a) | "
             "server main thread / other threads % (a; b) | (a) media holds | "
             "(b) media holds | (b) replies ok | (b) backend CPU % | callers CPU % (a; b) | "
             "rest of machine % (a; b) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def o(r: dict[str, Any], k: str) -> float | None:
        return r.get("other_cpu_pct", {}).get(k)

    for n in sorted(set(a) | set(b)):
        ra, rb = a.get(n, {}), b.get(n, {})
        ca, cb = ra.get("cpu_per_call_pct"), rb.get("cpu_per_call_pct")
        ratio = cb / ca if ca and cb else None
        threads = "; ".join(
            f"{fmt(o(r, 'server_main_thread'), 0)} / {fmt(o(r, 'server_other_threads'), 0)}"
            for r in (ra, rb))
        lines.append(
            f"| {n} | {fmt(ca, 2)} | {fmt(cb, 2)} | {fmt(ratio, 2)} | {threads} | "
            f"{_holds(ra)} | {_holds(rb)} | "
            f"{'-' if not rb else ('yes' if rb['answered'] else rb['failures'])} | "
            f"{fmt(o(rb, 'backend'), 0)} | "
            f"{fmt(o(ra, 'callers'), 0)}; {fmt(o(rb, 'callers'), 0)} | "
            f"{fmt(o(ra, 'rest_of_machine'), 0)}; {fmt(o(rb, 'rest_of_machine'), 0)} |")
    for key, label in (("a", "(a) echo"), ("b", "(b) rtc-agent")):
        held = [r["n"] for r in results[key] if r["holds"]]
        lines.append(f"\n{label}: highest N held = {max(held) if held else 'none'} "
                     f"(of {sorted(r['n'] for r in results[key])})")
    if "bridge" in results:
        br = results["bridge"]
        lines.append(
            f"\nheard turn latency, 1 call: WebRTC p50 {fmt(br['webrtc_ms']['p50'], 0)} / "
            f"p95 {fmt(br['webrtc_ms']['p95'], 0)} ms; direct WebSocket p50 "
            f"{fmt(br['direct_ms']['p50'], 0)} / p95 {fmt(br['direct_ms']['p95'], 0)} ms; "
            f"bridge overhead p50 {fmt(br['overhead_p50_ms'], 0)} / "
            f"p95 {fmt(br['overhead_p95_ms'], 0)} ms")
        lines.append(
            f"  caller jitter buffer at 0 prefetch: WebRTC p50 "
            f"{fmt(br['webrtc_prefetch0_ms']['p50'], 0)} / p95 "
            f"{fmt(br['webrtc_prefetch0_ms']['p95'], 0)} ms; bridge overhead p50 "
            f"{fmt(br['overhead_prefetch0_p50_ms'], 0)} / p95 "
            f"{fmt(br['overhead_prefetch0_p95_ms'], 0)} ms")
        lines.append(
            f"  end of turn detected (p50): WebRTC state thinking "
            f"{fmt(br['webrtc_thinking_ms']['p50'], 0)} ms vs direct speech_stopped "
            f"{fmt(br['direct_stopped_ms']['p50'], 0)} ms after speech end; reply starts "
            f"(p50): WebRTC state speaking {fmt(br['webrtc_speaking_ms']['p50'], 0)} ms vs "
            f"direct first delta {fmt(br['direct_first_delta_ms']['p50'], 0)} ms")
    for key, prof in results.get("profiles", {}).items():
        lines.append(f"\nprofile ({key}), py-spy (all threads, waits dropped), share of busy "
                     "samples:")
        lines += [f"  {share:5.1f} %  {name}" for name, share in prof[:12]]
    return "\n".join(lines)


def _holds(r: dict[str, Any]) -> str:
    if not r:
        return "-"
    why = f"fps {r['min_rx_fps']:.1f}, lag {fmt_ms(r['max_rx_lag_p95_ms'])}"
    return ("yes" if r["holds"] else "no") + f" ({why})"


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
