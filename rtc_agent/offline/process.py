"""The embedded offline backend, run as a supervised child process of `rtc-agent serve`.

Speech recognition and synthesis are CPU-bound; in a process of their own they
never compete with the media loop for the GIL. The child announces its URL on stdout
(`REALTIME_URL ws://...`) once it listens.

`OfflineProcess` supervises it. The parent binds the listening socket itself and
hands it to every child it starts, so the URL never changes and a caller that
reconnects while a child restarts waits in the socket's backlog instead of being
refused: its normal reconnect loop carries it over a crash. A dead child is started
again with backoff; a child that keeps dying is given up (`state` "down"). The child
exits when its parent does (`--parent-pid`): its stdin is a pipe only the parent
holds, which reaches EOF however the parent died, and on Linux it also arms
PR_SET_PDEATHSIG when the parent forks from its main thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading

log = logging.getLogger(__name__)

READY_PREFIX = "REALTIME_URL "
# The child's line each time one of its speech recognition processes died and was
# started again (they are its own children, supervised by it).
RECOGNIZER_RESTART_LINE = "RECOGNIZER_RESTART"
# Delay before each restart of a child that keeps dying; the first is nearly at once,
# since the callers' reconnect loop retries for a few seconds only.
RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 4.0)
STABLE_S = 30.0  # a child that lived this long starts the backoff afresh when it dies
MAX_FAILURES = 8  # consecutive early deaths or failed starts before giving up


def _listen_address(args: list[str]) -> tuple[str, int]:
    """--host/--port among the child's arguments (default: a free loopback port)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    known, _ = parser.parse_known_args(args)
    return known.host, known.port


class OfflineProcess:
    """Runs and supervises the offline Realtime backend; see the module docstring.

    `state` is "down" before start, after stop and once restarts are given up, "up"
    while a child serves, and "restarting" in between; `restarts` counts children
    started again and `last_exit` is the exit status of the last one that died;
    `recognizer_restarts` counts the children's speech recognition processes that
    died and were started again.
    """

    def __init__(self, extra_args: list[str] | None = None, start_timeout_s: float = 60.0,
                 *, backoff_s: tuple[float, ...] = RESTART_BACKOFF_S,
                 max_failures: int = MAX_FAILURES, stable_s: float = STABLE_S) -> None:
        self._args = list(extra_args or [])
        self._timeout = start_timeout_s
        self._backoff = backoff_s
        self._max_failures = max_failures
        self._stable_s = stable_s
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self.url: str | None = None
        self.state = "down"
        self.restarts = 0
        self.recognizer_restarts = 0  # of the children's recognition processes, all told
        self.last_exit: int | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> str:
        """Start the first child and supervise it; its URL stays valid across restarts."""
        if self._supervisor is not None:
            assert self.url is not None
            return self.url
        host, port = _listen_address(self._args)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        try:
            await self._spawn()
        except BaseException:
            await self.stop()
            raise
        self.state = "up"
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        assert self.url is not None
        log.info("offline Realtime backend at %s (pid %s)", self.url, self.pid)
        return self.url

    async def _spawn(self) -> None:
        """Start one child on the shared socket and wait until it announces its URL."""
        assert self._sock is not None
        fd = self._sock.fileno()
        args = [*self._args, "--listen-fd", str(fd), "--parent-pid", str(os.getpid())]
        # PR_SET_PDEATHSIG fires when the forking *thread* ends; asyncio forks on the
        # loop's thread, which only the main thread outlives for sure.
        if threading.current_thread() is threading.main_thread():
            args.append("--parent-death-signal")
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtc_agent.offline.command", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(fd,),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._started_at = asyncio.get_running_loop().time()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    line = await proc.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"offline backend exited with {await proc.wait()} before ready")
                    text = line.decode(errors="replace").strip()
                    if text.startswith(READY_PREFIX):
                        self.url = text[len(READY_PREFIX):].strip()
                        break
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        # Keep reading so a chatty child never blocks on a full pipe.
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout(proc))

    async def _drain_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if line.strip() == RECOGNIZER_RESTART_LINE.encode():
                self.recognizer_restarts += 1

    async def _supervise(self) -> None:
        """Wait for the child to die; start another with backoff, or give up."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            lived = loop.time() - self._started_at
            if proc.stdin is not None:
                proc.stdin.close()  # the dead child's pipe; the next child gets its own
            self.last_exit = code
            self.state = "restarting"
            failures = 1 if lived >= self._stable_s else failures + 1
            log.warning("offline backend (pid %s) exited with %s after %.1f s: restarting",
                        proc.pid, code, lived)
            while True:
                if failures > self._max_failures:
                    log.error("offline backend keeps failing (%d times): giving up", failures - 1)
                    self.state = "down"
                    self._close_socket()  # callers get refused at once, not a hanging backlog
                    return
                await asyncio.sleep(self._backoff[min(failures, len(self._backoff)) - 1])
                try:
                    await self._spawn()
                except Exception:
                    log.exception("offline backend failed to start again")
                    failures += 1
                    continue
                break
            self.restarts += 1
            self.state = "up"
            log.info("offline backend restarted (pid %s, restart %d)", self.pid, self.restarts)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def stop(self) -> None:
        """Stop supervising, then stop the child: close its stdin (a supervised child
        ignores SIGTERM and SIGINT, which a terminal or systemd send the whole group,
        and stops at EOF), SIGKILL if it is still there after 5 s."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        self._proc = None
        self._close_socket()
        self.state = "down"
