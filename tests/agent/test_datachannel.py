"""Caller messages on the `events` channel: what is accepted and what is refused."""

from __future__ import annotations

import json

import pytest

from rtc_agent.datachannel import (
    MAX_MESSAGE_BYTES,
    CallerMessageError,
    encode_server_message,
    parse_caller_message,
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[" * 8000 + "]" * 8000, "invalid_json"),  # deep nesting: a RecursionError
        ('{"type": "ping", "t": NaN}', "invalid_json"),  # Python's json would take these
        ('{"type": "ping", "t": -Infinity}', "invalid_json"),
        ('{"type": "playout", "delay_ms": 1e400}', "invalid_json"),  # parses as inf
        ("[1, 2]", "invalid_message"),
        ('{"type": 3}', "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "text", "text": "   "}', "invalid_field"),
        ('{"type": "text"}', "invalid_field"),
        ('{"type": "playout", "delay_ms": -1}', "invalid_field"),
        ('{"type": "playout", "delay_ms": true}', "invalid_field"),
        ('{"type": "ping", "t": "soon"}', "invalid_field"),
        (json.dumps({"type": "text", "text": "x" * MAX_MESSAGE_BYTES}), "message_too_large"),
    ],
)
def test_bad_messages_are_refused_with_a_code(raw: str | bytes, code: str) -> None:
    with pytest.raises(CallerMessageError) as info:
        parse_caller_message(raw)
    assert info.value.code == code
    assert info.value.as_event()["type"] == "error"


def test_good_messages_parse() -> None:
    assert parse_caller_message('{"type": "text", "text": " hi "}')["text"] == "hi"
    assert parse_caller_message('{"type": "playout", "delay_ms": 85.5}')["delay_ms"] == 85.5
    assert parse_caller_message('{"type": "interrupt"}') == {"type": "interrupt"}
    assert parse_caller_message('{"type": "ping", "t": 5}')["t"] == 5


def test_long_transcript_deltas_are_split_and_lose_nothing() -> None:
    delta = "word " * 600
    parts = encode_server_message({"type": "transcript.delta", "role": "assistant",
                                   "item_id": "a", "delta": delta})
    assert len(parts) > 1
    assert all(len(p.encode()) <= 1100 for p in parts)
    assert "".join(json.loads(p)["delta"] for p in parts) == delta


def test_text_rate_limit_allows_a_burst_then_refills() -> None:
    from rtc_agent.datachannel import TokenBucket

    limit = TokenBucket(per_second=2, burst=3)
    assert [limit.allow(10.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow(10.2) is False  # 0.4 of a token
    assert limit.allow(10.6) is True  # refilled at 2 per second


def test_server_messages_are_strict_json_even_with_non_finite_numbers() -> None:
    import json

    from rtc_agent.datachannel import encode_server_message, tool_started

    (data,) = encode_server_message(tool_started("c1", "search", {"n": float("nan"),
                                                                  "x": [float("inf"), 1.5]}))
    assert "NaN" not in data and "Infinity" not in data
    assert json.loads(data)["arguments"] == {"n": None, "x": [None, 1.5]}
