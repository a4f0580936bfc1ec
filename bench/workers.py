"""CPU per call of `rtc-agent serve`: --workers 2 vs 1, metrics on vs off, or any A/B; forwarding.

One command, one run, same machine; everything it starts is stopped at the end (also on
Ctrl-C, SIGTERM or an error), by PID or by the process group it created.

Three comparisons share the machinery of part 1 (nodes, callers, window, speed probe, holds):
`--compare workers` (the default; parts 1 and 2 below), and two single-worker comparisons
of the same calls: `--compare metrics` (part 3) and `--compare args` (part 4).

1. CPU per call per worker, `--workers 2` against `--workers 1`, at the same calls per
   worker (`--calls-per-worker n`, default 8):
   config A = one node `serve --workers 1` with n calls; config B = one node
   `serve --workers 2` with 2n calls. Run A, B, A, B (`--rounds 2`), each on a freshly
   started node, to show the run-to-run spread. `--max-calls` is the node's and split
   evenly between its workers, so it is set to (n + 2) per worker.
   Callers: `rtc-agent loadtest` over `--caller-procs` processes (default 2, so they do
   not all sit on one core), under `nice -n 19`. Each call speaks a piper-spoken "what
   is twelve times seven" (tests/speech.py `speak_wav`), waits for the reply, lets it
   play, pauses `--pause` s (default 10: long enough that the node's one offline backend
   keeps up with B's 2n calls; at 5 s it fell seconds behind on this 2-core machine) and
   speaks again. Calls start 0.5 s apart (at most `--ramp` s in all), so their turns do
   not reach the backend all at once.
   Priorities, no pinning: the node's offline backend (one child per node: the child of
   the node process that is not a worker) is reniced to `--backend-nice` (default 10,
   every thread, with its speech recognition processes; their CPU counts as the
   backend's), so the workers win the 2 cores whenever they compete. Nothing is
   pinned: with two workers on a 2-core machine there is no core to spare.
   Window: every 0.5 s the script reads /healthz (each worker's pid and calls) and /proc:
   utime + stime of each worker, the supervisor, the backend, every caller process, and
   the machine's busy time (cores x wall - idle - iowait: /proc/stat's tick-sampled
   user/system miss short 20 ms-periodic bursts on a tickless kernel; the tick-counted
   figure of bench/call_cost.py is kept in the JSON as `machine_ticks`). The window opens
   1 s after /healthz first lists all the calls and lasts `--window` s (default 40;
   shorter, and flagged, if a call ends early). Per worker: its CPU % of a core over the
   window / its calls (which must not change in the window) = CPU % per call per worker.
   B/A is that figure (all of a config's worker CPU over all its calls) of B over A,
   per round and over all rounds (target: <= 1.1).
   A fixed pure-Python loop is timed every 2 s in the window (`speed probe`): on this
   kind of VM the same work costs 15-26 ms of CPU from one moment to the next, so it
   hints at how fast the machine was during each run.
   "Holds": every call connected and received >= 49 frames/s with its received stream
   lagging its own schedule by < 100 ms (p95), as in bench/call_cost.py. The callers'
   own send lag is shown beside it: late (starved) callers fail it too. The loadtest
   reads frames/s from RTP media time (a DTX gap counts as the time it stands for) and
   the lag over audible frames only, so a call that heard no reply has no lag figure:
   that alone does not fail it (shown as "n no reply audio" in the lag column).
   Workload check: a worker's cost per call grows with the reply audio it encodes, and
   B's backend serves twice the calls, so the share of the window in which the agent
   talked is computed for A and B from the loadtest's turns, with what that difference
   alone moves B/A.
2. Offer-to-answer time through a forwarding node vs direct (`--offers`, default 60 per
   path): a redis-server (loopback, no persistence) and two nodes on it, each
   `--workers 1`; node A has `--max-calls 0`, so it forwards every offer to node B.
   One real aiortc offer (audio transceiver + "events" data channel, host candidates
   restricted to 127.0.0.1) is POSTed again and again, alternating direct to B and via A
   (which goes first swaps every time; `--warmup` untimed offers per path first); the
   time is POST -> 200 answer body read, on a fresh TCP connection each time. Each
   call's owner is read from Redis (`rtc-agent:call:<id>`), then the call is hung up
   with DELETE /calls/{id} on the node it was posted to (which must answer 200). At the
   end node B's /healthz `calls_total` must have grown by the number of offers and node
   A's not at all.
3. `--compare metrics`: what the per-call metrics (Prometheus, rtc_agent/observability/)
   cost, at the same calls (`--calls N`, default 20) on one worker: config A = `serve
   --workers 1` (metrics on, the default), config B = `serve --workers 1 --no-metrics`.
   A, B, A, B (`--rounds`), each on a fresh node, with part 1's callers, priorities,
   window, speed probe and "holds". Reported: CPU % of a core per call of each run, A/B
   (metrics on / off) per round and over all rounds, raw and scaled by the speed probe,
   and "metrics cost: +x.x % CPU per call" (A/B - 1; target < 3 %). Once the window of
   a run has closed (its last sample taken), /metrics is scraped once:
   `rtc_agent_turn_latency_seconds_count` and `rtc_agent_calls_active` go to the JSON, to
   show metrics were on in A (turns counted) and off in B (the count stays 0; calls are
   still counted). No forwarding part in this mode.
4. `--compare args`: a generic A/B of CPU per call, run as part 3 (`serve --workers 1`,
   `--calls N` calls, default 20; A, B, A, B on fresh nodes; no /metrics scrape, no
   forwarding part). `--a-arg ARG` / `--b-arg ARG` (repeatable) add ARG to A's or B's
   `serve` only, on top of `--serve-arg` (both), e.g. `--b-arg=--ptime=10` or
   `--a-arg=--no-dtx`. `--a-tree PATH` / `--b-tree PATH` run that side's server from
   another checkout of the project (e.g. a `git worktree` of an older commit): the same
   python, with PYTHONPATH=PATH and cwd PATH, so that tree's `rtc_agent` is imported.
   Before any run each side's tree is probed with that environment: where `rtc_agent`
   is imported from (it must be inside the tree, or the script stops), its `git
   rev-parse HEAD` and uncommitted changes, and the flags its `serve --help` lists; a
   `--serve-arg` flag the tree does not know is left out of that side (and reported), a
   side's own `--a-arg`/`--b-arg` it does not know is an error. Each node's and worker's
   cwd and PYTHONPATH are read from /proc once it is up (`node.tree_check` in the JSON).
   The callers are always this checkout's `rtc-agent loadtest`. Reported: CPU % of a
   core per call of each run, B/A per round and over all rounds, raw and scaled by the
   speed probe, and "B costs x.x % CPU per call more/less than A" (B/A - 1; target
   |B/A - 1| <= `--target-pct`, default 5); the JSON has each side's tree, HEAD and args
   under `sides`, the cost under `args_cost`.

Reproduce (5-6 minutes with the defaults):

    .venv/bin/python bench/workers.py --json bench/results/workers.json

A short check (about 3 minutes):

    .venv/bin/python bench/workers.py --calls-per-worker 4 --window 15 --offers 20 \
        --json /tmp/workers-short.json

The metrics' cost at 20 calls (about 5 minutes):

    .venv/bin/python bench/workers.py --compare metrics --json bench/results/metrics-cost.json

An A/B at 20 calls (about 5 minutes), e.g. this checkout against the worktree of an older
commit (`git worktree add /work/before-14 <commit>`), or 10 ms packets against 20 ms:

    .venv/bin/python bench/workers.py --compare args --a-tree /work/before-14 \
        --json bench/results/args-before-14.json
    .venv/bin/python bench/workers.py --compare args --b-arg=--ptime=10 \
        --json bench/results/args-ptime-10.json

`--serve-arg=ARG` (repeatable) adds ARG to every `rtc-agent serve` of either comparison, e.g.
`--serve-arg=--no-metrics` to compare workers without the per-call metrics.

Server logs and each run's loadtest JSON stay in `--work-dir` (printed; default a new
folder in /tmp); the `--json` file holds every figure, sample and offer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.*, tests.*

from bench.call_cost import (
    CLK_TCK,
    PROMPT_TEXT,
    PY,
    ROOT,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    offline_env,
    thread_cpu_seconds,
)
from rtc_agent.loadtest.metrics import summarize

SAMPLE_S = 0.5
PROBE_EVERY = 4  # samples between two speed probes (2 s)
SETTLE_S = 1.0  # after the last call is up, before the window opens
# What a talking call costs a worker over a silent one, % of a core: Opus encoding of
# the reply (67.5 us per 20 ms frame) plus handling its deltas (5.4 us), from
# docs/benchmarks.md "Media path". Used only to say how much a difference in how much
# the agent talked in A and B moves B/A.
TALK_COST_PCT = 100 * (67.5 + 5.4) / 20_000
REPLY_END_SILENCE_S = 1.0  # the loadtest's: a reply has ended after 1 s of silence
CORES = os.cpu_count() or 1
METRICS_COST_TARGET_PCT = 3.0  # --compare metrics: A/B - 1 must stay under this
ARGS_TARGET_PCT = 5.0  # --compare args: |B/A - 1| must stay within this
SCRAPED = ("rtc_agent_turn_latency_seconds_count", "rtc_agent_calls_active")
_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)")


class Stop(Exception):
    """SIGTERM to this script: unwind and stop everything, as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stop(f"signal {signum}")


# ------------------------------------------------------------------ processes


def machine_idle_seconds() -> tuple[float, float]:
    """(idle + iowait of all cores, busy as call_cost.py counts it), CPU seconds since boot.

    With a tickless kernel /proc/stat's idle is measured exactly, but user/system/nice
    are sampled at timer ticks, and ticks stop while a core idles: processes that wake
    every 20 ms and run for a millisecond (a media server) are missed by many ticks. So
    busy = cores x wall - idle is the figure used; the tick-counted one is kept as well."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[3] + v[4]) / CLK_TCK, machine_busy_seconds()


def speed_probe_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (~20 ms).

    On this kind of VM the same work takes 15-26 ms of CPU time from one moment to the
    next, with nothing else running in the guest (the host's load shows up as slower
    CPU, not as steal time). Probed every 2 s in the window, it tells a reader how fast
    the machine was while A or B ran."""
    t = time.process_time()
    x = 0
    for i in range(250_000):
        x += i * i % 7
    return (time.process_time() - t) * 1000


def children(pid: int) -> list[int]:
    """Direct children of pid (every thread's)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def renice_all_threads(pid: int, nice: int) -> int:
    """Linux nice values are per thread: set every current thread of pid; how many."""
    done = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
                done += 1
    return done


def health(url: str) -> dict[str, Any]:
    """/healthz's body (a 503 while draining still has one), or {} when unreachable."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raw = err.read()
    except OSError:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def scrape_metrics(url: str, names: tuple[str, ...] = SCRAPED) -> dict[str, Any]:
    """GET /metrics once: each of `names` summed over its label sets (None: not there)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return {"status": err.code, **dict.fromkeys(names)}
    except OSError as err:
        return {"error": f"{type(err).__name__}: {err}", **dict.fromkeys(names)}
    values: dict[str, Any] = dict.fromkeys(names)
    for line in text.splitlines():
        m = _SERIES.match(line)
        if m and m[1] in values:
            values[m[1]] = (values[m[1]] or 0.0) + float(m[2])
    return {"status": status, "bytes": len(text), **values}


def tree_env(tree: Path | None) -> dict[str, str]:
    """offline_env(), importing `rtc_agent` from `tree` (None: this checkout, as installed)."""
    env = offline_env()
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            x for x in (str(tree), env.get("PYTHONPATH", "")) if x)
    return env


def probe_tree(tree: Path | None) -> dict[str, Any]:
    """What a node started from `tree` runs: where `rtc_agent` is imported from (with the
    node's environment and cwd), the tree's HEAD and uncommitted changes, and the long
    flags its `serve --help` lists."""
    root = tree or ROOT
    env, info = tree_env(tree), {"tree": str(root)}

    def run(cmd: list[str]) -> str:
        done = subprocess.run(cmd, cwd=root, env=env, text=True, capture_output=True,
                              timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} in {root} exited {done.returncode}:\n"
                               f"{done.stderr[-2000:]}")
        return done.stdout

    # `python -m rtc_agent.cli serve --help`, printing first where rtc_agent came from
    out = run([PY, "-c", "import sys, rtc_agent.serve; print(rtc_agent.serve.__file__); "
               "from rtc_agent.cli import main; sys.exit(main(['serve', '--help']))"])
    imported, _, helptext = out.partition("\n")
    info["rtc_agent"] = str(Path(imported).parent)
    info["imports_from_tree"] = Path(imported).resolve().is_relative_to(root.resolve())
    info["head"] = run(["git", "rev-parse", "HEAD"]).strip()
    info["uncommitted_changes"] = bool(run(["git", "status", "--porcelain",
                                            "--untracked-files=no"]).strip())
    info["flags"] = sorted(set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", helptext)))
    return info


def known_args(extra: tuple[str, ...], flags: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(the arguments a tree's `serve` knows, the ones left out). A long option is known
    when its `serve --help` lists it (`--x=v` is `--x`); the value after an unknown
    `--x` (not starting with "-") goes with it."""
    kept: list[str] = []
    dropped: list[str] = []
    dropping = False
    for arg in extra:
        if arg.startswith("-"):
            dropping = arg.startswith("--") and arg.split("=", 1)[0] not in flags
            if dropping:
                dropped.append(arg)
                dropping = "=" not in arg  # its value may follow
            else:
                kept.append(arg)
        elif dropping:
            dropped.append(arg)
            dropping = False
        else:
            kept.append(arg)
    return tuple(kept), dropped


class ServeNode:
    """`rtc-agent serve` on a free loopback port, in its own session, logging to a file.

    `tree`: run another checkout's `rtc_agent` (PYTHONPATH and cwd = tree; its workers
    inherit both), checked in /proc once the node is up (`tree_check`).

    Stopping: SIGTERM twice (drain, then end every call at once), SIGKILL after 20 s;
    then any worker or backend of it still alive is killed by PID (they exit with their
    supervisor by themselves; this is the belt to those braces)."""

    def __init__(self, work: Path, name: str, workers: int, max_calls: int,
                 extra: tuple[str, ...] = (), tree: Path | None = None) -> None:
        self.name = name
        self.tree = tree
        self.tree_check: dict[str, Any] = {}
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"serve-{name}.log"
        self.cmd = [PY, "-m", "rtc_agent.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--ice-address", "127.0.0.1",
                    "--workers", str(workers), "--max-calls", str(max_calls),
                    "--node-id", name, "--log-level", "WARNING", *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []
        self.backend_pid: int | None = None
        self.started_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=tree_env(self.tree),
                                         cwd=self.tree or ROOT, start_new_session=True)
        deadline = t0 + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            body = health(self.url)
            workers = body.get("workers") or []
            if (body.get("ok") and body.get("backend_state") == "up"
                    and len(workers) == self.workers):
                self.worker_pids = [int(w["pid"]) for w in workers]
                others = [p for p in children(self.pid) if p not in self.worker_pids]
                self.backend_pid = others[0] if len(others) == 1 else None
                self.started_s = time.monotonic() - t0
                if self.tree is not None:
                    self.check_tree()
                return body
            time.sleep(0.3)
        raise RuntimeError(f"node {self.name} not ready after {timeout} s ({body}):\n"
                           f"{self.tail()}")

    def check_tree(self) -> None:
        """The node's and each worker's cwd and first PYTHONPATH entry must be the tree."""
        assert self.tree is not None
        want = str(self.tree.resolve())
        seen: dict[str, Any] = {}
        for pid in (self.pid, *self.worker_pids):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError as err:
                seen[str(pid)] = {"error": str(err)}
                continue
            path = next((e[len(b"PYTHONPATH="):].decode() for e in env
                         if e.startswith(b"PYTHONPATH=")), "")
            first = path.split(os.pathsep)[0]
            seen[str(pid)] = {"cwd": cwd, "pythonpath": path,
                              "ok": cwd == want and bool(first)
                              and str(Path(first).resolve()) == want}
        self.tree_check = {"tree": want, "ok": all(v.get("ok") for v in seen.values()),
                           "processes": seen}
        if not self.tree_check["ok"]:
            raise RuntimeError(f"node {self.name} does not run from {want}: {seen}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        mine = set(self.worker_pids) | ({self.backend_pid} if self.backend_pid else set())
        mine |= set(descendants(proc.pid)) - {proc.pid}
        from tests.cluster.nodes import stop_node

        stop_node(proc)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in mine) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in mine:
            if alive(p) and "rtc_agent" in cmdline(p):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_findings(self, limit: int = 12) -> dict[str, Any]:
        """Warnings, errors and tracebacks in the node's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {"lines": 0, "notable": []}
        notable = [ln for ln in text.splitlines()
                   if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Exception", ln)]
        return {"lines": len(text.splitlines()), "count": len(notable),
                "notable": notable[:limit]}


@contextlib.contextmanager
def running(node: ServeNode) -> Iterator[ServeNode]:
    try:
        yield node
    finally:
        node.stop()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """A child started with start_new_session: its process group is its pid."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(OSError):  # runner processes left in the group
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


# ------------------------------------------------------------------ 1. CPU per call


@dataclass
class Sample:
    t: float
    calls: int
    worker_calls: dict[int, int]  # pid -> calls, from /healthz
    worker_cpu_field: dict[int, float]  # pid -> /healthz "cpu" (cores, last second)
    cpu: dict[str, float]  # name -> CPU seconds
    callers: dict[int, float]  # caller pid -> CPU seconds


@dataclass(frozen=True)
class Config:
    """One side of a comparison: a node's workers, its calls (split evenly between the
    workers), what it adds to `rtc-agent serve`'s arguments and the checkout it runs
    (None: this one)."""

    label: str
    workers: int
    calls: int
    serve_args: tuple[str, ...] = ()
    tree: Path | None = None

    @property
    def describe(self) -> str:
        text = " ".join(("--workers", str(self.workers), *self.serve_args))
        return text if self.tree is None else f"{text} [tree {self.tree}]"


@dataclass(frozen=True)
class Comparison:
    """Two configs run A, B, A, B ..., and the ratio of their CPU per call that is reported:
    `num` over the other one, which must stay under `target` (at or under: not `strict`;
    `band`: within 1 +- (target - 1), either way).

    `single`: a single-worker comparison (one worker, the same calls in A and B), whose
    ratio minus 1 is also reported as a cost in % (`title` heads its table)."""

    name: str
    a: Config
    b: Config
    num: str  # "B": B/A; "A": A/B
    target: float
    strict: bool
    what: str  # what the ratio compares, for the report
    scrape_metrics: bool  # /metrics once after each window
    single: bool = False
    band: bool = False
    title: str = ""

    @property
    def ratio_name(self) -> str:
        return "B/A" if self.num == "B" else "A/B"

    @property
    def target_pct(self) -> float:
        return round(100 * (self.target - 1), 6)

    @property
    def target_text(self) -> str:
        if self.band:
            return f"{2 - self.target:g} to {self.target:g}"
        return f"{'<' if self.strict else '<='} {self.target:g}"

    def met(self, ratio: float | None) -> bool:
        if ratio is None:
            return False
        if self.band:  # 1e-12: 1.05 - 1 is a hair over 0.05
            return abs(ratio - 1) <= self.target - 1 + 1e-12
        return ratio < self.target if self.strict else ratio <= self.target


def comparison(args: argparse.Namespace, sides: dict[str, dict[str, Any]] | None = None
               ) -> Comparison:
    """`sides` (--compare args): probe_tree() of A's and B's tree, whose flags decide
    which of the --serve-arg arguments each side gets."""
    extra = tuple(args.serve_arg)
    if args.compare == "metrics":
        n = args.calls
        a, b = Config("A", 1, n, extra), Config("B", 1, n, (*extra, "--no-metrics"))
        return Comparison("metrics", a, b, num="A",
                          target=1 + args.target_pct / 100, strict=True,
                          what="metrics on / off, --workers 1", scrape_metrics=True,
                          single=True, title=f"metrics on (A: {a.describe}) vs off (B: "
                                             f"{b.describe})")
    if args.compare == "args":
        assert sides is not None
        n = args.calls
        cfgs: list[Config] = []
        for label, own, tree in (("A", args.a_arg, args.a_tree), ("B", args.b_arg,
                                                                   args.b_tree)):
            side = sides[label]
            common, side["serve_args_left_out"] = known_args(extra, side["flags"])
            side["serve_args"] = [*common, *own]
            cfgs.append(Config(label, 1, n, (*common, *own), tree))
        a, b = cfgs
        return Comparison("args", a, b, num="B", target=1 + args.target_pct / 100,
                          strict=False, band=True, what="B over A, --workers 1",
                          scrape_metrics=False, single=True,
                          title=f"A ({a.describe}) vs B ({b.describe})")
    n = args.calls_per_worker
    return Comparison("workers", Config("A", 1, n, extra), Config("B", 2, 2 * n, extra),
                      num="B", target=1.1, strict=False,
                      what="--workers 2 over --workers 1", scrape_metrics=False)


@dataclass
class CpuRun:
    label: str
    round: int
    workers: int
    calls: int
    config: str = ""
    node: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    processes_pct: dict[str, float] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    metrics_scrape: dict[str, Any] | None = None

    @property
    def cpu_per_call_pct(self) -> float | None:
        """All of the node's worker CPU over all its calls (% of a core per call)."""
        cpu = sum(w["cpu_pct"] for w in self.per_worker)
        calls = sum(w["calls"] for w in self.per_worker)
        return cpu / calls if self.per_worker and calls else None


def sample(node: ServeNode, loadtest_pid: int) -> Sample:
    h = health(node.url)
    workers = h.get("workers") or []
    idle, ticks = machine_idle_seconds()
    t = time.monotonic()
    cpu: dict[str, float] = {"machine_idle": idle, "machine_ticks": ticks}
    for w in workers:
        pid = int(w["pid"])
        with contextlib.suppress(OSError):
            cpu[f"worker:{pid}"] = cpu_seconds(pid)
            main, other = thread_cpu_seconds(pid)
            cpu[f"worker_main:{pid}"], cpu[f"worker_threads:{pid}"] = main, other
    if node.workers > 1:
        with contextlib.suppress(OSError):
            cpu["supervisor"] = cpu_seconds(node.pid)
    if node.backend_pid:
        backend = 0.0
        for pid in descendants(node.backend_pid):  # with its speech recognition processes
            with contextlib.suppress(OSError):
                backend += cpu_seconds(pid)
        cpu["backend"] = backend
    callers: dict[int, float] = {}
    for pid in descendants(loadtest_pid):
        with contextlib.suppress(OSError):
            callers[pid] = cpu_seconds(pid)
    return Sample(t, int(h.get("calls", -1)),
                  {int(w["pid"]): int(w["calls"]) for w in workers},
                  {int(w["pid"]): float(w.get("cpu", 0.0)) for w in workers}, cpu, callers)


def run_cpu(cfg: Config, rnd: int, args: argparse.Namespace, prompt: Path, work: Path,
            scrape: bool = False) -> CpuRun:
    """One run of one config on a fresh node. `scrape`: GET /metrics once, right after the
    sample that closes the window (so its cost falls outside it; if the window never
    closes while the calls run, after the calls)."""
    label, workers, calls = cfg.label, cfg.workers, cfg.calls
    run = CpuRun(label, rnd, workers, calls, cfg.describe)
    node = ServeNode(work, f"{label.lower()}{rnd}", workers, calls + 2 * workers,
                     cfg.serve_args, cfg.tree)
    with running(node):
        body = node.start()
        reniced = 0
        if node.backend_pid and args.backend_nice:
            # Its speech recognition processes too (started by it, after it listens).
            reniced = sum(renice_all_threads(pid, args.backend_nice)
                          for pid in descendants(node.backend_pid))
        run.node = {"name": node.name, "pid": node.pid, "workers": node.worker_pids,
                    "backend_pid": node.backend_pid, "backend_threads_reniced": reniced,
                    "start_s": round(node.started_s, 2), "capacity": body.get("capacity"),
                    "worker_capacity": [w["capacity"] for w in body["workers"]]}
        if node.tree_check:
            run.node["tree_check"] = node.tree_check
        out = work / f"loadtest-{node.name}.json"
        # Calls start spread out, so their turns do not all reach the backend at once.
        ramp = min(args.ramp, calls * 0.5)
        # The window opens once every call is up (process start 3 s + ramp + connect). A
        # call starts no turn that would pause past `duration`, so it may stop up to a
        # pause before it: `duration` covers the window plus one pause.
        duration = 3.0 + ramp + 3.0 + SETTLE_S + args.window + args.pause
        procs = max(1, min(args.caller_procs, calls))
        cmd = ["nice", "-n", str(args.caller_nice), PY, "-m", "rtc_agent.cli", "loadtest",
               "--url", node.url, "--calls", str(calls), "--ramp", str(ramp),
               "--duration", str(duration), "--prompts", str(prompt), "--json", str(out),
               "--pause", str(args.pause), "--turn-timeout", "15", "--procs", str(procs)]
        with (work / f"loadtest-{node.name}.log").open("wb") as lt_log:
            lt = subprocess.Popen(cmd, stdout=lt_log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=offline_env(), cwd=ROOT,
                                  start_new_session=True)
        samples: list[Sample] = []
        probes: list[tuple[float, float]] = []
        try:
            hard = time.monotonic() + duration + 90
            while lt.poll() is None and time.monotonic() < hard:
                samples.append(sample(node, lt.pid))
                if len(samples) % PROBE_EVERY == 0:
                    probes.append((time.monotonic(), speed_probe_ms()))
                if scrape and run.metrics_scrape is None:
                    span = _window_span(samples, calls, args.window)
                    if isinstance(span, tuple) and span[1] < len(samples) - 1:
                        run.metrics_scrape = _scrape(node, samples, "window closed")
                time.sleep(SAMPLE_S)
            if scrape and run.metrics_scrape is None:
                run.metrics_scrape = _scrape(node, samples, "after the calls")
        finally:
            stop_group(lt)
        run.log = node.log_findings()
    run.samples = [{"t": round(s.t - samples[0].t, 2), "calls": s.calls,
                    "worker_calls": s.worker_calls, "worker_cpu_field": s.worker_cpu_field,
                    "cpu": {k: round(v, 3) for k, v in s.cpu.items()},
                    "callers": round(sum(s.callers.values()), 3)} for s in samples]
    _window(run, samples, args.window)
    if run.window.get("seconds"):
        w0 = run.window["t_open"]
        inside = [ms for t, ms in probes if w0 <= t <= w0 + run.window["seconds"]]
        run.window["speed_probe_ms"] = sum(inside) / len(inside) if inside else None
        run.window["speed_probes"] = [round(ms, 2) for ms in inside]
    doc = json.loads(out.read_text()) if out.exists() else None
    run.media = _media(doc, calls, lt.returncode)
    if doc is not None and run.window.get("seconds"):
        run.media["talk"] = _talk_share(doc, samples, run, args.pause)
    return run


def _scrape(node: ServeNode, samples: list[Sample], when: str) -> dict[str, Any]:
    t = time.monotonic()
    got = scrape_metrics(node.url)
    return {"when": when, "t": round(t - samples[0].t, 2) if samples else None,
            "calls_at_last_sample": samples[-1].calls if samples else None, **got}


def _talk_share(doc: dict[str, Any], samples: list[Sample], run: CpuRun,
                pause: float) -> dict[str, Any]:
    """How much of the window the agent was talking, over all calls (0..1).

    Each worker's cost per call grows with the reply audio it encodes (silence is one
    cached packet), so A and B compare fairly only when their calls hear as much reply
    per second. A reply runs from `heard_s` to the caller's next prompt minus its pause
    and the loadtest's 1 s of silence that ends a reply (the last reply of a call: the
    median length of the others). Loadtest times are put on our clock by matching the
    last call's connection with the first sample that listed every call (+-0.5 s)."""
    calls = doc.get("calls", [])
    connected = [c["connected_s"] for c in calls if c.get("connected_s") is not None]
    full = next((s.t for s in samples if s.calls == run.calls), None)
    if not connected or full is None:
        return {}
    t0 = full - max(connected) - SAMPLE_S / 2  # loadtest time 0 on our clock
    w0 = run.window["t_open"] - t0
    w1 = w0 + run.window["seconds"]
    spans: list[tuple[float, float | None]] = []
    lengths: list[float] = []
    for c in calls:
        turns = c.get("turns", [])
        for k, t in enumerate(turns):
            if t.get("heard_s") is None:
                continue
            end = None
            if k + 1 < len(turns):
                end = turns[k + 1]["start_s"] - pause - REPLY_END_SILENCE_S
                if end > t["heard_s"]:
                    lengths.append(end - t["heard_s"])
                else:
                    end = None
            spans.append((t["heard_s"], end))
    typical = sorted(lengths)[len(lengths) // 2] if lengths else 2.0
    talk = 0.0
    heard_in_window = 0
    for start, end in spans:
        stop = end if end is not None else start + typical
        talk += max(0.0, min(stop, w1) - max(start, w0))
        heard_in_window += w0 <= start < w1
    return {"share": talk / (run.calls * (w1 - w0)), "reply_s_median": typical,
            "replies_started_in_window": heard_in_window,
            "replies_per_call_minute": 60 * heard_in_window / (run.calls * (w1 - w0))}


def _window_span(samples: list[Sample], calls: int, window: float
                 ) -> tuple[int, int] | dict[str, Any]:
    """Indices of the window's first and last samples, or why there is none.

    It opens at the first sample SETTLE_S after /healthz first listed all the calls, and
    holds the samples that follow while all calls stay up, up to `window` s (+0.25). The
    same samples give the same span whether or not more samples follow the last one, so
    run_cpu can tell from the samples so far that the window has closed."""
    full = [i for i, s in enumerate(samples) if s.calls == calls]
    if not full:
        return {"ok": False, "why": "never all calls up at once",
                "max_calls_seen": max((s.calls for s in samples), default=0)}
    t_open = samples[full[0]].t + SETTLE_S
    a_i = next((i for i in full if samples[i].t >= t_open), None)
    if a_i is None:
        return {"ok": False, "why": "all calls up too briefly"}
    b_i = a_i
    for i in range(a_i, len(samples)):  # contiguous: all calls up, within the window
        if samples[i].calls != calls or samples[i].t - samples[a_i].t > window + 0.25:
            break
        b_i = i
    return a_i, b_i


def _window(run: CpuRun, samples: list[Sample], window: float) -> None:
    span_i = _window_span(samples, run.calls, window)
    if isinstance(span_i, dict):
        run.window = span_i
        return
    a_i, b_i = span_i
    a, b = samples[a_i], samples[b_i]
    span = b.t - a.t
    if span < 1.0:
        run.window = {"ok": False, "why": f"window only {span:.1f} s"}
        return
    run.window = {"ok": span >= 0.9 * window, "seconds": round(span, 2),
                  "t_open": a.t,
                  "requested": window, "samples": b_i - a_i + 1,
                  "why": "" if span >= 0.9 * window else "a call ended early"}
    # calls per worker must not move inside the window
    for pid in sorted(a.worker_calls):
        counts = {samples[i].worker_calls.get(pid, -1) for i in range(a_i, b_i + 1)}
        key = f"worker:{pid}"
        if key not in a.cpu or key not in b.cpu:
            continue
        cpu_pct = 100 * (b.cpu[key] - a.cpu[key]) / span
        main_pct = 100 * (b.cpu[f"worker_main:{pid}"] - a.cpu[f"worker_main:{pid}"]) / span
        n = a.worker_calls[pid]
        fields = [samples[i].worker_cpu_field.get(pid, 0.0) for i in range(a_i, b_i + 1)]
        run.per_worker.append({
            "pid": pid, "calls": n, "calls_steady": counts == {n}, "cpu_pct": cpu_pct,
            "main_thread_pct": main_pct, "other_threads_pct": max(0.0, cpu_pct - main_pct),
            "cpu_per_call_pct": cpu_pct / n if n else None,
            "healthz_cpu_mean_pct": 100 * sum(fields) / len(fields) if fields else None,
        })
    pct: dict[str, float] = {}
    for name in ("supervisor", "backend", "machine_ticks", "machine_idle"):
        if name in a.cpu and name in b.cpu:
            pct[name] = 100 * (b.cpu[name] - a.cpu[name]) / span
    if "machine_idle" in pct:
        pct["machine"] = 100 * CORES - pct.pop("machine_idle")
    pct["callers"] = 100 * sum(v - a.callers.get(pid, 0.0)
                               for pid, v in b.callers.items()) / span
    pct["workers"] = sum(w["cpu_pct"] for w in run.per_worker)
    ours = pct["workers"] + pct["callers"] + pct.get("supervisor", 0) + pct.get("backend", 0)
    if "machine" in pct:
        pct["machine_of_all_cores"] = pct["machine"] / CORES  # % of the machine
        pct["rest_of_machine"] = pct["machine"] - ours
    run.processes_pct = pct


def _media(doc: dict[str, Any] | None, n: int, status: int | None) -> dict[str, Any]:
    """bench/call_cost.py's "holds": every call connected, >= 49 frames/s, lag p95 < 100 ms.

    The loadtest's rx_fps is media time received per second (a DTX gap counts as what
    it stands for) and its rx lag is taken over the audible frames only: a call that
    received frames but none audible (the agent never replied within it) has no lag
    figure, which does not fail it (`calls_without_lag`); no frames at all does."""
    if doc is None:
        return {"holds": False, "why": "no loadtest JSON", "exit_status": status}
    calls = doc.get("calls", [])
    fps = [c.get("rx_fps") or 0.0 for c in calls]
    quiet = [c for c in calls if c.get("rx_lag_ms_p95") is None
             and c.get("frames_received") and c.get("rx_fps") is not None]
    lags = [c["rx_lag_ms_p95"] if c.get("rx_lag_ms_p95") is not None else 1e9
            for c in calls if not any(c is q for q in quiet)]
    connected = [c for c in calls if c.get("connect_ms") is not None]
    send_lag = [c["stats"].get("send_max_lag_ms") or 0 for c in calls if c.get("stats")]
    s = doc.get("summary", {})
    turns = [t for c in calls for t in c.get("turns", [])]
    answered = [t for t in turns if t.get("latency_ms") is not None]
    holds = (len(calls) == n and len(connected) == n and min(fps, default=0) >= 49
             and max(lags, default=0.0) < 100)
    return {
        "holds": holds, "calls": len(calls), "connected": len(connected),
        "min_rx_fps": min(fps, default=0.0), "max_rx_lag_p95_ms": max(lags, default=None),
        "calls_without_lag": len(quiet),
        "caller_send_lag_max_ms": max(send_lag, default=None),
        "failures": s.get("failures", {}), "turns": len(turns), "turns_answered": len(answered),
        "turn_latency_ms": summarize(t["latency_ms"] for t in answered),
        "exit_status": status,
        "per_call": [{"index": c.get("index"), "call_id": c.get("call_id"),
                      "proc": c.get("proc"), "connect_ms": c.get("connect_ms"),
                      "rx_fps": c.get("rx_fps"), "rx_lag_ms_p95": c.get("rx_lag_ms_p95"),
                      "frames_received": c.get("frames_received"),
                      "turns": len(c.get("turns", [])),
                      "failures": [f.get("kind") for f in c.get("failures", [])]}
                     for c in calls],
    }


# ------------------------------------------------------------------ 2. forwarding


async def make_offer() -> tuple[Any, str]:
    """One aiortc offer on loopback: an audio transceiver and the events data channel."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from rtc_agent.ice import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())  # gathers fully
    return pc, pc.localDescription.sdp


async def offers(args: argparse.Namespace, a: ServeNode, b: ServeNode,
                 redis_url: str) -> dict[str, Any]:
    import aiohttp
    import redis.asyncio

    pc, sdp = await make_offer()
    body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
    headers = {"Content-Type": "application/json"}
    r = redis.asyncio.from_url(redis_url)
    rows: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=30)) as http:
            total = args.warmup + args.offers
            for i in range(total):
                pair = (("direct", b), ("via_a", a))
                for path, node in pair if i % 2 == 0 else pair[::-1]:  # no order bias
                    row: dict[str, Any] = {"i": i, "path": path, "warmup": i < args.warmup}
                    t0 = time.perf_counter()
                    async with http.post(f"{node.url}/offer", data=body,
                                         headers=headers) as resp:
                        raw = await resp.read()
                        row["status"] = resp.status
                    row["ms"] = (time.perf_counter() - t0) * 1000
                    try:
                        answer = json.loads(raw)
                    except ValueError:
                        answer = {}
                    call_id = str(answer.get("call_id", ""))
                    row["call_id"] = call_id
                    row["answer_ok"] = resp.status == 200 and answer.get("type") == "answer"
                    if not call_id:
                        row["error"] = raw[:200].decode(errors="replace")
                        rows.append(row)
                        continue
                    # the owner is recorded in Redis off the request path: wait for it
                    owner = None
                    deadline = time.monotonic() + 2
                    while owner is None and time.monotonic() < deadline:
                        got = await r.get(f"rtc-agent:call:{call_id}")
                        owner = got.decode() if isinstance(got, bytes) else got
                        if owner is None:
                            await asyncio.sleep(0.02)
                    row["owner"] = owner
                    row["owner_wait_ms"] = (time.monotonic() - deadline + 2) * 1000
                    t1 = time.perf_counter()
                    async with http.delete(f"{node.url}/calls/{call_id}") as resp:
                        await resp.read()
                        row["delete_status"] = resp.status
                        row["delete_via"] = resp.headers.get("X-Rtc-Agent-Via")
                    row["delete_ms"] = (time.perf_counter() - t1) * 1000
                    rows.append(row)
                    await asyncio.sleep(args.offer_gap)
    finally:
        await r.aclose()
        await pc.close()
    return {"rows": rows}


def run_forwarding(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack
                   ) -> dict[str, Any]:
    from tests.cluster.redis_server import RedisServer, available

    if not available():
        return {"skipped": "no redis-server"}
    redis_server = RedisServer()
    stack.callback(redis_server.close)
    redis_server.start()
    secret = "bench-workers-" + os.urandom(8).hex()
    common = ("--redis-url", redis_server.url(), "--cluster-secret", secret,
              *args.serve_arg)
    total = 2 * (args.warmup + args.offers)
    a = stack.enter_context(running(ServeNode(work, "fwd-a", 1, 0, common)))
    b = stack.enter_context(running(ServeNode(work, "fwd-b", 1, 20, common)))
    a.start()
    b.start()
    deadline = time.monotonic() + 20  # both workers registered, as node A sees it
    while (health(a.url).get("cluster") or {}).get("workers") != 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"node A does not see 2 workers: {health(a.url)}")
        time.sleep(0.2)
    before_a, before_b = health(a.url), health(b.url)
    result = asyncio.run(offers(args, a, b, redis_server.url()))
    time.sleep(1.5)  # reports reach Redis once a second
    after_a, after_b = health(a.url), health(b.url)
    rows = result["rows"]
    timed = [r for r in rows if not r["warmup"]]
    ids = [r["call_id"] for r in rows if r.get("call_id")]
    b_worker = f"{b.name}/0"
    checks = {
        "offers": len(rows),
        "answers_200": sum(1 for r in rows if r.get("answer_ok")),
        "unique_call_ids": len(set(ids)),
        "owner_is_b": sum(1 for r in rows if r.get("owner") == b_worker),
        "owner_unknown": sum(1 for r in rows if r.get("call_id") and r.get("owner") is None),
        "deletes_200": sum(1 for r in rows if r.get("delete_status") == 200),
        "deletes_via_a_forwarded": sum(1 for r in rows if r["path"] == "via_a"
                                       and r.get("delete_via")),
        "b_calls_total": (after_b.get("calls_total", 0) - before_b.get("calls_total", 0)),
        "a_calls_total": (after_a.get("calls_total", 0) - before_a.get("calls_total", 0)),
        "calls_left": {"a": after_a.get("calls"), "b": after_b.get("calls")},
        # a hang-up right after the answer can wait out call.close()'s 5 s for its tasks
        "deletes_over_1s": [(r["path"], r["call_id"], round(r["delete_ms"]))
                            for r in rows if r.get("delete_ms", 0) > 1000],
    }
    checks["all_on_b"] = (checks["answers_200"] == total and checks["owner_is_b"] == total
                          and checks["b_calls_total"] == total and checks["a_calls_total"] == 0
                          and checks["unique_call_ids"] == total)
    checks["all_deleted"] = checks["deletes_200"] == total
    out: dict[str, Any] = {"checks": checks, "rows": rows,
                           "health_after": {"a": after_a, "b": after_b}}
    for path in ("direct", "via_a"):
        ms = [r["ms"] for r in timed if r["path"] == path and r.get("answer_ok")]
        out[path] = summarize(ms)
        out[f"{path}_delete_ms"] = summarize(r["delete_ms"] for r in timed
                                             if r["path"] == path and "delete_ms" in r)
    out["forwarding_adds_ms"] = {
        k: _diff(out["via_a"].get(k), out["direct"].get(k)) for k in ("p50", "p95", "max",
                                                                       "mean")}
    out["logs"] = {"a": a.log_findings(), "b": b.log_findings()}
    out["node_start_s"] = {"a": round(a.started_s, 2), "b": round(b.started_s, 2)}
    return out


# ------------------------------------------------------------------ report


def _diff(x: Any, y: Any) -> float | None:
    return None if x is None or y is None else float(x) - float(y)


def fmt(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def fmt_signed(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    runs = results.get("cpu_runs", [])
    if runs:
        mode = results.get("compare")
        single = results.get("single", mode == "metrics")  # one worker, the same calls
        metrics_mode = mode == "metrics"  # and /metrics scraped
        if single:
            head = f"\n1. CPU per call, {results.get('title')} ({results['calls']} calls"
        else:
            head = f"\n1. CPU per call per worker ({results['calls_per_worker']} calls per worker"
        scrape_col = (" /metrics after the window: turn latency count, calls active |"
                      if metrics_mode else "")
        lines += [f"{head}; window {results['window_s']:g} s; % of one core; machine has "
                  f"{CORES} cores)",
                  "| run | node | calls (per worker) | window s | CPU/call per worker "
                  "(each) | CPU/call (node) | workers | supervisor | backend | callers "
                  "| machine busy (of all) | rest | min rx fps | lag p95 max | holds "
                  "| callers' send lag max | agent talk share | speed probe | turns answered "
                  "| turn latency p50 | failures |" + scrape_col,
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                  "---|---|---|" + ("---|" if metrics_mode else "")]
        turns_key, active_key = SCRAPED
        for r in runs:
            p = r["processes_pct"]
            m = r["media"]
            per = ", ".join(fmt(w["cpu_per_call_pct"], 2) for w in r["per_worker"])
            each = "/".join(str(w["calls"]) + ("" if w["calls_steady"] else "*")
                            for w in r["per_worker"])
            scraped = ""
            if metrics_mode:
                x = r.get("metrics_scrape") or {}
                late = "" if x.get("when") == "window closed" else " (after the calls)"
                bad = "" if x.get("status") == 200 else f" ({x.get('error') or x.get('status')})"
                scraped = (f" {fmt(x.get(turns_key), 0)}, {fmt(x.get(active_key), 0)}"
                           f"{late}{bad} |")
            node = r.get("config") or f"--workers {r['workers']}"
            lines.append(
                f"| {r['label']}{r['round']} | {node} | {r['calls']} "
                f"({each or '-'}) | {fmt(r['window'].get('seconds'))}"
                f"{'' if r['window'].get('ok') else ' !'} | {per or '-'} | "
                f"{fmt(r['cpu_per_call_pct'], 2)} | {fmt(p.get('workers'), 0)} | "
                f"{fmt(p.get('supervisor'), 1)} | {fmt(p.get('backend'), 0)} | "
                f"{fmt(p.get('callers'), 0)} | {fmt(p.get('machine'), 0)} "
                f"({fmt(p.get('machine_of_all_cores'), 0)}) | "
                f"{fmt(p.get('rest_of_machine'), 0)} | {fmt(m.get('min_rx_fps'))} | "
                f"{fmt(m.get('max_rx_lag_p95_ms'), 0)} ms"
                f"{f' ({q} no reply audio)' if (q := m.get('calls_without_lag')) else ''} | "
                f"{'yes' if m.get('holds') else 'NO'} | "
                f"{fmt(m.get('caller_send_lag_max_ms'), 0)} ms | "
                f"{fmt(100 * m['talk']['share'] if m.get('talk') else None, 0)} % | "
                f"{fmt(r['window'].get('speed_probe_ms'))} ms | "
                f"{m.get('turns_answered', 0)}/{m.get('turns', 0)} | "
                f"{fmt((m.get('turn_latency_ms') or {}).get('p50'), 0)} ms | "
                f"{m.get('failures') or '-'} |{scraped}")
        ratio = results.get("ratio", {})
        name = ratio.get("name", "B/A")
        nd = 3 if single else 2  # a few % is the point of a single-worker comparison

        def rounds(key: str) -> str:
            return ", ".join(f"round {k}: {fmt(v, nd)}" for k, v in ratio.get(key, {}).items())

        if ratio.get("all") is None:
            lines.append(f"\n{name}: not measured (A or B did not complete)")
        else:
            target = ratio.get("target_text") or f"<= {ratio.get('target', 1.1):g}"
            what = "CPU per call" if single else "CPU per call per worker"
            lines.append(
                f"\n{name} ({what}, {ratio.get('what')}): "
                f"{fmt(ratio.get('all'), nd)} over all rounds ({rounds('per_round')}); A "
                f"{fmt(ratio.get('a_cpu_per_call_pct'), 2)} %, B "
                f"{fmt(ratio.get('b_cpu_per_call_pct'), 2)} % of a core per call; target "
                f"{target}: {'met' if ratio.get('met') else 'NOT met'}")

        if ratio.get("speed_probe_a_ms") and ratio.get("speed_probe_b_ms"):
            lines.append(
                f"Machine speed: the probe loop took {ratio['speed_probe_a_ms']:.1f} ms of "
                f"CPU in A's windows, {ratio['speed_probe_b_ms']:.1f} ms in B's (more = "
                f"slower); {name} scaled by it: {fmt(ratio.get('speed_scaled'), nd)} "
                f"({rounds('per_round_speed_scaled')}). A hint at "
                "run-to-run spread, not a correction: the loop is not the media path")
        if ratio.get("talk_b_over_a") is not None:
            why = ("the same calls on the same backend in A and B" if single else
                   "B's backend serves twice the calls, so its replies come later")
            shift = ratio.get("talk_shift")
            moves = fmt_signed(None if shift is None else 100 * shift)
            lines.append(
                f"Workload: the agent talked {100 * ratio['talk_a']:.1f} % of the window in "
                f"A's calls, {100 * ratio['talk_b']:.1f} % in B's ({why}); at "
                f"~{TALK_COST_PCT:.2f} % of a core more per talking call (docs/benchmarks.md, "
                f"media path) that moves {name} by {moves} %")
        if single:
            mc = results.get(f"{mode}_cost", {})
            per = ", ".join(f"round {k}: {fmt_signed(v)} %"
                            for k, v in mc.get("per_round_pct", {}).items())
            per_scaled = ", ".join(f"round {k}: {fmt_signed(v)} %" for k, v in
                                   mc.get("per_round_pct_speed_scaled", {}).items())
            if metrics_mode:
                lines.append(
                    f"\nmetrics cost: {fmt_signed(mc.get('pct'))} % CPU per call (target < "
                    f"{mc.get('target_pct', METRICS_COST_TARGET_PCT):g} %): "
                    f"{'met' if mc.get('met') else 'NOT met'} ({per}); speed-scaled: "
                    f"{fmt_signed(mc.get('pct_speed_scaled'))} % "
                    f"({'met' if mc.get('speed_scaled_met') else 'NOT met'}; {per_scaled})")
            else:
                def costs(pct: float | None) -> str:
                    if pct is None:
                        return "B costs - % CPU per call more/less than A"
                    return (f"B costs {abs(pct):.1f} % CPU per call "
                            f"{'more' if pct >= 0 else 'less'} than A")

                lines.append(
                    f"\n{costs(mc.get('pct'))} (target |B/A - 1| <= "
                    f"{mc.get('target_pct'):g} %): {'met' if mc.get('met') else 'NOT met'} "
                    f"({per}); speed-scaled: {costs(mc.get('pct_speed_scaled'))} "
                    f"({'met' if mc.get('speed_scaled_met') else 'NOT met'}; {per_scaled})")
                for label, side in sorted((results.get("sides") or {}).items()):
                    left_out = side.get("serve_args_left_out")
                    lines.append(
                        f"{label}: tree {side['tree']} at {side['head'][:12]}"
                        f"{' + uncommitted changes' if side['uncommitted_changes'] else ''}, "
                        f"rtc_agent imported from {side['rtc_agent']}; serve args "
                        f"{' '.join(side['serve_args']) or '-'}"
                        + (f" (left out, unknown to this tree: {' '.join(left_out)})"
                           if left_out else ""))
        if metrics_mode:
            sc = results.get("metrics_scrapes", {})

            def counts(key: str) -> str:
                return ", ".join(fmt(x.get(turns_key), 0) for x in sc.get(key, []))

            active = sc.get("calls_active", {})
            lines.append(
                f"/metrics after each window: turn latency count A {counts('a')} (metrics on: "
                f"{'yes' if sc.get('a_metrics_on') else 'NO'}), B {counts('b')} (stays 0: "
                f"{'yes' if sc.get('b_turns_stay_0') else 'NO'}); calls active A "
                f"{', '.join(fmt(v, 0) for v in active.get('a', []))}, B "
                f"{', '.join(fmt(v, 0) for v in active.get('b', []))}")

        def held(key: str) -> str:
            calls = results.get(f"{key}_calls")
            if calls is None:
                return f"{key.upper()}: not run"
            ok = "yes" if results.get(f"{key}_holds_all") else "NO"
            return f"{key.upper()} ({calls} calls) held 50 frames/s in every run: {ok}"

        lines.append(f"{held('b')}; {held('a')} (holds = every call connected, >= 49 "
                     "frames/s received, rx lag p95 < 100 ms)")
        lines.append("Columns: workers/supervisor/backend/callers/rest are % of one core over "
                     "the window; speed probe: CPU ms of a fixed loop, mean over the window; "
                     "machine busy is all cores together (of all: % of the "
                     "machine); rest = machine minus ours (other people's work). Callers' "
                     "send lag: how late the (niced) callers sent their own audio; when it "
                     "is large, a missed 'holds' may be the callers', not the server's. "
                     "* = a worker's calls changed in the window; ! = window shorter than "
                     "asked.")
    fw = results.get("forwarding")
    if fw and "checks" in fw:
        c = fw["checks"]
        lines += [f"\n2. Offer -> answer, ms ({results['offers']} offers per path after "
                  f"{results['warmup']} warm-up; fresh TCP connection each)",
                  "| path | n | p50 | p95 | max | mean | DELETE p50 |",
                  "|---|---|---|---|---|---|---|"]
        for path, label in (("direct", "direct to node B"), ("via_a", "via node A "
                                                                      "(forwarded to B)")):
            s = fw[path]
            lines.append(f"| {label} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} | "
                         f"{fmt(s['max'])} | {fmt(s['mean'])} | "
                         f"{fmt(fw[path + '_delete_ms']['p50'])} |")
        d = fw["forwarding_adds_ms"]
        lines.append(f"| forwarding adds | | {fmt(d['p50'])} | {fmt(d['p95'])} | "
                     f"{fmt(d['max'])} | {fmt(d['mean'])} | |")
        lines.append(
            f"\nAll answered by node B: {'yes' if c['all_on_b'] else 'NO'} (answers 200: "
            f"{c['answers_200']}/{c['offers']}, owner in Redis = B: {c['owner_is_b']}, "
            f"unique call ids: {c['unique_call_ids']}, B calls_total +{c['b_calls_total']}, "
            f"A calls_total +{c['a_calls_total']}); DELETE 200: {c['deletes_200']}/"
            f"{c['offers']} (via A, forwarded: {c['deletes_via_a_forwarded']}); calls left "
            f"{c['calls_left']}")
        slow = c["deletes_over_1s"]
        if slow:
            lines.append(f"DELETEs that took over 1 s: {len(slow)} of {c['offers']} "
                         f"({', '.join(f'{p} {ms} ms' for p, _, ms in slow[:6])})")
    elif fw:
        lines.append(f"\n2. forwarding: {fw}")
    logs = results.get("log_findings", {})
    noisy = {k: v for k, v in logs.items() if v.get("count")}
    lines.append("\nServer logs: " + ("no warnings or errors" if not noisy else "; ".join(
        f"{k}: {v['count']} notable lines (first: {v['notable'][0][:160]!r})"
        for k, v in noisy.items())))
    lines.append(f"Work dir (logs, loadtest JSON): {results['work_dir']}")
    return "\n".join(lines)


def summarize_cpu(results: dict[str, Any], runs: list[CpuRun], cmp: Comparison) -> None:
    """The comparison's ratio (B/A or A/B) of CPU per call, per round and over all rounds,
    raw and scaled by the speed probe; the talk share behind it; who held 50 frames/s;
    in a single-worker comparison, the ratio - 1 as a cost in % (`<name>_cost`); in
    metrics mode, what /metrics showed."""
    def pooled(rs: list[CpuRun]) -> float | None:
        cpu = sum(w["cpu_pct"] for r in rs for w in r.per_worker)
        calls = sum(w["calls"] for r in rs for w in r.per_worker)
        return cpu / calls if calls else None

    def probe(rs: list[CpuRun]) -> float | None:
        ms = [r.window["speed_probe_ms"] for r in rs if r.window.get("speed_probe_ms")]
        return sum(ms) / len(ms) if ms else None

    def talk(rs: list[CpuRun]) -> float | None:
        shares = [r.media["talk"]["share"] for r in rs if r.media.get("talk")]
        return sum(shares) / len(shares) if shares else None

    def ratios(ra: list[CpuRun], rb: list[CpuRun]) -> tuple[float | None, float | None]:
        """(raw, speed-scaled): each side's CPU per call over its probe's ms, i.e. per
        unit of the machine's speed at the time."""
        pa, pb, qa, qb = pooled(ra), pooled(rb), probe(ra), probe(rb)
        num, den, qn, qd = (pb, pa, qb, qa) if cmp.num == "B" else (pa, pb, qa, qb)
        raw = num / den if num and den else None
        return raw, (raw * qd / qn if raw and qn and qd else None)

    a = [r for r in runs if r.label == "A" and r.per_worker]
    b = [r for r in runs if r.label == "B" and r.per_worker]
    per_round: dict[str, float | None] = {}
    per_round_scaled: dict[str, float | None] = {}
    for rnd in sorted({r.round for r in runs}):
        ra = [r for r in a if r.round == rnd]
        rb = [r for r in b if r.round == rnd]
        if ra and rb:
            per_round[str(rnd)], per_round_scaled[str(rnd)] = ratios(ra, rb)
    pa, pb = pooled(a), pooled(b)
    ratio, scaled = ratios(a, b)
    results["ratio"] = {"name": cmp.ratio_name, "what": cmp.what, "all": ratio,
                        "per_round": per_round, "a_cpu_per_call_pct": pa,
                        "b_cpu_per_call_pct": pb, "target": cmp.target,
                        "target_text": cmp.target_text, "met": cmp.met(ratio),
                        "speed_probe_a_ms": probe(a),
                        "speed_probe_b_ms": probe(b), "speed_scaled": scaled,
                        "per_round_speed_scaled": per_round_scaled,
                        "speed_scaled_met": cmp.met(scaled)}
    ta, tb = talk(a), talk(b)
    if ta and tb:
        t_num, t_den, p_den = (tb, ta, pa) if cmp.num == "B" else (ta, tb, pb)
        results["ratio"].update(
            talk_a=ta, talk_b=tb, talk_b_over_a=tb / ta, talk_cost_pct=TALK_COST_PCT,
            # the change in the ratio that the difference in talk alone explains
            talk_shift=(t_num - t_den) * TALK_COST_PCT / p_den if p_den else None)
    results["a_calls"] = a[0].calls if a else None
    results["b_calls"] = b[0].calls if b else None
    results["a_holds_all"] = bool(a) and all(r.media.get("holds") for r in a)
    results["b_holds_all"] = bool(b) and all(r.media.get("holds") for r in b)
    if cmp.single:
        def cost(x: float | None) -> float | None:
            return None if x is None else 100 * (x - 1)

        results[f"{cmp.name}_cost"] = {
            "pct": cost(ratio), "pct_speed_scaled": cost(scaled),
            "per_round_pct": {k: cost(v) for k, v in per_round.items()},
            "per_round_pct_speed_scaled": {k: cost(v) for k, v in per_round_scaled.items()},
            "target_pct": cmp.target_pct, "met": cmp.met(ratio),
            "speed_scaled_met": cmp.met(scaled),
        }
    if cmp.scrape_metrics:
        turns, active = SCRAPED
        scrapes = {k: [r.metrics_scrape or {} for r in runs if r.label == k] for k in "AB"}
        results["metrics_scrapes"] = {
            "a": scrapes["A"], "b": scrapes["B"],
            # A counted turns and its calls; B's turn latency count stayed 0
            "a_metrics_on": bool(scrapes["A"]) and all(
                x.get("status") == 200 and (x.get(turns) or 0) > 0 for x in scrapes["A"]),
            "calls_active": {k.lower(): [x.get(active) for x in v] for k, v in scrapes.items()},
            "b_turns_stay_0": bool(scrapes["B"]) and all(
                x.get("status") == 200 and not x.get(turns) for x in scrapes["B"]),
        }


def run_to_json(r: CpuRun) -> dict[str, Any]:
    return {"label": r.label, "round": r.round, "workers": r.workers, "calls": r.calls,
            "config": r.config, "cpu_per_call_pct": r.cpu_per_call_pct,
            "metrics_scrape": r.metrics_scrape, "node": r.node, "window": r.window,
            "per_worker": r.per_worker, "processes_pct": r.processes_pct, "media": r.media,
            "log": r.log, "samples": r.samples}


def _git_head() -> str:
    """The commit measured, and whether the tree had changes on top of it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--compare", choices=("workers", "metrics", "args"), default="workers",
                    help="workers: A = --workers 1 with n calls, B = --workers 2 with 2n, "
                         "then the forwarding part; metrics: A = --workers 1 (metrics on), "
                         "B = --workers 1 --no-metrics, both with --calls calls; args: A and "
                         "B = --workers 1 with --calls calls, plus --a-arg / --b-arg, from "
                         "--a-tree / --b-tree")
    ap.add_argument("--calls-per-worker", type=int, default=None,
                    help="--compare workers: calls per worker (default 8)")
    ap.add_argument("--calls", type=int, default=None,
                    help="--compare metrics or args: calls on the node in A and B "
                         "(default 20)")
    ap.add_argument("--a-arg", action="append", default=[], metavar="ARG",
                    help="--compare args: extra argument for A's `serve` only (repeatable; "
                         "e.g. --a-arg=--no-dtx)")
    ap.add_argument("--b-arg", action="append", default=[], metavar="ARG",
                    help="--compare args: extra argument for B's `serve` only (repeatable; "
                         "e.g. --b-arg=--ptime=10)")
    ap.add_argument("--a-tree", type=Path, default=None, metavar="PATH",
                    help="--compare args: run A's node from this checkout (PYTHONPATH and "
                         "cwd = PATH; default: this one)")
    ap.add_argument("--b-tree", type=Path, default=None, metavar="PATH",
                    help="--compare args: run B's node from this checkout")
    ap.add_argument("--target-pct", type=float, default=None,
                    help=f"--compare args: target |B/A - 1| in %% (default "
                         f"{ARGS_TARGET_PCT:g}); --compare metrics: A/B - 1 (default "
                         f"{METRICS_COST_TARGET_PCT:g})")
    ap.add_argument("--window", type=float, default=40.0,
                    help="seconds of steady calls over which CPU is read")
    ap.add_argument("--rounds", type=int, default=2, help="A, B pairs (A, B, A, B ...)")
    ap.add_argument("--caller-procs", type=int, default=2,
                    help="loadtest --procs: caller processes (spread over the cores)")
    ap.add_argument("--caller-nice", type=int, default=19)
    ap.add_argument("--pause", type=float, default=10.0,
                    help="callers' silence between a reply and their next prompt: long "
                         "enough that the one backend keeps up with --workers 2's calls")
    ap.add_argument("--ramp", type=float, default=8.0,
                    help="start the calls over at most this many seconds (0.5 s apart)")
    ap.add_argument("--backend-nice", type=int, default=10,
                    help="renice the node's offline backend (every thread); 0: leave it")
    ap.add_argument("--offers", type=int, default=60, help="timed offers per path")
    ap.add_argument("--warmup", type=int, default=3, help="untimed offers per path first")
    ap.add_argument("--offer-gap", type=float, default=0.05,
                    help="seconds between one offer's DELETE and the next offer")
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every `rtc-agent serve` (repeatable; e.g. "
                         "--serve-arg=--no-metrics)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-forwarding", action="store_true")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="logs and loadtest JSON (default: a new folder in /tmp)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.compare != "args" and (args.a_arg or args.b_arg or args.a_tree or args.b_tree):
        ap.error("--a-arg, --b-arg, --a-tree and --b-tree belong to --compare args")
    if args.compare in ("metrics", "args"):
        if args.calls_per_worker is not None:
            ap.error(f"--compare {args.compare} takes --calls (one worker), not "
                     "--calls-per-worker")
        args.calls = 20 if args.calls is None else args.calls
        args.skip_forwarding = True  # the forwarding part belongs to --compare workers
        if args.target_pct is None:
            args.target_pct = (METRICS_COST_TARGET_PCT if args.compare == "metrics"
                               else ARGS_TARGET_PCT)
    else:
        if args.calls is not None:
            ap.error("--compare workers takes --calls-per-worker, not --calls")
        if args.target_pct is not None:
            ap.error("--compare workers has a fixed target (B/A <= 1.1), no --target-pct")
        args.calls_per_worker = 8 if args.calls_per_worker is None else args.calls_per_worker
    sides: dict[str, dict[str, Any]] | None = None
    if args.compare == "args":
        sides = {}
        for label, tree, own in (("A", args.a_tree, args.a_arg),
                                 ("B", args.b_tree, args.b_arg)):
            if tree is not None:
                tree = tree.resolve()
                if not (tree / "rtc_agent").is_dir():
                    ap.error(f"--{label.lower()}-tree {tree}: no rtc_agent package there")
                setattr(args, f"{label.lower()}_tree", tree)
            try:
                side = probe_tree(tree)
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                ap.error(f"{label}'s tree {tree or ROOT}: {err}")
            if not side["imports_from_tree"]:
                ap.error(f"{label}'s node would import rtc_agent from {side['rtc_agent']}, "
                         f"not from {side['tree']}")
            _, unknown = known_args(tuple(own), side["flags"])
            if unknown:
                ap.error(f"{label}'s tree {side['tree']} does not know "
                         f"{' '.join(unknown)} (its serve --help)")
            sides[label] = side
    cmp = comparison(args, sides)

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C, even when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", flush=True)
    for label, side in (sides or {}).items():
        left_out = side["serve_args_left_out"]
        print(f"{label}: rtc_agent from {side['rtc_agent']} (HEAD {side['head'][:12]}"
              f"{', uncommitted changes' if side['uncommitted_changes'] else ''}), serve args: "
              f"{' '.join(side['serve_args']) or '-'}"
              + (f"; left out, unknown to this tree: {' '.join(left_out)}" if left_out else ""),
              flush=True)
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv, "cores": CORES,
        "clk_tck": CLK_TCK, "compare": cmp.name,
        "configs": {"A": cmp.a.describe, "B": cmp.b.describe},
        "calls_per_worker": args.calls_per_worker, "calls": args.calls,
        "window_s": args.window, "rounds": args.rounds, "caller_procs": args.caller_procs,
        "caller_nice": args.caller_nice, "backend_nice": args.backend_nice,
        "offers": args.offers, "warmup": args.warmup, "prompt": PROMPT_TEXT,
        "serve_args": args.serve_arg, "git_head": _git_head(),
        "single": cmp.single, "title": cmp.title, "sides": sides,
        "pause_s": args.pause, "ramp_s": args.ramp, "loadavg_start": os.getloadavg(),
        "work_dir": str(work),
        "cpu_runs": [], "log_findings": {},
    }
    status = 0
    runs: list[CpuRun] = []
    try:
        if not args.skip_cpu:
            from tests.speech import speak_wav

            prompt = speak_wav(PROMPT_TEXT)
            for rnd in range(1, args.rounds + 1):
                for cfg in (cmp.a, cmp.b):
                    t0 = time.monotonic()
                    run = run_cpu(cfg, rnd, args, prompt, work, scrape=cmp.scrape_metrics)
                    runs.append(run)
                    results["cpu_runs"].append(run_to_json(run))
                    results["log_findings"][run.node["name"]] = run.log
                    scraped = ""
                    if run.metrics_scrape is not None:
                        x = run.metrics_scrape
                        scraped = (f", /metrics: turn latency count "
                                   f"{fmt(x.get(SCRAPED[0]), 0)}, calls active "
                                   f"{fmt(x.get(SCRAPED[1]), 0)} ({x['when']})")
                    print(f"{cfg.label}{rnd}: {cfg.describe}, {run.calls} calls, "
                          f"CPU/call per worker {fmt(run.cpu_per_call_pct, 2)} % "
                          f"({', '.join(fmt(w['cpu_per_call_pct'], 2) for w in run.per_worker)})"
                          f", window {run.window.get('seconds')} s, holds "
                          f"{run.media.get('holds')} (min fps "
                          f"{fmt(run.media.get('min_rx_fps'))}){scraped}, "
                          f"{time.monotonic() - t0:.0f} s", flush=True)
        if not args.skip_forwarding:
            t0 = time.monotonic()
            with contextlib.ExitStack() as stack:
                fw = run_forwarding(args, work, stack)
            results["forwarding"] = fw
            for k, v in (fw.get("logs") or {}).items():
                results["log_findings"][f"fwd-{k}"] = v
            print(f"forwarding: direct p50 {fmt(fw.get('direct', {}).get('p50'))} ms, via A "
                  f"p50 {fmt(fw.get('via_a', {}).get('p50'))} ms, "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
    except (KeyboardInterrupt, Stop) as exc:
        print(f"interrupted ({type(exc).__name__}); everything started was stopped",
              file=sys.stderr)
        status = 130
    except Exception as exc:  # report what was measured; everything started is stopped
        import traceback

        traceback.print_exc()
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    if runs:
        summarize_cpu(results, runs, cmp)
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["loadavg_end"] = os.getloadavg()
    text = table(results)
    results["table"] = text
    print(text)
    print(f"\nelapsed {results['elapsed_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
