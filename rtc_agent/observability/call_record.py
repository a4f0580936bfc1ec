"""One call's figures, measured where the caller stands. Pure: no clock, no I/O.

`Call` feeds it what happens (with the time it happened) and it answers with
the measurements each moment completes: a turn's latency once the first reply
audio goes out, a barge-in's once the playout is silent. `Call` hands those to
the metrics; at the end `summary()` is the call log's line and, while the call
lives, `GET /calls`'s entry.

A call may last hours: per-turn figures are kept for the last MAX_KEPT turns
only, with counts and extremes over the whole call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtc_agent.protocol import TOKEN_KINDS

MAX_KEPT = 200  # turn latencies, barge-ins and tool calls kept per call


@dataclass(frozen=True)
class ToolCall:
    name: str
    outcome: str  # "ok" | "error" | "timeout"
    ms: int


@dataclass
class Tokens:
    """Realtime usage summed over the call's `response.done` events."""

    input_text: int = 0
    input_audio: int = 0
    output_text: int = 0
    output_audio: int = 0
    cached: int = 0

    def as_dict(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in TOKEN_KINDS}

    def add(self, usage: Any) -> dict[str, int]:
        """Add one `response.done` usage object; the amounts added, by kind.

        Untrusted input: anything but non-negative integers is ignored."""
        if not isinstance(usage, dict):
            return {}
        inputs = usage.get("input_token_details")
        outputs = usage.get("output_token_details")
        inputs = inputs if isinstance(inputs, dict) else {}
        outputs = outputs if isinstance(outputs, dict) else {}
        found = {
            "input_text": inputs.get("text_tokens"),
            "input_audio": inputs.get("audio_tokens"),
            "output_text": outputs.get("text_tokens"),
            "output_audio": outputs.get("audio_tokens"),
            "cached": inputs.get("cached_tokens"),
        }
        added = {}
        for kind, value in found.items():
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 40:
                setattr(self, kind, getattr(self, kind) + value)
                added[kind] = value
        return added


def estimate_cost(tokens: Tokens, prices: Mapping[str, float]) -> float:
    """US dollars for these tokens at `prices` (per million tokens, by kind). Cached
    tokens are input tokens the service read from its cache: charged at the `cached`
    price instead of the input text price (audio cached apart is not told apart)."""
    uncached = max(0, tokens.input_text - tokens.cached) if "cached" in prices \
        else tokens.input_text
    total = (uncached * prices.get("input_text", 0.0)
             + tokens.cached * prices.get("cached", 0.0)
             + tokens.input_audio * prices.get("input_audio", 0.0)
             + tokens.output_text * prices.get("output_text", 0.0)
             + tokens.output_audio * prices.get("output_audio", 0.0))
    return total / 1_000_000


@dataclass
class CallRecord:
    """The figures of one call; times are monotonic seconds unless named `_utc`."""

    call_id: str
    started: float
    started_utc: str
    node: str | None = None
    worker: str | None = None
    backend: str = ""
    user_agent: str = ""
    setup_s: float | None = None
    turns: int = 0
    barge_ins: int = 0
    upstream_reconnects: int = 0
    upstream_errors: int = 0
    resumes: int = 0  # times the caller brought the call back on a new connection
    session_renewals: int = 0  # Realtime sessions replaced before the service's cap
    packets_lost: int = 0
    packets_received: int = 0
    jitter_s: float | None = None
    ended: float | None = None
    ended_utc: str | None = None
    end_reason: str | None = None
    tokens: Tokens = field(default_factory=Tokens)
    pricing: dict[str, float] = field(default_factory=dict)  # per million tokens; {}: no cost
    turn_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    barge_in_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    tool_calls: deque[ToolCall] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    tool_calls_total: int = 0
    _speech_stopped: float | None = None
    _speech_started: float | None = None
    _flushed: bool = False

    # ------------------------------------------------------------ events

    def media_flowing(self, now: float) -> float | None:
        """The caller's first audio arrived: the set-up time, the first time only."""
        if self.setup_s is not None:
            return None
        self.setup_s = max(0.0, now - self.started)
        return self.setup_s

    def speech_started(self, now: float) -> None:
        self._speech_started = now
        self._flushed = False

    def speech_stopped(self, now: float) -> None:
        self._speech_stopped = now

    def text_sent(self, now: float) -> None:
        """A typed turn: its reply's latency counts from here."""
        self._speech_stopped = now

    def reply_audio_started(self, now: float) -> float | None:
        """The first frame of a reply went out: the turn's latency, if a turn was waiting."""
        if self._speech_stopped is None:
            return None
        latency = max(0.0, now - self._speech_stopped)
        self._speech_stopped = None
        self.turns += 1
        self.turn_latencies.append(latency)
        return latency

    def playout_flushed(self) -> None:
        """Reply audio was dropped for a barge-in; the next silent frame completes it."""
        if self._speech_started is not None:
            self._flushed = True

    @property
    def barge_in_open(self) -> bool:
        """A flush waits for its first silent frame (checked on every playout tick)."""
        return self._flushed

    def playout_silent(self, now: float) -> float | None:
        """The first silent frame after a flush: the barge-in's time, if one is open."""
        if not self._flushed or self._speech_started is None:
            return None
        took = max(0.0, now - self._speech_started)
        self._flushed = False
        self._speech_started = None
        self.barge_ins += 1
        self.barge_in_latencies.append(took)
        return took

    def tool_finished(self, name: str, outcome: str, seconds: float) -> None:
        self.tool_calls_total += 1
        self.tool_calls.append(ToolCall(name, outcome, round(seconds * 1000)))

    def upstream_reconnected(self) -> None:
        self.upstream_reconnects += 1

    def upstream_error(self) -> None:
        self.upstream_errors += 1

    def resumed(self) -> None:
        self.resumes += 1

    def session_renewed(self) -> None:
        self.session_renewals += 1

    def rtp(self, packets_received: int, packets_lost: int, jitter_s: float | None) -> None:
        self.packets_received = max(0, packets_received)
        self.packets_lost = max(0, packets_lost)
        self.jitter_s = jitter_s

    def end(self, reason: str, now: float, now_utc: str) -> None:
        if self.end_reason is None:
            self.end_reason, self.ended, self.ended_utc = reason, now, now_utc

    # ------------------------------------------------------------ reading

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """The call's figures as JSON: the call log's line, `GET /calls`'s entry."""
        until = self.ended if self.ended is not None else now if now is not None else self.started
        sent = self.packets_received + self.packets_lost
        return {
            "call_id": self.call_id,
            "node": self.node,
            "worker": self.worker,
            "started": self.started_utc,
            "ended": self.ended_utc,
            "duration_s": round(max(0.0, until - self.started), 3),
            "end_reason": self.end_reason,
            "backend": self.backend,
            "user_agent": self.user_agent,
            "setup_ms": _ms(self.setup_s),
            "turns": self.turns,
            "turn_latency_ms": [_ms(v) for v in self.turn_latencies],
            "barge_ins": self.barge_ins,
            "barge_in_ms": [_ms(v) for v in self.barge_in_latencies],
            "tool_calls": [{"name": t.name, "ok": t.outcome == "ok", "outcome": t.outcome,
                            "ms": t.ms} for t in self.tool_calls],
            "tool_calls_total": self.tool_calls_total,
            "tokens": self.tokens.as_dict(),
            "cost_usd": (round(estimate_cost(self.tokens, self.pricing), 6)
                         if self.pricing else None),
            "resumes": self.resumes,
            "session_renewals": self.session_renewals,
            "upstream_reconnects": self.upstream_reconnects,
            "upstream_errors": self.upstream_errors,
            "packets_lost": self.packets_lost,
            "packet_loss": round(self.packets_lost / sent, 4) if sent else 0.0,
            "jitter_ms": _ms(self.jitter_s),
        }


def log_line(summary: dict[str, Any]) -> str:
    """A call's figures in one log line (`summary`'s, for the line a call ends with)."""
    latencies = sorted(v for v in summary["turn_latency_ms"] if v is not None)
    median = f", turn latency median {latencies[len(latencies) // 2]} ms" if latencies else ""
    return (f"{summary['duration_s']:.1f} s, {summary['turns']} turns{median}, "
            f"{summary['barge_ins']} barge-ins, {summary['tool_calls_total']} tool calls, "
            f"{summary['upstream_reconnects']} upstream reconnects, "
            f"{summary['packet_loss'] * 100:.1f} % packets lost")


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)
