"""The embedded offline backend, run as a child process of `rtc-agent serve`.

Speech recognition and synthesis are CPU-bound; in a process of their own
they never compete with the media loop for the GIL. The child announces its
URL on stdout (`REALTIME_URL ws://...`) once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

log = logging.getLogger(__name__)

READY_PREFIX = "REALTIME_URL "


class OfflineProcess:
    def __init__(self, extra_args: list[str] | None = None, start_timeout_s: float = 60.0) -> None:
        self._args = extra_args or []
        self._timeout = start_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.url: str | None = None

    async def start(self) -> str:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtc_agent.offline.command",
            "--host", "127.0.0.1", "--port", "0", *self._args,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    line = await self._proc.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"offline backend exited with {await self._proc.wait()} before ready"
                        )
                    text = line.decode(errors="replace").strip()
                    if text.startswith(READY_PREFIX):
                        self.url = text[len(READY_PREFIX):].strip()
                        break
        except BaseException:
            await self.stop()
            raise
        # Keep reading so a chatty child never blocks on a full pipe.
        self._drain = asyncio.create_task(self._drain_stdout())
        log.info("offline Realtime backend at %s (pid %s)", self.url, self._proc.pid)
        return self.url

    async def _drain_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while await self._proc.stdout.readline():
            pass

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        self._proc = None
