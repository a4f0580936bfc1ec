"""A throwaway redis-server on a loopback port, for the cluster tests.

It can be stopped and started again on the same port (an outage, or a restart
that loses everything: no RDB, no AOF), and paused with SIGSTOP (a stall:
connections are accepted by the kernel, nothing answers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import loopback_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer:
    """One redis-server process, managed by its PID."""

    def __init__(self, *, password: str | None = None) -> None:
        self.port = loopback_port()
        self.password = password
        self._dir = Path(tempfile.mkdtemp(prefix="rtc-agent-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (again) on the same port, empty, and wait until it answers PING."""
        assert self._proc is None, "already running"
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self._dir)]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self._dir / "redis.log").open("ab")
        try:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self._dir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"redis-server exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer in {timeout_s} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it is paused), then SIGKILL after 5 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self._dir / "redis.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _answers(self) -> bool:
        """A raw PING (after AUTH when there is a password) returns +PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                request = b"PING\r\n"
                if self.password:
                    request = f"AUTH {self.password}\r\n".encode() + request
                s.sendall(request)
                received = b""
                while b"PONG" not in received and b"-" not in received:
                    chunk = s.recv(256)
                    if not chunk:
                        return False
                    received += chunk
                return b"+PONG" in received
        except OSError:
            return False
