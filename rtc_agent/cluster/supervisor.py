"""`serve --workers N`: a node supervisor and its N worker processes.

The supervisor serves no calls itself. It binds the node's public port once and
hands the socket to every worker (each accepts from it, as pre-forked servers
do); binds each worker's internal socket, so a restarted worker keeps its
address; creates the node's table (`node_table.py`); runs the offline backend
(one child per node, shared by the workers); and then watches. A worker that
dies is started again within 2 s, its slot cleared meanwhile so placement skips
it. Workers run in their own session, so a terminal's Ctrl-C reaches only the
supervisor, which decides; and they exit when the supervisor goes (`lifeline`).

Signals: the first SIGTERM/SIGINT drains (workers take no new calls, let theirs
end, end the rest after --drain-timeout, exit 0); a second ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from prometheus_client import multiprocess as prometheus_multiprocess

from rtc_agent import ConfigError
from rtc_agent.cluster.node_table import NodeTable
from rtc_agent.config import ServeConfig, listen_error
from rtc_agent.observability.metrics import MULTIPROC_ENV
from rtc_agent.offline.process import OfflineProcess
from rtc_agent.realtime.service import service_from_settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0)  # capped: a dead worker is back within 2 s
STABLE_S = 30.0  # a worker that lived this long restarts with the shortest delay again
READY_TIMEOUT_S = 60.0
MAX_START_FAILURES = 5  # a worker dying before it ever served, this often: give up
KILL_AFTER_S = 10.0  # after the second signal, workers that still run are killed
_LENGTH = struct.Struct("<I")


@dataclass
class WorkerSpec:
    """What a worker process needs from its supervisor (sent over its stdin)."""

    config: ServeConfig
    index: int
    workers: int
    listen_fd: int  # the node's public socket
    internal_fd: int  # this worker's internal socket
    table_fd: int
    offline_url: str | None  # the node's offline backend, if it runs one


def send_spec(spec: WorkerSpec) -> bytes:
    data = pickle.dumps(spec)
    return _LENGTH.pack(len(data)) + data


def read_spec(fd: int = 0) -> WorkerSpec:
    """The spec its supervisor wrote to this process's stdin (trusted: our parent)."""

    def read_exactly(n: int) -> bytes:
        chunks = b""
        while len(chunks) < n:
            chunk = os.read(fd, n - len(chunks))
            if not chunk:
                raise EOFError("the supervisor closed the pipe before sending the spec")
            chunks += chunk
        return chunks

    (length,) = _LENGTH.unpack(read_exactly(_LENGTH.size))
    spec = pickle.loads(read_exactly(length))
    if not isinstance(spec, WorkerSpec):
        raise TypeError("not a worker spec")
    return spec


def _server_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def _bound(host: str, port: int, what: str) -> socket.socket:
    """A listening socket, or ConfigError naming the port and why it cannot be had."""
    try:
        return _server_socket(host, port)
    except OSError as exc:
        raise listen_error(exc, host, port, what) from None


class NodeSupervisor:
    """Starts and watches a node's workers; see the module docstring."""

    def __init__(self, cfg: ServeConfig,
                 on_listening: Callable[[str, int], None] | None = None) -> None:
        # on_listening(scheme, port): called once every worker serves, after the
        # listening line (serve prints the URLs phones can open there).
        self._on_listening = on_listening
        # One secret for the node's workers (and, under --redis-url, every node's).
        self.cfg = replace(cfg, cluster_secret=cfg.cluster_secret or secrets.token_urlsafe(32))
        self.count = cfg.workers
        self.table = NodeTable.create(self.count)
        # Every worker writes its metrics here; any of them sums them for a scrape.
        self._metrics_dir = tempfile.mkdtemp(prefix="rtc-agent-metrics-")
        self._public: socket.socket | None = None
        self._internal: list[socket.socket] = []
        self._procs: list[asyncio.subprocess.Process | None] = [None] * self.count
        self._offline: OfflineProcess | None = None
        self._offline_url: str | None = None
        self._stopping = False
        self._signals = 0
        self.restarts = 0
        self.failed = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not on Windows, nor off the main thread (an embedding): then the node is
            # stopped by cancelling run(), and _shutdown still stops the workers.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)
        cfg = self.cfg
        try:
            self._public = _bound(cfg.host, cfg.port, "--port")
            port = self._public.getsockname()[1]
            for index in range(self.count):
                self._internal.append(_bound(
                    cfg.internal_host, cfg.internal_port + index if cfg.internal_port else 0,
                    "--internal-port"))
        except ConfigError:
            await self._shutdown()  # the table and the metrics folder
            raise
        self.table.set_node(id=cfg.node_id, draining=False, backend_state="up",
                            backend_restarts=0, recognizer_restarts=0, worker_restarts=0)
        try:
            if service_from_settings(realtime_url=cfg.realtime_url, model=cfg.model,
                                     beta=cfg.realtime_beta) is None:
                self._offline = OfflineProcess(["--tts", cfg.tts, *cfg.offline_args])
                self._offline_url = await self._offline.start()
            watchers = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
            backend = asyncio.create_task(self._report_backend())
            await self._wait_ready()
            if not self._stopping:
                scheme = "https" if cfg.https or cfg.cert else "http"
                print(f"rtc-agent listening on {scheme}://{cfg.host}:{port} "
                      f"({self.count} workers, node {cfg.node_id})", flush=True)
                if self._on_listening is not None:
                    self._on_listening(scheme, port)
            await asyncio.gather(*watchers)
            backend.cancel()
        finally:
            await self._shutdown()
        return 1 if self.failed else 0

    # ------------------------------------------------------------ workers

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        assert self._public is not None
        internal = self._internal[index]
        spec = WorkerSpec(config=self.cfg, index=index, workers=self.count,
                          listen_fd=self._public.fileno(), internal_fd=internal.fileno(),
                          table_fd=self.table.fd, offline_url=self._offline_url)
        args = ["--parent-pid", str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            args.append("--parent-death-signal")  # see lifeline.set_parent_death_signal
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtc_agent.serve", *args, stdin=asyncio.subprocess.PIPE,
            pass_fds=(self._public.fileno(), internal.fileno(), self.table.fd),
            start_new_session=True, env={
                **os.environ, MULTIPROC_ENV: self._metrics_dir,
                "RTC_AGENT_LOG_LEVEL": logging.getLevelName(
                    logging.getLogger().getEffectiveLevel())})
        assert proc.stdin is not None
        proc.stdin.write(send_spec(spec))
        await proc.stdin.drain()
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    async def _keep(self, index: int) -> None:
        """Run worker `index` until the node stops, starting it again when it dies."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            proc = await self._spawn(index)
            code = await proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
            served = self.table.worker(index) is not None  # it got as far as reporting
            self.table.clear(index)
            with contextlib.suppress(OSError):
                prometheus_multiprocess.mark_process_dead(proc.pid, self._metrics_dir)
            if self._stopping:
                log.info("worker %d (pid %d) exited with %s", index, proc.pid, code)
                return
            failures = 1 if loop.time() - started >= STABLE_S else failures + 1
            if not served and failures > MAX_START_FAILURES:
                # A worker that cannot even start (a bad certificate, a broken install)
                # would only fail again: stop the node and say so.
                log.error("worker %d failed to start %d times in a row (exit status %s): "
                          "stopping the node", index, failures - 1, code)
                self.failed = True
                self._stopping = True
                self.table.set_node(draining=True)
                self._signal_workers()
                return
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]
            log.warning("worker %d (pid %d) exited with %s: restarting in %.1f s",
                        index, proc.pid, code, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            self.table.set_node(worker_restarts=self.restarts)

    async def _wait_ready(self) -> None:
        """Until every worker has reported once (or READY_TIMEOUT_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while (len(self.table.live()) < self.count and loop.time() < deadline  # noqa: ASYNC110
               and not self._stopping):
            await asyncio.sleep(0.05)  # the table is shared memory: nothing to wait on

    async def _report_backend(self) -> None:
        """Keep the offline backend's state in the table, where workers read it."""
        while True:
            if self._offline is not None:
                self.table.set_node(backend_state=self._offline.state,
                                    backend_restarts=self._offline.restarts,
                                    recognizer_restarts=self._offline.recognizer_restarts)
            await asyncio.sleep(0.25)

    # ------------------------------------------------------------ stopping

    def _on_signal(self) -> None:
        self._signals += 1
        self._stopping = True
        if self._signals == 1:
            log.info("draining: workers take no new calls and end when their calls do "
                     "(signal again to end now)")
            self.table.set_node(draining=True)
        else:
            log.info("ending now")
            asyncio.get_running_loop().call_later(KILL_AFTER_S, self._kill)
        self._signal_workers()

    def _signal_workers(self) -> None:
        for proc in self._procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    def _kill(self) -> None:
        for proc in self._procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def _shutdown(self) -> None:
        self._stopping = True
        self._signal_workers()
        running = [p for p in self._procs if p is not None and p.returncode is None]
        if running:
            _, late = await asyncio.wait([asyncio.create_task(p.wait()) for p in running],
                                         timeout=KILL_AFTER_S)
            if late:
                self._kill()
        if self._offline is not None:
            await self._offline.stop()
        for sock in [self._public, *self._internal]:
            if sock is not None:
                sock.close()
        self.table.close()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
