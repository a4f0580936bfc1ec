"""A long session holds what a short one holds: thousands of simulated turns (user
audio and spoken replies, in and out of band) through the pure Conversation."""

from __future__ import annotations

import base64
import time
from typing import Any

from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.outputs import Emit, Output, Recognize, StartResponse
from rtc_agent.offline.responses import MAX_REPLY_AUDIO_MS
from rtc_agent.protocol import BYTES_PER_MS, Dialect
from tests.offline.test_conversation import counting_ids

USER_MS, REPLY_MS, CAP_MS, MAX_ITEMS = 500, 1000, 20_000, 300


def manual_conversation(**kwargs: Any) -> Conversation:
    conv = Conversation(Dialect.GA, new_id=counting_ids(), clock=lambda: 0.0, **kwargs)
    out = conv.handle({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    assert [o.event["type"] for o in out if isinstance(o, Emit)] == ["session.updated"]
    return conv


def started(outputs: list[Output]) -> str:
    [start] = [o for o in outputs if isinstance(o, StartResponse)]
    return start.response_id


def turn(conv: Conversation, n: int) -> None:
    """One user turn (audio, committed, recognised) and a spoken reply; every tenth turn
    also an out-of-band spoken reply."""
    pcm = bytes([n % 251]) * (USER_MS * BYTES_PER_MS)
    conv.handle({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    out = conv.handle({"type": "input_audio_buffer.commit"})
    [recognize] = [o for o in out if isinstance(o, Recognize)]
    conv.transcription_done(recognize.item_id, f"turn {n}", emit=False)
    for extra in ({}, {"conversation": "none"}) if n % 10 == 0 else ({},):
        rid = started(conv.handle({"type": "response.create", "response": extra}))
        conv.responder_input(rid)
        conv.response_speech(rid, f"Reply {n}.", bytes(REPLY_MS * BYTES_PER_MS))
        conv.response_finish(rid)


def stored_audio_bytes(conv: Conversation) -> int:
    return sum(len(i.audio) for i in conv.items if i.audio is not None)


def test_thousands_of_turns_keep_audio_and_items_bounded() -> None:
    conv = manual_conversation(max_stored_audio_ms=CAP_MS, max_items=MAX_ITEMS)
    cap = CAP_MS * BYTES_PER_MS
    for n in range(3000):
        turn(conv, n)
        assert conv.store.audio_bytes <= cap, f"turn {n}"
        assert stored_audio_bytes(conv) == conv.store.audio_bytes, f"turn {n}"
        assert len(conv.items) <= MAX_ITEMS, f"turn {n}"
    # The cap counts user and reply audio alike, oldest first: the newest of both stay.
    user = [i for i in conv.items if i.data["role"] == "user"]
    reply = [i for i in conv.items if i.data["role"] == "assistant"]
    assert user[-1].audio is not None and len(user[-1].audio) == USER_MS * BYTES_PER_MS
    assert reply[-1].audio is not None and len(reply[-1].audio) == REPLY_MS * BYTES_PER_MS
    assert stored_audio_bytes(conv) > cap - (USER_MS + REPLY_MS) * BYTES_PER_MS  # cap used
    # Freed items still know how long they were (truncate clamps to that).
    assert reply[0].audio is None and reply[0].audio_ms == REPLY_MS
    # Out-of-band replies kept no audio; finished responses keep no context or tools.
    assert len(conv.responses) <= 64
    for rid in list(conv.responses._by_id):
        resp = conv.responses.get(rid)
        assert resp is not None and resp.context == [] and resp.opts.tools == []
        assert all(i.audio is None for i in resp.output) or resp.in_conversation
    assert conv.store.chars == sum(i.chars for i in conv.items)


def test_per_turn_work_does_not_grow_with_the_session() -> None:
    """Turns 2500-3000 cost what turns 500-1000 cost (both past every bound): nothing
    scans all the items ever created. Best of several blocks, to ignore noise."""
    conv = manual_conversation(max_stored_audio_ms=CAP_MS, max_items=MAX_ITEMS)

    def block(start: int, size: int = 100) -> float:
        t0 = time.perf_counter()
        for n in range(start, start + size):
            turn(conv, n)
        return time.perf_counter() - t0

    for n in range(500):
        turn(conv, n)
    early = min(block(n) for n in range(500, 1000, 100))
    for n in range(1000, 2500):
        turn(conv, n)
    late = min(block(n) for n in range(2500, 3000, 100))
    assert late < 2.5 * early, (early, late)


def test_a_reply_streaming_forever_keeps_a_bounded_audio() -> None:
    conv = manual_conversation()
    rid = started(conv.handle({"type": "response.create"}))
    second = bytes(1000 * BYTES_PER_MS)
    for _ in range(MAX_REPLY_AUDIO_MS // 1000 + 60):
        conv.response_speech(rid, "la", second)
    item = conv.items[-1]
    assert item.audio is not None and len(item.audio) == MAX_REPLY_AUDIO_MS * BYTES_PER_MS
    assert item.audio_ms == MAX_REPLY_AUDIO_MS + 60_000  # the duration is still counted
    out = conv.handle({"type": "conversation.item.truncate", "item_id": item.id,
                       "content_index": 0, "audio_end_ms": 10**9})
    truncated = [o.event for o in out if isinstance(o, Emit)][-1]
    assert truncated["type"] == "conversation.item.truncated"
    assert truncated["audio_end_ms"] == MAX_REPLY_AUDIO_MS + 60_000


def test_truncate_after_the_audio_was_freed_clamps_to_its_duration() -> None:
    conv = manual_conversation(max_stored_audio_ms=1500)
    rid = started(conv.handle({"type": "response.create"}))
    conv.response_speech(rid, "One.", bytes(1000 * BYTES_PER_MS))
    conv.response_finish(rid)
    first = conv.items[-1]
    rid = started(conv.handle({"type": "response.create"}))
    conv.response_speech(rid, "Two.", bytes(1000 * BYTES_PER_MS))
    conv.response_finish(rid)
    assert first.audio is None  # over the cap: the oldest audio went
    out = conv.handle({"type": "conversation.item.truncate", "item_id": first.id,
                       "content_index": 0, "audio_end_ms": 700})
    event = [o.event for o in out if isinstance(o, Emit)][-1]
    assert event["type"] == "conversation.item.truncated" and event["audio_end_ms"] == 700
    assert first.audio_ms == 700
    out = conv.handle({"type": "conversation.item.retrieve", "item_id": first.id})
    item = [o.event for o in out if isinstance(o, Emit)][-1]["item"]
    assert "audio" not in item["content"][0]
    assert conv.store.audio_bytes == stored_audio_bytes(conv) == 1000 * BYTES_PER_MS


def test_a_hundred_out_of_band_responses_are_refused_past_the_cap() -> None:
    conv = manual_conversation()
    codes = []
    for i in range(100):
        out = conv.handle({"type": "response.create", "event_id": f"ev{i}",
                           "response": {"conversation": "none"}})
        errors = [o.event["error"] for o in out
                  if isinstance(o, Emit) and o.event["type"] == "error"]
        codes.append(errors[0]["code"] if errors else "started")
        if errors:
            assert errors[0]["event_id"] == f"ev{i}"
            assert "out-of-band responses in progress" in errors[0]["message"]
    assert codes.count("started") == 4
    assert codes.count("too_many_active_responses") == 96
    # The conversation's own response is still allowed, and finishing frees a slot.
    rid = started(conv.handle({"type": "response.create"}))
    conv.response_finish(rid)
    running = conv.responses.out_of_band_in_progress()
    conv.response_finish(running[0])
    started(conv.handle({"type": "response.create", "response": {"conversation": "none"}}))
