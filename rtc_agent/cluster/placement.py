"""Where a new call goes: the least-loaded worker that can take it. Pure.

A worker reports a `WorkerLoad` (to the node's shared table, and to Redis in a
cluster); placement ranks the reports. Load is calls / capacity, then CPU, so
calls spread evenly before CPU breaks ties between equally loaded workers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's report of itself."""

    id: str  # "<node>/<index>", unique in the cluster
    node: str
    index: int
    pid: int
    url: str  # the worker's internal HTTP address, e.g. "http://10.0.0.5:9100"
    calls: int
    capacity: int
    draining: bool = False
    cpu: float = 0.0  # cores used over the last second (1.0 = one core busy)
    updated: float = 0.0  # time.time() of the report
    calls_total: int = 0  # calls it has taken since it started

    @property
    def full(self) -> bool:
        return self.calls >= self.capacity

    @property
    def available(self) -> bool:
        """Whether it may take a new call."""
        return not self.draining and not self.full

    @property
    def load(self) -> float:
        return self.calls / self.capacity if self.capacity > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerLoad:
        """Read a report back; ValueError when a field is missing or of the wrong type."""
        try:
            load = cls(
                id=_str(data["id"]), node=_str(data["node"]), index=_int(data["index"]),
                pid=_int(data["pid"]), url=_str(data["url"]), calls=_int(data["calls"]),
                capacity=_int(data["capacity"]), draining=bool(data.get("draining", False)),
                cpu=_float(data.get("cpu", 0.0)), updated=_float(data.get("updated", 0.0)),
                calls_total=_int(data.get("calls_total", 0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a worker report: {exc}") from None
        return load


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}"[:80])
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a non-negative integer, got {value!r}"[:80])
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"expected a number, got {value!r}"[:80])
    return float(value)


def ranked(workers: Iterable[WorkerLoad], *, exclude: Collection[str] = ()) -> list[WorkerLoad]:
    """The workers that may take a call, least loaded first (ties: CPU, then id)."""
    return sorted((w for w in workers if w.available and w.id not in exclude),
                  key=lambda w: (w.load, w.cpu, w.id))


@dataclass(frozen=True)
class Totals:
    """What `/healthz` reports for a set of workers."""

    nodes: int
    workers: int
    calls: int
    capacity: int
    draining: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def totals(workers: Iterable[WorkerLoad]) -> Totals:
    listed = list(workers)
    return Totals(nodes=len({w.node for w in listed}), workers=len(listed),
                  calls=sum(w.calls for w in listed),
                  capacity=sum(w.capacity for w in listed if not w.draining),
                  draining=sum(1 for w in listed if w.draining))
