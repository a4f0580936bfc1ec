"""The per-call record without I/O: turn and barge-in timing, tokens, bounds."""

from __future__ import annotations

import json

from pytest import approx

from rtc_agent.observability.call_record import MAX_KEPT, CallRecord, Tokens, estimate_cost


def record() -> CallRecord:
    return CallRecord("c1", started=100.0, started_utc="2026-11-28T10:00:00.000+00:00",
                      node="a", worker="a/0", backend="offline", user_agent="test")


def test_turn_latency_runs_from_speech_end_to_the_first_reply_frame() -> None:
    r = record()
    assert r.reply_audio_started(101.0) is None  # no turn waiting: a greeting, say
    r.speech_stopped(102.0)
    assert r.reply_audio_started(102.45) == approx(0.45)
    assert r.reply_audio_started(102.5) is None  # one latency per turn
    r.text_sent(110.0)
    assert r.reply_audio_started(110.3) == approx(0.3)
    assert r.turns == 2 and list(r.turn_latencies) == approx([0.45, 0.3])


def test_barge_in_runs_from_speech_start_to_the_first_silent_frame_after_a_flush() -> None:
    r = record()
    r.speech_started(120.0)
    assert not r.barge_in_open and r.playout_silent(120.1) is None  # nothing was playing
    r.speech_started(130.0)
    r.playout_flushed()
    assert r.barge_in_open
    assert r.playout_silent(130.03) == approx(0.03)
    assert not r.barge_in_open and r.barge_ins == 1
    r.playout_flushed()  # a flush without a caller speaking (a typed interrupt)
    assert not r.barge_in_open


def test_setup_is_measured_once() -> None:
    r = record()
    assert r.media_flowing(100.25) == 0.25
    assert r.media_flowing(100.5) is None and r.setup_s == 0.25


def test_usage_is_summed_and_hostile_usage_ignored() -> None:
    r = record()
    usage = {"input_token_details": {"text_tokens": 3, "audio_tokens": 7, "cached_tokens": 2},
             "output_token_details": {"text_tokens": 5, "audio_tokens": 11}}
    assert r.tokens.add(usage) == {"input_text": 3, "input_audio": 7, "output_text": 5,
                                   "output_audio": 11, "cached": 2}
    for bad in (None, [], "x", {"input_token_details": []},
                {"input_token_details": {"text_tokens": -1, "audio_tokens": True,
                                         "cached_tokens": 1e9}},
                {"output_token_details": {"text_tokens": 1 << 50}}):
        assert r.tokens.add(bad) == {}
    assert r.summary()["tokens"] == {"input_text": 3, "input_audio": 7, "output_text": 5,
                                     "output_audio": 11, "cached": 2}


def test_an_hour_long_call_keeps_a_bounded_record() -> None:
    r = record()
    for turn in range(5000):
        r.speech_stopped(200.0 + turn)
        r.reply_audio_started(200.5 + turn)
        r.tool_finished("search", "ok", 0.1)
    assert r.turns == 5000 and r.tool_calls_total == 5000
    summary = r.summary(now=6000.0)
    assert len(summary["turn_latency_ms"]) == MAX_KEPT == len(summary["tool_calls"])
    assert len(json.dumps(summary)) < 64 * 1024


def test_the_summary_is_the_call_log_line() -> None:
    r = record()
    r.rtp(packets_received=990, packets_lost=10, jitter_s=0.004)
    r.upstream_reconnected()
    r.tool_finished("search", "timeout", 10.0)
    r.end("hangup", 160.0, "2026-11-28T10:01:00.000+00:00")
    r.end("error", 170.0, "later")  # the first ending is the one
    s = r.summary()
    assert s["end_reason"] == "hangup" and s["duration_s"] == 60.0
    assert s["packet_loss"] == 0.01 and s["jitter_ms"] == 4
    assert s["upstream_reconnects"] == 1
    assert s["tool_calls"] == [{"name": "search", "ok": False, "outcome": "timeout",
                                "ms": 10000}]
    assert json.loads(json.dumps(s)) == s


def test_cost_charges_cached_input_at_the_cached_price() -> None:
    tokens = Tokens(input_text=1000, input_audio=2000, output_text=300, output_audio=4000,
                    cached=600)
    prices = {"input_text": 4.0, "cached": 0.4, "input_audio": 32.0, "output_text": 16.0,
              "output_audio": 64.0}
    expected = (400 * 4.0 + 600 * 0.4 + 2000 * 32.0 + 300 * 16.0 + 4000 * 64.0) / 1e6
    assert estimate_cost(tokens, prices) == approx(expected)
    # without a cached price, cached tokens stay input text tokens
    del prices["cached"]
    assert estimate_cost(tokens, prices) == approx(
        (1000 * 4.0 + 2000 * 32.0 + 300 * 16.0 + 4000 * 64.0) / 1e6)
    assert estimate_cost(tokens, {}) == 0.0
    record = CallRecord("c", started=0.0, started_utc="t")
    assert record.summary()["cost_usd"] is None  # no price table: no estimate
