"""The pure playout buffer: frames, item boundaries, played-ms books, flush, bound."""

from __future__ import annotations

import pytest

from rtc_agent.media.playout_buffer import FRAME_BYTES, PlayoutBuffer


def recorder() -> tuple[list[str], list[tuple[str, float]], PlayoutBuffer]:
    started: list[str] = []
    finished: list[tuple[str, float]] = []
    buf = PlayoutBuffer(on_item_started=started.append,
                        on_item_finished=lambda i, ms: finished.append((i, ms)))
    return started, finished, buf


def test_frames_carry_the_audio_in_order_and_pad_the_last() -> None:
    started, finished, buf = recorder()
    buf.enqueue("a", bytes([1]) * (FRAME_BYTES + 100))
    buf.end_item("a")
    frame = bytearray(FRAME_BYTES)
    assert buf.fill(frame) == FRAME_BYTES and frame == bytes([1]) * FRAME_BYTES
    assert started == ["a"] and finished == []
    assert buf.fill(frame) == 100
    assert frame[:100] == bytes([1]) * 100 and frame[100:] == bytes(FRAME_BYTES - 100)
    # The item ends with its last frame: 20 ms + 100 bytes (~2.08 ms) sent.
    assert finished == [("a", pytest.approx(20 + 100 / 48))]
    assert buf.fill(frame) == 0 and buf.current_item is None


def test_an_item_starts_on_a_frame_boundary_and_ends_the_previous() -> None:
    started, finished, buf = recorder()
    buf.enqueue("a", bytes([1]) * 100)
    buf.enqueue("b", bytes([2]) * FRAME_BYTES)
    frame = bytearray(FRAME_BYTES)
    assert buf.fill(frame) == 100 and frame[100:] == bytes(FRAME_BYTES - 100)
    assert buf.fill(frame) == FRAME_BYTES and frame == bytes([2]) * FRAME_BYTES
    # "a" was never marked complete, but "b" replacing it on air finishes it.
    assert started == ["a", "b"] and finished == [("a", pytest.approx(100 / 48))]


def test_end_item_after_the_audio_ran_out_finishes_it_at_once() -> None:
    _, finished, buf = recorder()
    buf.enqueue("a", bytes(FRAME_BYTES))
    buf.fill(bytearray(FRAME_BYTES))
    assert finished == []
    buf.end_item("a")
    assert finished == [("a", 20.0)]


def test_flush_reports_what_was_on_air_and_empties_the_queue() -> None:
    _, finished, buf = recorder()
    buf.enqueue("a", bytes(FRAME_BYTES * 10))
    buf.enqueue("b", bytes(FRAME_BYTES * 10))
    for _ in range(3):
        buf.fill(bytearray(FRAME_BYTES))
    flushed = buf.flush()
    assert (flushed.item_id, flushed.sent_ms) == ("a", 60.0)
    assert buf.buffered_ms == 0 and buf.current_item is None and finished == []
    assert buf.fill(bytearray(FRAME_BYTES)) == 0


def test_the_buffer_is_bounded_and_counts_what_it_dropped() -> None:
    buf = PlayoutBuffer(max_buffer_ms=100)
    buf.enqueue("a", bytes(FRAME_BYTES * 5))
    buf.enqueue("a", bytes(FRAME_BYTES))
    assert buf.buffered_ms == 100 and buf.dropped_ms == 20
