"""Heard latency and barge-in from a real headless Chromium caller (issue 14).

One command; it starts everything it needs and stops it at the end (also on an error):

    .venv/bin/python bench/browser_latency.py --json bench/results/browser_latency.json
    .venv/bin/python bench/browser_latency.py --tree before=/work/before-14 \\
        --tree after=/work/main --json bench/results/browser_latency-before-after.json
    .venv/bin/python bench/browser_latency.py --page project --barge-ins 20 \\
        --json bench/results/browser_latency-project.json
    .venv/bin/python bench/browser_latency.py --tree p20=. --tree p10=. \\
        --tree-arg p10=--ptime=10 --json bench/results/browser_latency-ptime.json

Two paths, the same prompts, the same number of turns:

  webrtc  `rtc-agent serve` (offline backend) in one network namespace, headless
          Chromium in another (tests/web/roaming.py; link a only), calling it from the
          bench's own page (bench/browser_latency/: page.html, page.js, tap.js) served
          at the server's origin through Playwright's request interception;
  direct  the same kind of offline backend (`python -m rtc_agent.offline.command`,
          with the options `serve` gives its child: `--tts piper`) on loopback, driven
          over its WebSocket by this process: the reference, an ideal caller.

`--tree NAME=PATH` (repeatable) runs both from another checkout (a `git worktree`):
this venv's python with PYTHONPATH=PATH, so PATH's `rtc_agent` (and, through it, its
`web/`) is imported. The bench proves it: a `sitecustomize` it puts on the same
PYTHONPATH makes every Python process of the run print where `rtc_agent` came from
("bench-import: ..."), and the bench checks the server's and backend's lines against
PATH. With several trees the runs alternate by rounds (a, b, a, b; `--rounds`, default
2 with several trees), each round on a fresh server, browser and backend; one table
per tree, then the difference (each tree minus the first).
`--tree-arg NAME=ARG` gives one tree's server an extra argument: with two names for
one checkout it compares settings (`--ptime 10`, `--no-dtx`) the same way.

The caller (all in the page, one clock)
---------------------------------------
One AudioContext at 48 kHz. The fake microphone is AudioBufferSourceNodes of piper
prompts (tests/speech.py `speak_pcm`: 0.5 s silence, speech, 1.5 s silence) started
at chosen context frames into a MediaStreamAudioDestinationNode, whose track is the
call's only outgoing track; between prompts it sends digital silence. There is no
getUserMedia, so Chromium's echo cancellation, AGC and noise suppression are not in
the path (they are capture-side processing; the track's settings are in the JSON).
The agent's track goes into a MediaStreamAudioSourceNode and an AudioWorklet ("tap",
tap.js) that reports, in context frames, the first audible sample after quiet ("on")
and the end of the last audible sample once 40 ms of quiet followed ("off").
Chromium decodes remote WebRTC audio only while the stream is attached to a media
element: without one the jitter buffer emits nothing and WebAudio gets silence
(checked: jitterBufferEmittedCount stays 0). The page therefore also plays the
stream in a muted <audio> element; `muted` does not stop the decoding.

Audible, everywhere in this bench: |sample| > 0.01 of full scale (-40 dBFS). The
speech end of a prompt is the end of its last audible sample (piper's tail decays
below that in ~20 ms; -50 dBFS would put the end ~19 ms later, in both paths alike).

Clocks. Data-channel messages are stamped with performance.now() in onmessage. Audio
is in context frames; a frame is mapped to performance.now() with the render clock:
the tap posts its currentFrame every 4 render quanta and the page keeps
offset = min(arrival - frame/48 kHz) over the last 4 s. The true render of a sample
is 0 to ~14 ms after the mapped time (the audio thread renders a device buffer of
quanta at once: the ticks' spread above the minimum is ~5 ms p50, ~10 ms p95 here;
`clock` in the JSON), plus the audio-to-main-thread hop of the soonest tick (>= 0,
small). getOutputTimestamp() would give the output device's presentation time instead,
~42 ms later (outputLatency 32 ms + baseLatency 10 ms in headless Chromium; both
offsets are in the JSON): not used, because the microphone track and the tap both
take their samples at render time. Heard latency itself needs no mapping: speech end
and reply onset are frames of the same context, so it is exact to the sample
(up to the clock's rate, which is checked against performance.now(): `drift_ppm`).

What each figure is (ms)
------------------------
heard       webrtc: speech end -> first audible sample of the reply as rendered in the
            page's audio graph (after jitter buffer, decoder and the element-to-WebAudio
            hop; without the output device's latency). direct: speech end -> the first
            audible sample of the reply's audio played by an ideal player that starts
            at the first delta's arrival (max(first delta + offset of the sample,
            arrival of the delta holding it)). In the direct path the speech end is the
            moment the chunk clock reaches the last audible sample (chunks of 20 ms go
            out when their last sample is "spoken", as a microphone's would).
overhead    webrtc minus direct, of the p50s and of the p95s.
inbound     webrtc: speech end -> `state: thinking` arrival (mapping error applies);
            direct: speech end -> `input_audio_buffer.speech_stopped` arrival. Both hold
            the backend's 500 ms of VAD silence and its recognition.
reply start webrtc: `thinking` -> `speaking` arrival; direct: `speech_stopped` -> first
            audio delta.
way out     webrtc: `speaking` arrival -> heard onset, minus the reply's lead silence
            (the offset of the first audible sample in the backend's reply audio, taken
            from the direct path's reply to the same prompt: same backend, same TTS);
            the playout tick, Opus, RTP, jitter buffer, decoding and the hop into
            WebAudio. direct: first delta -> heard, minus the lead silence (0 unless
            a delta came late). inbound + reply start + way out + lead = heard.
jitter buf  mean jitter-buffer delay over the turn, from getStats inbound-rtp:
            delta jitterBufferDelay / delta jitterBufferEmittedCount (target and minimum
            delay likewise, and the media-playout delay when Chromium reports it).
barge-in    a long reply ("tell me a story": the responder's STORY) plays; 1-2.5 s
            (seeded) after its audio started, once the tap says it is audible, the fake
            mic says an interrupting prompt (its lead silence skipped: speech starts
            ~35 ms after the check). silent = the end of the last audible remote sample
            before the first quiet stretch of >= 600 ms that begins after the
            interruption's speech start (longer than any pause inside the story).
            Figures: `user_speaking` arrival -> silent (the server-side path: the
            bench page does not mute), speech start -> `user_speaking` arrival, speech
            start -> silent (exact, one clock). A barge-in whose speech starts while
            the story is in a pause of >= 600 ms measures no cut: it is counted apart,
            not in the figures. Chromium renders the remote audio ~20 ms before the output device
            would present it, so "silent as heard" on a real device is about that
            much later than these figures (both the reply onset and the silence).

--page project
--------------
The project's own page (`/` of the server, web/) instead of the bench's: an init
script (page.js `hookProject`) installs the fake microphone as getUserMedia's answer,
taps the remote track of every RTCPeerConnection the page makes into the same worklet,
stamps the page's `events` messages in the same task as the page's own handler, and
wraps HTMLMediaElement's `muted`/`volume` setters to record when the page mutes its
<audio> element (the page mutes the agent locally when `user_speaking` arrives).
There is no honest tap of the audio *as heard* after that element in headless
Chromium, checked here: createMediaElementSource() on an element whose srcObject is a
MediaStream gives silence (muted or not), and captureStream() ignores `muted` and
`volume`; the output device is a fake one with nothing to record (a PulseAudio null
sink recorded from its monitor would be the honest tap; not installed). So the mode
reports, per barge-in, besides the stream figures above:
  arrival -> element muted   `user_speaking` arrival -> the page's `muted = true`
                             (observed: the setter's call);
  arrival -> heard silent*   the earlier of the stream going silent and that mute,
                             minus the arrival: MODELLED, it assumes the mute silences
                             the element's output at once;
and counts the barge-ins where the mute was lifted only after the next reply's audio
had started (its start clipped) or never. rtcAgent.localMutes' record is in the JSON.

The warm-up (one turn of each prompt and one barge-in, per path and round) is not
counted. The backend caches synthesized sentences (`--tts-cache`, on by default as in
`serve`), so after the warm-up replies are cache hits in both paths; "what time is it"
is therefore not a default prompt (its answer changes every minute: a cache miss in one
path and not the other). Run on a quiet machine: the load average at the start and the
end is in the JSON, with each tree's git revision and its uncommitted files.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtc_agent.loadtest.metrics import percentile  # noqa: E402
from tests.speech import speak_pcm  # noqa: E402
from tests.web.netns import missing_tools  # noqa: E402
from tests.web.roaming import Roaming, roaming  # noqa: E402

PAGE_DIR = Path(__file__).resolve().parent / "browser_latency"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PROMPTS = ["what is twelve times seven", "what is six times eight", "what is nine plus four",
           "what is three times five"]
STORY_PROMPT = "tell me a story"
INTERRUPTS = ["what is six times eight", "what is nine plus four"]
AUDIBLE = 328  # |int16 sample| above this is audible: 0.01 of full scale, -40 dBFS
RATE = 48000  # the page's AudioContext
DIRECT_RATE = 24000  # the backend's pcm16
BARGE_QUIET_S = 0.6
TURN_GAP_S = 0.8
SITECUSTOMIZE = """\
import os, sys
try:
    import rtc_agent
    sys.stderr.write("bench-import: pid %d %s rtc_agent from %s\\n"
                     % (os.getpid(), " ".join(sys.argv[:3]), rtc_agent.__file__))
    sys.stderr.flush()
except Exception as exc:
    sys.stderr.write("bench-import: pid %d failed: %r\\n" % (os.getpid(), exc))
"""


# ----------------------------------------------------------------- small helpers

def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def audible_span(pcm: np.ndarray) -> tuple[int, int]:
    """(first audible sample, one past the last) of int16 audio."""
    idx = np.nonzero(np.abs(pcm.astype(np.int32)) > AUDIBLE)[0]
    if not len(idx):
        raise ValueError("no audible sample")
    return int(idx[0]), int(idx[-1]) + 1


def git_info(tree: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                              text=True).stdout.strip()
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"path": str(tree), "head": git("rev-parse", "HEAD"),
            "subject": git("log", "-1", "--format=%s"), "uncommitted": dirty}


@dataclass
class Prompt:
    text: str
    pcm48: np.ndarray
    pcm24: np.ndarray

    @property
    def span48(self) -> tuple[int, int]:
        return audible_span(self.pcm48)

    @property
    def span24(self) -> tuple[int, int]:
        return audible_span(self.pcm24)


def make_prompts(texts: list[str]) -> dict[str, Prompt]:
    return {t: Prompt(t, speak_pcm(t, RATE), speak_pcm(t, DIRECT_RATE)) for t in texts}


@contextlib.contextmanager
def tree_env(tree: Path, work: Path) -> Iterator[dict[str, str]]:
    """os.environ with PYTHONPATH=<tree>:<bench sitecustomize> while inside (children
    started by the roaming helper copy os.environ)."""
    site = work / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{tree}{os.pathsep}{site}"
    try:
        yield dict(os.environ)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def check_imports(log: str, tree: Path, who: str) -> list[str]:
    """The 'bench-import' lines of a log; raises if any names another rtc_agent."""
    lines = [ln for ln in log.splitlines() if "bench-import:" in ln]
    want = str((tree / "rtc_agent" / "__init__.py").resolve())
    if not lines:
        raise RuntimeError(f"{who}: no bench-import line: is the sitecustomize on its path?")
    bad = [ln for ln in lines if not ln.rstrip().endswith(want)]
    if bad:
        raise RuntimeError(f"{who} imported another rtc_agent than {want}: {bad}")
    return lines


# ----------------------------------------------------------------- the WebRTC path

class Caller:
    """The bench page in Chromium, calling the server in `stack`."""

    def __init__(self, pw: Any, stack: Roaming, work: Path, prompts: dict[str, Prompt],
                 mode: str = "bench") -> None:
        self.stack = stack
        self.mode = mode
        flags = [*CHROMIUM_FLAGS, *stack.browser_args()]
        if mode == "project":  # a device to list (getUserMedia itself is replaced)
            flags += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
        self.browser = pw.chromium.launch(executable_path=str(stack.ns.chromium_wrapper(work)),
                                          headless=True, args=flags, timeout=60_000)
        # The project page's Content-Security-Policy refuses the tap's worklet from a
        # blob: the bench's scripts run with CSP bypassed (the page's own are unchanged).
        self.page = self.browser.new_page(bypass_csp=mode == "project")
        if mode == "project":
            # the bench's page.js, then its hooks, before the project page's scripts
            self.page.add_init_script(script=(PAGE_DIR / "page.js").read_text()
                                      + "\nwindow.bench.hookProject();\n")
            self.page.goto(stack.url("/?raw=1"))
        else:
            self.page.route("**/__bench/*", self._serve)
            self.page.goto(stack.url("/__bench/page.html"))
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        self.names = {p.text: f"p{i}" for i, p in enumerate(prompts.values())}
        blobs = {self.names[p.text]: base64.b64encode(p.pcm48.astype("<i2").tobytes()).decode()
                 for p in prompts.values()}
        self.setup = self.page.evaluate(
            "([p, o]) => bench.setup(p, o)",
            [blobs, {"tapSource": (PAGE_DIR / "tap.js").read_text(), "quietMs": 40}])
        if mode == "project":
            self.page.click("#call")
            self.wait("() => bench.events.some((e) => e.msg.type === 'session.ready')", None,
                      30, "the call")
            self.info = self.ev("({callId: rtcAgent.callId, ready: bench.events.find((e) =>"
                                " e.msg.type === 'session.ready').msg})")
        else:
            self.info = self.page.evaluate("bench.call({element: 'muted'})")
        self.clock0 = self.page.evaluate("bench.clock()")

    @staticmethod
    def _serve(route: Any) -> None:
        name = route.request.url.split("?")[0].rsplit("/", 1)[1]
        path = PAGE_DIR / name
        if not path.is_file():
            route.fulfill(status=404, body="not found")
            return
        kind = "text/html" if name.endswith(".html") else "text/javascript"
        route.fulfill(status=200, body=path.read_text(), content_type=kind)

    def ev(self, js: str, arg: Any = None) -> Any:
        return self.page.evaluate(js, arg)

    def wait(self, js: str, arg: Any, timeout_s: float, what: str) -> Any:
        try:
            return self.page.wait_for_function(js, arg=arg, polling=20,
                                               timeout=timeout_s * 1000).json_value()
        except Exception as exc:
            seen = self.ev("(n) => ({events: bench.events.slice(n.e || 0).map((e) => "
                           "[Math.round(e.t), e.msg.type, e.msg.state || e.msg.role || '']), "
                           "audio: bench.audio.slice(n.a || 0), clock: bench.clock()})",
                           arg if isinstance(arg, dict) else {})
            raise RuntimeError(f"not within {timeout_s:g} s: {what}; the page saw "
                               f"{json.dumps(seen)[-3000:]}") from exc

    def counts(self) -> dict[str, int]:
        return self.ev("({e: bench.events.length, a: bench.audio.length})")

    def play(self, text: str, delay_s: float = 0.2, skip: int = 0) -> dict[str, Any]:
        return self.ev(f"bench.play('{self.names[text]}', {delay_s}, {skip})")

    def wait_reply_done(self, since: dict[str, int], timeout_s: float) -> None:
        """Until `listening` follows a `speaking` (after event `since['e']`) and the
        remote audio has gone quiet."""
        self.wait("""(n) => {
            const ev = bench.events.slice(n.e);
            const sp = ev.findIndex((e) => e.msg.type === 'state' && e.msg.state === 'speaking');
            if (sp < 0) return false;
            const li = ev.slice(sp).some((e) => e.msg.state === 'listening');
            const au = bench.audio.slice(n.a);
            return li && au.length > 0 && au[au.length - 1].t === 'off';
        }""", since, timeout_s, "the reply to finish")

    def since(self, since: dict[str, int]) -> dict[str, Any]:
        return self.ev("(n) => ({events: bench.events.slice(n.e), audio: bench.audio.slice(n.a),"
                       " clock: bench.clock(), spread: bench.tickSpread(), mutes: bench.mutes,"
                       " localMutes: window.rtcAgent ? rtcAgent.localMutes || null : null})",
                       since)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ev("bench.hangUp()")
        self.browser.close()


def first_state(events: list[dict], state: str, after: float = -1e18) -> float | None:
    for e in events:
        m = e["msg"]
        if m.get("type") == "state" and m.get("state") == state and e["t"] >= after:
            return float(e["t"])
    return None


def jitter(before: dict, after: dict) -> dict[str, float | None]:
    a, b = after.get("inbound") or {}, before.get("inbound") or {}
    out: dict[str, float | None] = {}
    n = (a.get("jitterBufferEmittedCount") or 0) - (b.get("jitterBufferEmittedCount") or 0)
    for key, name in (("jitterBufferDelay", "jb_delay_ms"), ("jitterBufferTargetDelay",
                      "jb_target_ms"), ("jitterBufferMinimumDelay", "jb_minimum_ms")):
        if n > 0 and a.get(key) is not None and b.get(key) is not None:
            out[name] = (a[key] - b[key]) / n * 1000
        else:
            out[name] = None
    pa, pb = after.get("playout") or {}, before.get("playout") or {}
    m = (pa.get("totalSamplesCount") or 0) - (pb.get("totalSamplesCount") or 0)
    out["playout_delay_ms"] = ((pa["totalPlayoutDelay"] - pb["totalPlayoutDelay"]) / m * 1000
                               if m > 0 else None)
    out["packets_lost"] = (a.get("packetsLost") or 0) - (b.get("packetsLost") or 0)
    out["concealed_samples"] = (a.get("concealedSamples") or 0) - (b.get("concealedSamples") or 0)
    return out


def webrtc_turn(caller: Caller, prompt: Prompt) -> dict[str, Any]:
    since = caller.counts()
    stats0 = caller.ev("bench.stats()")
    played = caller.play(prompt.text)
    caller.wait_reply_done(since, 30)
    stats1 = caller.ev("bench.stats()")
    got = caller.since(since)
    off = got["clock"]["renderOffset"]
    first, end = prompt.span48
    end_frame = played["startFrame"] + end
    end_perf = end_frame / RATE * 1000 + off
    onset = next((a["frame"] for a in got["audio"] if a["t"] == "on" and a["frame"] > end_frame),
                 None)
    thinking = first_state(got["events"], "thinking", played["perfNow"])
    speaking = first_state(got["events"], "speaking", played["perfNow"])
    user_speaking = first_state(got["events"], "user_speaking", played["perfNow"])
    heard = (onset - end_frame) / RATE * 1000 if onset is not None else None
    onset_perf = onset / RATE * 1000 + off if onset is not None else None
    user_text = next((e["msg"].get("text") for e in got["events"]
                      if e["msg"].get("type") == "transcript.done"
                      and e["msg"].get("role") == "user"), None)
    reply: dict[str, Any] = next((e["msg"] for e in got["events"]
                                  if e["msg"].get("type") == "transcript.done"
                                  and e["msg"].get("role") == "assistant"), {})
    spread = sorted(got["spread"]) or [0.0]
    return {
        "prompt": prompt.text, "heard_ms": heard,
        "speech_end_perf": end_perf, "onset_perf": onset_perf,
        "user_speaking_ms": (user_speaking - (played["startFrame"] + first) / RATE * 1000 - off)
        if user_speaking is not None else None,
        "inbound_ms": thinking - end_perf if thinking is not None else None,
        "reply_start_ms": speaking - thinking if speaking is not None and thinking is not None
        else None,
        "speaking_to_onset_ms": onset_perf - speaking if onset_perf is not None
        and speaking is not None else None,
        "user_text": user_text, "reply_text": reply.get("text"),
        "reply_audio_ms": reply.get("audio_ms"),
        "render_offset_ms": off, "output_offset_ms": got["clock"]["outputOffset"],
        "tick_spread_p50_ms": percentile(spread, 50), "tick_spread_p95_ms": percentile(spread, 95),
        **jitter(stats0, stats1),
        "events": [{"t": round(e["t"], 2), **{k: v for k, v in e["msg"].items()
                                              if k in ("type", "state", "role")}}
                   for e in got["events"]],
        "audio": got["audio"],
    }


def silent_after(audio: list[dict], start_frame: int, quiet_frames: int) -> int | None:
    """The start (the end of the last audible sample) of the first quiet stretch of at
    least quiet_frames that ends after start_frame (taps' on/off events, in order).
    It is before start_frame when the audio was already in that stretch then."""
    for i, a in enumerate(audio):
        if a["t"] != "off":
            continue
        nxt = next((b["frame"] for b in audio[i + 1:] if b["t"] == "on"), None)
        if nxt is not None and nxt <= start_frame:
            continue
        if nxt is None or nxt - a["frame"] >= quiet_frames:
            return int(a["frame"])
    return None


def webrtc_barge(caller: Caller, story: Prompt, interrupt: Prompt, rng: random.Random
                 ) -> dict[str, Any]:
    since = caller.counts()
    caller.play(story.text)
    # the story's audio has started
    caller.wait("""(n) => bench.events.slice(n.e).some((e) => e.msg.state === 'speaking')
                 && bench.audio.slice(n.a).some((a) => a.t === 'on')""", since, 30,
                "the story to start")
    wait_s = rng.uniform(1.0, 2.5)
    time.sleep(wait_s)
    # interrupt while the story is audible (not in a pause between its words)
    with contextlib.suppress(RuntimeError):
        caller.wait("(n) => { const a = bench.audio.slice(n.a);"
                    " return a.length > 0 && a[a.length - 1].t === 'on'; }", since, 3,
                    "the story to be audible")
    mid = caller.counts()
    # the interruption starts 5 ms before its speech (its lead silence skipped)
    played = caller.play(interrupt.text, 0.03, max(0, interrupt.span48[0] - RATE // 200))
    caller.wait_reply_done(mid, 40)
    got = caller.since(since)
    off = got["clock"]["renderOffset"]
    start_frame = played["startFrame"] + interrupt.span48[0]
    start_perf = start_frame / RATE * 1000 + off
    arrival = first_state(got["events"], "user_speaking", played["perfNow"])
    silent = silent_after(got["audio"], start_frame, int(BARGE_QUIET_S * RATE))
    quiet_at_start = silent is None or silent <= start_frame
    silent_perf = silent / RATE * 1000 + off if silent is not None else None
    # --page project: the page's own mute of the <audio> element (its setter, hooked)
    mutes = [m for m in got["mutes"] if m["prop"] == "muted" and m["t"] >= played["perfNow"]]
    muted_at = next((m["t"] for m in mutes if m["value"]), None)
    restored_at = next((m["t"] for m in mutes if not m["value"] and muted_at is not None
                        and m["t"] >= muted_at), None)
    reply_onset = next((a["frame"] / RATE * 1000 + off for a in got["audio"]
                        if a["t"] == "on" and silent is not None and a["frame"] > silent), None)
    heard_silent = (min(silent_perf, muted_at) if muted_at is not None and silent_perf
                    is not None else silent_perf) if caller.mode == "project" else None
    story_done: dict[str, Any] = next((e["msg"] for e in got["events"] if e["msg"].get("type") ==
                       "transcript.done" and e["msg"].get("role") == "assistant"), {})
    return {
        "interrupt": interrupt.text, "after_s": wait_s,
        "arrival_to_silent_ms": silent_perf - arrival if silent_perf is not None
        and arrival is not None else None,
        "speech_to_arrival_ms": arrival - start_perf if arrival is not None else None,
        "speech_to_silent_ms": (silent - start_frame) / RATE * 1000 if silent is not None
        else None,
        "quiet_at_speech_start": quiet_at_start,
        "arrival_to_mute_ms": muted_at - arrival if muted_at is not None and arrival is not None
        else None,
        "arrival_to_heard_silent_ms": heard_silent - arrival if heard_silent is not None
        and arrival is not None else None,
        "mute_restored_after_reply_onset_ms": restored_at - reply_onset
        if restored_at is not None and reply_onset is not None else None,
        "mute_never_restored": muted_at is not None and restored_at is None,
        "local_mute": (got["localMutes"] or [None])[-1],
        "story_interrupted": story_done.get("interrupted"),
        "story_heard_ms": story_done.get("heard_ms"),
        "render_offset_ms": off,
        "events": [{"t": round(e["t"], 2), **{k: v for k, v in e["msg"].items()
                                              if k in ("type", "state", "role")}}
                   for e in got["events"]],
        "audio": got["audio"],
    }


def run_webrtc(pw: Any, work: Path, tree: Path, prompts: dict[str, Prompt], turns: list[str],
               barges: int, rng: random.Random, serve_args: list[str],
               echo: Any, mode: str = "bench") -> dict[str, Any]:
    out: dict[str, Any] = {"turns": [], "barge_ins": []}
    with tree_env(tree, work), roaming(work, args=["--offers-per-minute", "0", *serve_args]
                                       ) as stack:
        out["imports"] = check_imports(stack.server_log(), tree, "the server")
        caller = Caller(pw, stack, work, prompts, mode)
        try:
            out["setup"], out["call"], out["clock_start"] = (caller.setup, caller.info,
                                                             caller.clock0)
            for text in dict.fromkeys(turns):  # warm-up: each prompt once
                webrtc_turn(caller, prompts[text])
                time.sleep(TURN_GAP_S)
            if barges:
                webrtc_barge(caller, prompts[STORY_PROMPT], prompts[INTERRUPTS[0]], rng)
                time.sleep(TURN_GAP_S)
            for text in turns:
                row = webrtc_turn(caller, prompts[text])
                out["turns"].append(row)
                echo(f"webrtc  {text:28s} heard {fmt(row['heard_ms'])}  inbound "
                     f"{fmt(row['inbound_ms'])}  reply start {fmt(row['reply_start_ms'])}  "
                     f"speaking->onset {fmt(row['speaking_to_onset_ms'])}  jb "
                     f"{fmt(row['jb_delay_ms'])}")
                time.sleep(TURN_GAP_S)
            for k in range(barges):
                row = webrtc_barge(caller, prompts[STORY_PROMPT],
                                   prompts[INTERRUPTS[k % len(INTERRUPTS)]], rng)
                out["barge_ins"].append(row)
                echo(f"barge-in {k + 1:2d} after {row['after_s']:.1f} s: arrival->silent "
                     f"{fmt(row['arrival_to_silent_ms'])}  speech->arrival "
                     f"{fmt(row['speech_to_arrival_ms'])}  speech->silent "
                     f"{fmt(row['speech_to_silent_ms'])}  arrival->muted "
                     f"{fmt(row['arrival_to_mute_ms'])}  interrupted="
                     f"{row['story_interrupted']}")
                time.sleep(TURN_GAP_S)
            clock1 = caller.ev("bench.clock()")
            out["clock_end"] = clock1
            c0 = caller.clock0
            wall = clock1["perf"] - c0["perf"]
            ctx_ms = (clock1["frame"] - c0["frame"]) / RATE * 1000
            out["drift_ppm"] = (ctx_ms - wall) / wall * 1e6 if wall > 0 else None
            out["page_log"] = caller.ev("bench.log")
        finally:
            caller.close()
        out["server_log_tail"] = stack.server_log()[-3000:]
    return out


# ----------------------------------------------------------------- the direct path

async def direct_session(url: str, prompts: dict[str, Prompt], turns: list[str],
                         warmup: list[str], echo: Any) -> list[dict[str, Any]]:
    import websockets

    from rtc_agent.protocol import Dialect
    from rtc_agent.realtime.dialect import session_update
    from rtc_agent.realtime.settings import SessionSettings

    rows: list[dict[str, Any]] = []
    chunk = DIRECT_RATE * 2 // 50  # bytes of 20 ms
    silence = b"\0" * chunk
    queue: list[tuple[int, bytes]] = []  # (turn, 20 ms of its audio)
    first_of: dict[int, int] = {}  # turn -> the number of its first chunk
    clock = time.perf_counter
    async with websockets.connect(url + "?model=gpt-realtime", max_size=None) as ws:
        await ws.recv()
        # what a call sends (this tree's settings; the call adds its tools)
        await ws.send(json.dumps(session_update(Dialect.GA, SessionSettings(), [])))
        n_sent = 0
        t0 = clock()

        async def mic() -> None:
            # A microphone: chunk n goes out at t0 + (n - 1) x 20 ms (an absolute
            # schedule) and holds the 20 ms of sound that ended then.
            nonlocal n_sent
            while True:
                n_sent += 1
                data = silence
                if queue:
                    turn, data = queue.pop(0)
                    first_of.setdefault(turn, n_sent)
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(data).decode()}))
                delay = t0 + n_sent * 0.02 - clock()
                if delay > 0:
                    await asyncio.sleep(delay)

        events: list[tuple[float, dict]] = []
        got_event = asyncio.Event()

        async def reader() -> None:
            async for raw in ws:
                events.append((clock(), json.loads(raw)))
                got_event.set()

        tasks = [asyncio.create_task(mic()), asyncio.create_task(reader())]
        try:
            for i, text in enumerate([*warmup, *turns]):
                prompt = prompts[text]
                pcm = prompt.pcm24.astype("<i2").tobytes()
                mark = len(events)
                queue.extend((i, pcm[p:p + chunk].ljust(chunk, b"\0"))
                             for p in range(0, len(pcm), chunk))
                deadline = clock() + 40
                while not any(e.get("type") == "response.done" for _, e in events[mark:]):
                    if clock() > deadline:
                        raise RuntimeError(f"direct: no response.done for {text!r}")
                    got_event.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(got_event.wait(), 1)
                # speech end: the end of the last audible sample on the microphone's
                # timeline (the first chunk's sound started 20 ms before it went out)
                _, end = prompt.span24
                end_t = t0 + (first_of[i] - 2) * 0.02 + end / DIRECT_RATE
                mine = events[mark:]
                stopped = next((t for t, e in mine if e.get("type") ==
                                "input_audio_buffer.speech_stopped"), None)
                deltas = [(t, base64.b64decode(e["delta"])) for t, e in mine
                          if e.get("type") in ("response.output_audio.delta",
                                               "response.audio.delta")]
                done = next((e for t, e in mine if e.get("type") == "response.done"), {})
                if not deltas:
                    raise RuntimeError(f"direct: no reply audio for {text!r}: {done}")
                audio = np.frombuffer(b"".join(d for _, d in deltas), dtype="<i2")
                lead = audible_span(audio)[0]
                # arrival of the delta holding the first audible sample
                pos, holder = 0, deltas[0][0]
                for t, d in deltas:
                    if pos + len(d) // 2 > lead:
                        holder = t
                        break
                    pos += len(d) // 2
                first_t = deltas[0][0]
                heard_t = max(first_t + lead / DIRECT_RATE, holder)
                transcript = next((e.get("transcript") for _, e in mine if e.get("type") ==
                                   "conversation.item.input_audio_transcription.completed"),
                                  None)
                row: dict[str, Any] = {
                    "prompt": text, "heard_ms": (heard_t - end_t) * 1000,
                    "inbound_ms": (stopped - end_t) * 1000 if stopped else None,
                    "reply_start_ms": (first_t - stopped) * 1000 if stopped else None,
                    "lead_ms": lead / DIRECT_RATE * 1000,
                    "way_out_ms": (heard_t - first_t) * 1000 - lead / DIRECT_RATE * 1000,
                    "user_text": transcript, "reply_audio_ms": len(audio) / DIRECT_RATE * 1000,
                    "deltas": len(deltas),
                    "response_status": (done.get("response") or {}).get("status"),
                }
                if i >= len(warmup):
                    rows.append(row)
                    echo(f"direct  {text:28s} heard {fmt(row['heard_ms'])}  inbound "
                         f"{fmt(row['inbound_ms'])}  reply start {fmt(row['reply_start_ms'])}  "
                         f"lead {row['lead_ms']:.0f}")
                await asyncio.sleep(TURN_GAP_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return rows


def run_direct(tree: Path, work: Path, prompts: dict[str, Prompt], turns: list[str],
               echo: Any) -> dict[str, Any]:
    log = work / f"direct-{os.getpid()}-{time.monotonic_ns()}.log"
    with tree_env(tree, work) as env, open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rtc_agent.offline.command", "--host",
                                 "127.0.0.1", "--port", "0", "--tts", "piper"],
                                cwd=tree, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True, start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("REALTIME_URL"):
            raise RuntimeError(f"the direct backend did not start: {line!r}\n"
                               f"{log.read_text()[-2000:]}")
        url = line.split()[1]
        imports = check_imports(log.read_text(), tree, "the direct backend")
        warmup = list(dict.fromkeys(turns))
        # in a thread of its own: Playwright's sync API keeps an event loop in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rows = pool.submit(asyncio.run, direct_session(url, prompts, turns, warmup,
                                                           echo)).result()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return {"turns": rows, "imports": imports}


# ----------------------------------------------------------------- the report

def fmt(v: float | None) -> str:
    return f"{v:6.0f}" if v is not None else "     -"


def stat(values: list[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"n": len(vals), "p50": round(percentile(vals, 50) or 0.0, 1),
            "p95": round(percentile(vals, 95) or 0.0, 1),
            "min": round(min(vals), 1), "max": round(max(vals), 1),
            "mean": round(statistics.fmean(vals), 1)}


def summarize(web: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    wt, dt, bi = web["turns"], direct["turns"], web["barge_ins"]
    # a barge-in whose speech began in a pause of the story measures no cut
    good = [r for r in bi if not r["quiet_at_speech_start"]]
    lead = {}
    for text in {r["prompt"] for r in dt}:
        lead[text] = statistics.median(r["lead_ms"] for r in dt if r["prompt"] == text)
    way_out = [r["speaking_to_onset_ms"] - lead[r["prompt"]]
               if r["speaking_to_onset_ms"] is not None and r["prompt"] in lead else None
               for r in wt]
    s: dict[str, Any] = {
        "heard_webrtc": stat([r["heard_ms"] for r in wt]),
        "heard_direct": stat([r["heard_ms"] for r in dt]),
        "inbound_webrtc": stat([r["inbound_ms"] for r in wt]),
        "inbound_direct": stat([r["inbound_ms"] for r in dt]),
        "reply_start_webrtc": stat([r["reply_start_ms"] for r in wt]),
        "reply_start_direct": stat([r["reply_start_ms"] for r in dt]),
        "way_out_webrtc": stat(way_out),
        "way_out_direct": stat([r["way_out_ms"] for r in dt]),
        "lead_silence": stat([r["lead_ms"] for r in dt]),
        "jitter_buffer": stat([r["jb_delay_ms"] for r in wt]),
        "jitter_buffer_target": stat([r["jb_target_ms"] for r in wt]),
        "playout_delay": stat([r["playout_delay_ms"] for r in wt]),
        "user_speaking": stat([r["user_speaking_ms"] for r in wt]),
        "barge_arrival_to_silent": stat([r["arrival_to_silent_ms"] for r in good]),
        "barge_speech_to_arrival": stat([r["speech_to_arrival_ms"] for r in good]),
        "barge_speech_to_silent": stat([r["speech_to_silent_ms"] for r in good]),
        "barge_interrupted": sum(1 for r in bi if r["story_interrupted"]),
        "barge_total": len(bi),
        "barge_in_a_pause": len(bi) - len(good),
        "barge_arrival_to_mute": stat([r.get("arrival_to_mute_ms") for r in good]),
        "barge_arrival_to_heard_silent": stat([r.get("arrival_to_heard_silent_ms")
                                               for r in good]),
        "barge_mute_clipped_reply": sum(1 for r in bi if (r.get(
            "mute_restored_after_reply_onset_ms") or 0) > 0 or r.get("mute_never_restored")),
        "barge_muted": sum(1 for r in bi if r.get("arrival_to_mute_ms") is not None),
        "misheard_webrtc": sum(1 for r in wt if (r["user_text"] or "").strip(" .?").lower()
                               != r["prompt"]),
        "misheard_direct": sum(1 for r in dt if (r["user_text"] or "").strip(" .?").lower()
                               != r["prompt"]),
    }
    hw, hd = s["heard_webrtc"], s["heard_direct"]
    if hw and hd:
        s["overhead"] = {"p50": round(hw["p50"] - hd["p50"], 1),
                         "p95": round(hw["p95"] - hd["p95"], 1)}
    return s


ROWS = [
    ("heard latency", "heard_webrtc", "heard_direct"),
    ("inbound (speech end -> thinking | speech_stopped)", "inbound_webrtc", "inbound_direct"),
    ("reply start (thinking -> speaking | stopped -> delta)", "reply_start_webrtc",
     "reply_start_direct"),
    ("way out (speaking -> heard - lead)", "way_out_webrtc", "way_out_direct"),
    ("lead silence of the reply", None, "lead_silence"),
    ("jitter buffer, mean delay", "jitter_buffer", None),
    ("jitter buffer, target delay", "jitter_buffer_target", None),
    ("media-playout delay (element output)", "playout_delay", None),
    ("speech start -> user_speaking", "user_speaking", None),
    ("barge-in: user_speaking arrival -> silent", "barge_arrival_to_silent", None),
    ("barge-in: speech start -> user_speaking", "barge_speech_to_arrival", None),
    ("barge-in: speech start -> silent", "barge_speech_to_silent", None),
    ("barge-in (project page): arrival -> element muted", "barge_arrival_to_mute", None),
    ("barge-in (project page): arrival -> heard silent*", "barge_arrival_to_heard_silent",
     None),
]


def cell(s: dict[str, Any] | None) -> str:
    return f"{s['p50']:7.0f} {s['p95']:7.0f} {s['n']:3d}" if s else f"{'-':>7} {'-':>7} {'':3}"


def table(name: str, s: dict[str, Any]) -> str:
    lines = [f"== {name}  (ms; p50 p95 n)",
             f"{'':54s} {'webrtc':>19s}   {'direct':>19s}"]
    for label, w, d in ROWS:
        lines.append(f"{label:54s} {cell(s.get(w) if w else None)}   "
                     f"{cell(s.get(d) if d else None)}")
    if "overhead" in s:
        lines.append(f"{'overhead (webrtc - direct)':54s} {s['overhead']['p50']:7.0f} "
                     f"{s['overhead']['p95']:7.0f}")
    if s["barge_muted"]:
        lines.append(f"* modelled: the earlier of the stream going silent and the page muting "
                     f"its <audio> element ({s['barge_muted']} barge-ins muted; "
                     f"{s['barge_mute_clipped_reply']} where the mute outlasted the start of "
                     f"the next reply or never ended)")
    lines.append(f"barge-ins interrupted: {s['barge_interrupted']}/{s['barge_total']} "
                 f"({s['barge_in_a_pause']} began in a pause of the story: not counted); "
                 f"misheard prompts: webrtc {s['misheard_webrtc']}, direct "
                 f"{s['misheard_direct']}")
    return "\n".join(lines)


def difference(base: str, other: str, a: dict[str, Any], b: dict[str, Any]) -> str:
    lines = [f"== {other} minus {base}  (ms; p50 p95)"]
    for label, w, d in ROWS:
        for key, path in ((w, "webrtc"), (d, "direct")):
            if key and a.get(key) and b.get(key):
                lines.append(f"{label + ' [' + path + ']':64s} "
                             f"{b[key]['p50'] - a[key]['p50']:+7.0f} "
                             f"{b[key]['p95'] - a[key]['p95']:+7.0f}")
    if "overhead" in a and "overhead" in b:
        lines.append(f"{'overhead':64s} {b['overhead']['p50'] - a['overhead']['p50']:+7.0f} "
                     f"{b['overhead']['p95'] - a['overhead']['p95']:+7.0f}")
    return "\n".join(lines)


# ----------------------------------------------------------------- main

def parse_trees(specs: list[str]) -> dict[str, Path]:
    trees: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--tree wants NAME=PATH, not {spec!r}")
        p = Path(path).resolve()
        if not (p / "rtc_agent" / "__init__.py").is_file():
            raise SystemExit(f"--tree {spec}: no rtc_agent package there")
        trees[name] = p
    return trees or {"main": ROOT}


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join((__doc__ or "").splitlines()[2:8]))
    ap.add_argument("--turns", type=int, default=20, help="turns per path and tree")
    ap.add_argument("--barge-ins", type=int, default=10, help="barge-ins per tree")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout to run the server from (repeatable; default: this one)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per tree, alternating trees (default 1; 2 with several trees)")
    ap.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                    help="a turn's prompt (repeatable; default: four the backend answers)")
    ap.add_argument("--page", choices=("bench", "project"), default="bench",
                    help="the bench's own page, or the project's (web/) with a fake mic")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="an extra argument for rtc-agent serve (repeatable)")
    ap.add_argument("--tree-arg", action="append", default=[], metavar="NAME=ARG",
                    help="an extra argument for one tree's serve (repeatable), e.g. two "
                         "names for one checkout: --tree a=. --tree b=. --tree-arg b=--ptime=10")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"needs {', '.join(missing)}")
    trees = parse_trees(args.tree)
    tree_args: dict[str, list[str]] = {name: list(args.serve_arg) for name in trees}
    for spec in args.tree_arg:
        name, sep, arg = spec.partition("=")
        if not sep or name not in trees or not arg:
            raise SystemExit(f"--tree-arg wants NAME=ARG with a --tree NAME, not {spec!r}")
        tree_args[name].append(arg)
    rounds = args.rounds or (2 if len(trees) > 1 else 1)
    texts = args.prompt or PROMPTS
    prompts = make_prompts(list(dict.fromkeys([*texts, STORY_PROMPT, *INTERRUPTS])))
    turn_list = [texts[k % len(texts)] for k in range(args.turns)]
    per_round = split(args.turns, rounds)
    barges_per_round = split(args.barge_ins, rounds)
    rng = random.Random(args.seed)

    def echo(line: str) -> None:
        print(line, flush=True)

    results: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:], "page": args.page, "cores": os.cpu_count(),
        "loadavg_start": loadavg(),
        "bench": git_info(ROOT)["head"], "audible_level": AUDIBLE / 32768,
        "barge_quiet_s": BARGE_QUIET_S,
        "prompts": {t: {"speech_ms_48k": [v / RATE * 1000 for v in p.span48],
                        "speech_ms_24k": [v / DIRECT_RATE * 1000 for v in p.span24]}
                    for t, p in prompts.items()},
        "trees": {name: {**git_info(path), "serve_args": tree_args[name], "rounds": []}
                  for name, path in trees.items()},
    }
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-browser-latency-") as tmp, \
            sync_playwright() as pw:
        work = Path(tmp)
        done = 0
        for r in range(rounds):
            for name, path in trees.items():
                mine = turn_list[done:done + per_round[r]]
                echo(f"-- round {r + 1}/{rounds}, tree {name} ({path}"
                     f"{' ' + ' '.join(tree_args[name]) if tree_args[name] else ''}): "
                     f"{len(mine)} turns, {barges_per_round[r]} barge-ins; load {loadavg()}")
                web = run_webrtc(pw, work, path, prompts, mine, barges_per_round[r], rng,
                                 tree_args[name], echo, args.page)
                direct = run_direct(path, work, prompts, mine, echo)
                results["trees"][name]["rounds"].append({"webrtc": web, "direct": direct,
                                                         "loadavg": loadavg()})
            done += per_round[r]
    results["loadavg_end"] = loadavg()
    summaries: dict[str, Any] = {}
    for name, tree in results["trees"].items():
        web = {"turns": [t for rd in tree["rounds"] for t in rd["webrtc"]["turns"]],
               "barge_ins": [b for rd in tree["rounds"] for b in rd["webrtc"]["barge_ins"]]}
        direct = {"turns": [t for rd in tree["rounds"] for t in rd["direct"]["turns"]]}
        summaries[name] = tree["summary"] = summarize(web, direct)
        print(table(f"{name}: {tree['path']} @ {tree['head'][:12]}"
                    f"{' + uncommitted changes' if tree['uncommitted'] else ''}"
                    f"{' serve ' + ' '.join(tree['serve_args']) if tree['serve_args'] else ''}",
                    summaries[name]))
    names = list(summaries)
    for other in names[1:]:
        print(difference(names[0], other, summaries[names[0]], summaries[other]))
    print(f"load average: start {results['loadavg_start']}, end {results['loadavg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
