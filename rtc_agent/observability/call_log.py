"""`--call-log PATH`: one JSON line per ended call (`CallRecord.summary()`).

Lines are appended with one `write` each on a file opened for appending, so
several workers can share the file without interleaving a line (each is far
below the size the kernel appends atomically for local files in practice, and
capped at MAX_LINE_BYTES). Never an API key or audio: the record has neither.
A write that fails (disk full) is logged once and the call log goes on trying.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024


class CallLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: a call log names callers' user agents and what they did.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._failing = False

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=str).encode() + b"\n"
        if len(line) > MAX_LINE_BYTES:  # the kept per-turn lists are bounded; belt and braces
            record = {**record, "turn_latency_ms": [], "barge_in_ms": [], "tool_calls": [],
                      "truncated": True}
            line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            os.write(self._fd, line)
        except OSError as exc:
            if not self._failing:
                log.error("call log %s: cannot write: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def close(self) -> None:
        os.close(self._fd)
