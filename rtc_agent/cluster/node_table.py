"""The node's scoreboard: a shared-memory table of its workers' loads.

Every worker of a node must see every other worker's load to place an offer,
without asking each over the network per offer. Like Apache's scoreboard, the
supervisor maps one small file into memory, shared with the workers it starts;
each worker writes only its own slot (about once a second) and reads all of them.
Slot 0 is the node's own: its id, whether it drains, and the offline backend's
state, written by the supervisor.

A slot holds JSON behind a sequence number (a seqlock): the writer makes it odd,
writes, and makes it even again; a reader retries while it is odd or changed
under it. A reader never blocks a writer, and nothing here takes a lock that a
dead process could leave held. What a reader gets is still checked
(`WorkerLoad.from_json`) and a slot it cannot read counts as empty.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from rtc_agent.cluster.placement import WorkerLoad

SLOT_BYTES = 1024
_HEAD = struct.Struct("<QH")  # sequence number, length of the JSON that follows
MAX_PAYLOAD = SLOT_BYTES - _HEAD.size
STALE_S = 3.0  # a worker whose report is older has stopped (or hangs): not placed on
_READ_TRIES = 64


class NodeTable:
    """`workers` worker slots plus the node's own, in memory shared by a node's processes."""

    def __init__(self, fd: int, workers: int) -> None:
        self.fd = fd
        self.workers = workers
        size = SLOT_BYTES * (workers + 1)
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        self._map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, workers: int) -> NodeTable:
        """A fresh table in an anonymous file; its `fd` is what workers inherit."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("rtc-agent-node", 0)
        else:  # an unlinked temporary file serves the same purpose
            handle = tempfile.TemporaryFile()
            fd = os.dup(handle.fileno())
            handle.close()
        return cls(fd, workers)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)

    # ------------------------------------------------------------ slots

    def _write(self, slot: int, data: dict[str, Any] | None) -> None:
        payload = b"" if data is None else json.dumps(data, separators=(",", ":")).encode()
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"slot payload too large ({len(payload)} bytes)")
        offset = slot * SLOT_BYTES
        seq, _ = _HEAD.unpack_from(self._map, offset)
        seq |= 1  # odd: being written
        _HEAD.pack_into(self._map, offset, seq, 0)
        self._map[offset + _HEAD.size: offset + _HEAD.size + len(payload)] = payload
        _HEAD.pack_into(self._map, offset, seq + 1, len(payload))

    def _read(self, slot: int) -> dict[str, Any] | None:
        offset = slot * SLOT_BYTES
        for _ in range(_READ_TRIES):
            seq, length = _HEAD.unpack_from(self._map, offset)
            if seq & 1:
                continue
            raw = self._map[offset + _HEAD.size: offset + _HEAD.size + min(length, MAX_PAYLOAD)]
            if _HEAD.unpack_from(self._map, offset)[0] != seq:
                continue
            if not raw:
                return None
            try:
                data = json.loads(raw)
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
        return None

    # ------------------------------------------------------------ workers

    def publish(self, load: WorkerLoad) -> None:
        """Write a worker's report into its slot (slot `index + 1`)."""
        self._write(load.index + 1, load.to_json())

    def clear(self, index: int) -> None:
        """Empty a worker's slot: it died or stopped, and takes no calls."""
        self._write(index + 1, None)

    def worker(self, index: int) -> WorkerLoad | None:
        data = self._read(index + 1)
        if data is None:
            return None
        try:
            return WorkerLoad.from_json(data)
        except ValueError:
            return None

    def live(self, now: float | None = None) -> list[WorkerLoad]:
        """The workers whose reports are fresh."""
        now = time.time() if now is None else now
        return [w for w in self._all() if now - w.updated <= STALE_S]

    def _all(self) -> Iterator[WorkerLoad]:
        for index in range(self.workers):
            load = self.worker(index)
            if load is not None:
                yield load

    # ------------------------------------------------------------ the node

    def set_node(self, **fields: Any) -> None:
        """Update the node's slot (the supervisor's): id, draining, backend state."""
        data = self.node()
        data.update(fields)
        self._write(0, data)

    def node(self) -> dict[str, Any]:
        return self._read(0) or {}
