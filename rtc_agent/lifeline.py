"""A supervised child process that dies with its parent.

The offline backend and every worker of `serve --workers N` are started by a
supervisor that holds the write end of their stdin. A child watches for EOF on
that pipe, which comes however the parent died (even SIGKILL), and on Linux
also arms PR_SET_PDEATHSIG. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_GRACE_S = 3.0  # after the parent is gone, a clean shutdown gets this long


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send sig when the parent goes (prctl PR_SET_PDEATHSIG).

    The kernel ties this to the parent *thread* that forked: a supervisor only asks
    for it when it spawns from its main thread (asyncio forks on the loop's thread).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0


def watch_parent(parent_pid: int, stop: asyncio.Event, loop: asyncio.AbstractEventLoop,
                 fd: int = 0) -> None:
    """Stop when `fd` (stdin), a pipe whose other end only the parent holds, reaches EOF.

    Then shut down cleanly, or exit hard after EXIT_GRACE_S.
    """

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass
        log.info("parent %s closed our pipe (it stops us, or it died): stopping", parent_pid)
        with contextlib.suppress(RuntimeError):  # the loop may have closed already
            loop.call_soon_threadsafe(stop.set)
        time.sleep(EXIT_GRACE_S)
        os._exit(1)

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()
