"""Unit tests of the pure conversation state machine: no sockets, no asyncio.

They drive the same entry points the driver does: `handle` for client events and,
when it asks with DetectSpeech, `append_audio` with a detector's scores.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import numpy as np
import pytest

from rtc_agent.offline.conversation import Conversation
from rtc_agent.offline.outputs import (
    CancelResponse,
    DetectSpeech,
    Emit,
    IdSource,
    Output,
    Recognize,
    StartResponse,
)
from rtc_agent.offline.vad import EnergyDetector, SpeechDetector
from rtc_agent.protocol import BYTES_PER_MS, Dialect

GA, BETA = Dialect.GA, Dialect.BETA


def tone(ms: int, amplitude: int = 8000) -> bytes:
    t = np.arange(ms * 24) / 24000
    return (np.sin(2 * np.pi * 220 * t) * amplitude).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


def append_event(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


def counting_ids() -> IdSource:
    """Deterministic ids in the cloud's shape: event_1, item_2, ..."""
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter)}"


def new_conversation(dialect: Dialect = GA, **kwargs: Any) -> Conversation:
    return Conversation(dialect, new_id=counting_ids(), clock=lambda: 1000.0, **kwargs)


def events(outputs: list[Output]) -> list[dict[str, Any]]:
    return [o.event for o in outputs if isinstance(o, Emit)]


def actions(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if not isinstance(o, Emit)]


def types(outputs: list[Output]) -> list[str]:
    return [e["type"] for e in events(outputs)]


class Session:
    """A Conversation carried out as SessionDriver does it, synchronously: DetectSpeech
    is answered with the detector's scores (resetting it on restart), every other
    output is returned in order."""

    def __init__(self, conv: Conversation, detector: SpeechDetector | None = None) -> None:
        self.conv = conv
        self.detector = detector if detector is not None else EnergyDetector()

    def settle(self, outputs: list[Output]) -> list[Output]:
        done: list[Output] = []
        for out in outputs:
            if isinstance(out, DetectSpeech):
                if out.restart:
                    self.detector.reset()
                scores = self.detector.probabilities(out.pcm)
                done += self.settle(self.conv.append_audio(out.pcm, scores,
                                                           self.detector.window_ms))
            else:
                done.append(out)
        return done

    def send(self, event: object) -> list[Output]:
        return self.settle(self.conv.handle(event))

    def append(self, pcm: bytes, chunk_ms: int = 20) -> list[Output]:
        """pcm as a client streams it: appends of chunk_ms."""
        out: list[Output] = []
        for i in range(0, len(pcm), chunk_ms * BYTES_PER_MS):
            out += self.send(append_event(pcm[i : i + chunk_ms * BYTES_PER_MS]))
        return out

    def user_text(self, text: str) -> list[Output]:
        return self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})

    def start_response(self, **response: Any) -> str:
        out = self.send({"type": "response.create", **({"response": response} if response
                                                       else {})})
        assert types(out) == ["response.created"], out
        start = out[-1]
        assert isinstance(start, StartResponse)  # after the event that announces it
        return start.response_id


def make(dialect: Dialect = GA, **session: Any) -> Session:
    s = Session(new_conversation(dialect))
    if session:
        update = {"type": "realtime", **session} if dialect is GA else session
        out = s.send({"type": "session.update", "session": update})
        assert types(out) == ["session.updated"], out
    return s


def with_turn_detection(td: dict[str, Any] | None, dialect: Dialect = GA) -> Session:
    """A session whose turn_detection is td, set where the dialect keeps it."""
    if dialect is GA:
        return make(audio={"input": {"turn_detection": td}})
    return make(BETA, turn_detection=td)


# --- session ------------------------------------------------------------------------


def test_session_created_ga_shape_and_expiry() -> None:
    event = events(new_conversation(GA).created())[0]
    s = event["session"]
    assert event["type"] == "session.created" and event["event_id"].startswith("event_")
    assert s["type"] == "realtime" and s["object"] == "realtime.session"
    assert s["expires_at"] == 1000 + 3600
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert "modalities" not in s and "temperature" not in s


def test_session_created_beta_shape_and_expiry() -> None:
    s = events(new_conversation(BETA).created())[0]["session"]
    assert s["expires_at"] == 1000 + 1800
    assert s["modalities"] == ["text", "audio"]
    assert s["input_audio_format"] == "pcm16" and s["turn_detection"]["threshold"] == 0.5
    assert "audio" not in s and "type" not in s


def test_ids_and_clock_come_from_the_constructor() -> None:
    """Same inputs, same outputs: the state machine has no hidden randomness or time."""

    def run() -> list[Output]:
        s = Session(Conversation(GA, new_id=counting_ids(), clock=lambda: 50.0))
        out = s.conv.created() + s.user_text("hi")
        rid = s.start_response()
        return out + s.conv.response_speech(rid, "Hello.", tone(150)) \
            + s.append(silence(300) + tone(400) + silence(400))

    first, second = run(), run()
    assert first == second
    assert events(first)[0]["event_id"] == "event_3"  # after sess_1 and conv_2
    assert events(first)[0]["session"]["id"] == "sess_1"
    assert events(first)[0]["session"]["expires_at"] == 50 + 3600


def test_session_update_is_a_partial_merge() -> None:
    s = make()
    before = s.conv.session["audio"]["input"]["turn_detection"]
    out = events(s.send({"type": "session.update",
                         "session": {"type": "realtime", "instructions": "Be brief."}}))
    session = out[0]["session"]
    assert out[0]["type"] == "session.updated"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["turn_detection"] == before  # untouched fields stay
    out = events(s.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
    assert out[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert out[0]["session"]["instructions"] == "Be brief."


def test_ga_update_requires_session_type_and_is_dropped() -> None:
    s = make()
    out = events(s.send({"type": "session.update", "event_id": "e1",
                         "session": {"instructions": "x"}}))
    assert out[0]["type"] == "error"
    assert out[0]["error"]["code"] == "missing_required_parameter"
    assert out[0]["error"]["param"] == "session.type"
    assert out[0]["error"]["event_id"] == "e1"
    assert s.conv.session["instructions"] != "x"


def test_unknown_field_drops_the_whole_update() -> None:
    s = make()
    out = events(s.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "new", "bogus_field": 1}}))
    assert out[0]["error"]["code"] == "unknown_parameter"
    assert out[0]["error"]["param"] == "session.bogus_field"
    assert s.conv.session["instructions"] != "new"
    # Beta fields sent in GA are unknown too.
    out = events(s.send({"type": "session.update", "session": {"type": "realtime",
                                                               "modalities": ["text"]}}))
    assert out[0]["error"]["param"] == "session.modalities"


def test_invalid_values_name_their_param() -> None:
    s = make()
    out = events(s.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}}}))
    assert out[0]["error"]["param"] == "session.audio.input.turn_detection.threshold"
    out = events(s.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
    assert out[0]["error"]["code"] == "integer_below_min_value"


def test_beta_update_flat_fields() -> None:
    s = make(BETA)
    out = events(s.send({"type": "session.update", "session": {
        "modalities": ["text"], "turn_detection": None, "voice": "verse",
        "input_audio_transcription": {"model": "whisper-1"}, "temperature": 0.7}}))
    session = out[0]["session"]
    assert session["modalities"] == ["text"] and session["turn_detection"] is None
    assert session["voice"] == "verse" and session["temperature"] == 0.7
    assert session["input_audio_transcription"]["model"] == "whisper-1"
    assert s.conv.transcription_on


# --- input audio and VAD ------------------------------------------------------------


def test_server_vad_turn_with_timeline_and_auto_response() -> None:
    s = make()
    out = s.append(silence(1000) + tone(1000) + silence(1000))
    kinds = [o.event["type"] if isinstance(o, Emit) else type(o).__name__ for o in out]
    # Recognition starts early (speculative) on speech + a short tail; the commit reuses
    # it. Each action follows the events that announce what it works on.
    assert kinds == [
        "input_audio_buffer.speech_started", "Recognize", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
        "Recognize", "response.created", "StartResponse",
    ]
    started, stopped, committed = events(out)[:3]
    # Speech begins at 1000 ms; prefix padding (300 ms) is included in audio_start_ms.
    assert 650 <= started["audio_start_ms"] <= 750
    # It ends after the tone plus silence_duration_ms (200 ms), within a window or two.
    assert 2150 <= stopped["audio_end_ms"] <= 2300
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert committed["previous_item_id"] is None
    item = s.conv.find(committed["item_id"])
    assert item is not None and item.data["content"] == [{"type": "input_audio",
                                                          "transcript": None}]
    assert item.audio is not None
    assert abs(len(item.audio) // BYTES_PER_MS
               - (stopped["audio_end_ms"] - started["audio_start_ms"])) <= 1
    speculative, final, start = actions(out)
    assert isinstance(speculative, Recognize) and speculative.speculative
    assert isinstance(final, Recognize) and not final.speculative
    assert final.key == speculative.key and final.audio == speculative.audio
    assert final.item_id == committed["item_id"] and final.emit_events is False
    assert isinstance(start, StartResponse)


def test_a_single_voiced_window_is_a_click_not_speech() -> None:
    """One voiced VAD window (a click) must not start a turn; two consecutive ones do."""
    conv = new_conversation()  # server_vad, threshold 0.5
    window_ms = 32

    def scored(probabilities: list[float]) -> list[Output]:
        """Audio of one window per probability, scored as given."""
        pcm = silence(window_ms * len(probabilities))
        [detect] = conv.handle(append_event(pcm))
        assert isinstance(detect, DetectSpeech) and detect.pcm == pcm
        return conv.append_audio(detect.pcm, probabilities, window_ms)

    assert scored([0.0, 0.0, 0.9, 0.0, 0.0, 0.0]) == []  # a click
    assert scored([0.9, 0.0, 0.9, 0.0]) == []  # two clicks, not consecutive
    out = scored([0.0, 0.9, 0.9])
    assert types(out) == ["input_audio_buffer.speech_started"]


def test_a_pause_then_more_speech_gets_a_new_recognition_key() -> None:
    s = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                 "silence_duration_ms": 600}}})
    out = s.append(silence(500) + tone(500) + silence(300) + tone(500) + silence(800))
    recognitions = [a for a in actions(out) if isinstance(a, Recognize)]
    assert [a.speculative for a in recognitions] == [True, True, False]
    assert recognitions[0].key != recognitions[2].key == recognitions[1].key
    # The recogniser hears both phrases: speech plus the short tail after the last one.
    assert len(recognitions[2].audio) // BYTES_PER_MS >= 500 + 300 + 500


def test_vad_timeline_is_session_cumulative() -> None:
    s = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                 "create_response": False}}})
    first = s.append(silence(500) + tone(500) + silence(600))
    second = s.append(silence(400) + tone(500) + silence(600))
    assert "response.created" not in types(first)  # create_response: false
    s2 = next(e for e in events(second) if e["type"] == "input_audio_buffer.speech_started")
    assert 1600 + 400 - 300 - 40 <= s2["audio_start_ms"] <= 1600 + 400 - 300 + 40
    assert s.conv.items[0].id != s.conv.items[1].id


def test_threshold_is_honoured() -> None:
    s = make(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.99}}})
    quiet = tone(800, amplitude=300)  # EnergyDetector scores this ~0.4
    assert s.append(silence(200) + quiet + silence(600)) == []


def test_detector_restarts_with_the_vad_timeline() -> None:
    """DetectSpeech asks for a detector reset once after each commit, clear or new settings."""
    conv = new_conversation()

    def restart_flags() -> list[bool]:
        flags = []
        for _ in range(2):
            [detect] = conv.handle(append_event(silence(60)))
            assert isinstance(detect, DetectSpeech)
            conv.append_audio(detect.pcm, [], 32)
            flags.append(detect.restart)
        return flags

    assert restart_flags() == [True, False]  # a new session: the detector starts fresh
    assert restart_flags() == [False, False]
    conv.handle({"type": "input_audio_buffer.clear"})
    assert restart_flags() == [True, False]
    assert types(conv.handle({"type": "input_audio_buffer.commit"}))[0] == \
        "input_audio_buffer.committed"
    assert restart_flags() == [True, False]
    conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}}})
    assert restart_flags() == [True, False]


def test_without_turn_detection_audio_is_buffered_unscored() -> None:
    s = make(audio={"input": {"turn_detection": None}})
    assert s.conv.handle(append_event(tone(300))) == []  # no DetectSpeech, no events
    assert s.conv.input.buffered_ms == 300


def test_a_sample_split_across_appends_is_kept_whole() -> None:
    conv = new_conversation()
    pcm = tone(40)
    [first] = conv.handle(append_event(pcm[:481]))
    [second] = conv.handle(append_event(pcm[481:]))
    assert isinstance(first, DetectSpeech) and isinstance(second, DetectSpeech)
    assert (len(first.pcm), len(second.pcm)) == (480, len(pcm) - 480)
    assert first.pcm + second.pcm == pcm


def test_manual_commit_and_commit_empty() -> None:
    s = make(audio={"input": {"turn_detection": None}})
    assert s.append(tone(300)) == []  # no VAD events without turn detection
    s.send({"type": "input_audio_buffer.clear"})
    s.append(tone(60))
    err = events(s.send({"type": "input_audio_buffer.commit", "event_id": "c1"}))[0]
    assert err["error"]["code"] == "input_audio_buffer_commit_empty"
    assert err["error"]["event_id"] == "c1"
    s.append(tone(200))
    out = s.send({"type": "input_audio_buffer.commit"})
    assert types(out) == ["input_audio_buffer.committed", "conversation.item.added",
                          "conversation.item.done"]
    [recognize] = actions(out)
    assert isinstance(recognize, Recognize) and recognize.key is None
    item_audio = s.conv.items[0].audio
    assert item_audio is not None and len(item_audio) == 260 * BYTES_PER_MS
    assert events(s.send({"type": "input_audio_buffer.commit"}))[0]["error"]["code"] == \
        "input_audio_buffer_commit_empty"


def test_buffer_is_bounded() -> None:
    s = Session(new_conversation(max_buffer_ms=500))
    s.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": None}}}})
    s.append(tone(2000))
    assert s.conv.input.buffered_ms == 500


# --- responses ----------------------------------------------------------------------


def test_ga_audio_response_sequence() -> None:
    s = make()
    s.user_text("hi")
    rid = s.start_response()
    out = s.conv.response_speech(rid, "Hello.", tone(250)) + s.conv.response_finish(rid)
    assert actions(out) == []
    assert types(out) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio_transcript.delta", "response.output_audio.delta",
        "response.output_audio.delta", "response.output_audio.delta",
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "conversation.item.done", "response.output_item.done",
        "response.done", "rate_limits.updated",
    ]
    deltas = [base64.b64decode(e["delta"]) for e in events(out)
              if e["type"] == "response.output_audio.delta"]
    assert [len(d) // BYTES_PER_MS for d in deltas] == [100, 100, 50]
    done = events(out)[-2]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hello."}]
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert s.conv.active_response_id is None


def test_beta_text_response_sequence() -> None:
    s = make(BETA)
    assert types(s.user_text("hi")) == ["conversation.item.created"]
    rid = s.start_response(modalities=["text"])
    out = s.conv.response_speech(rid, "Hel") + s.conv.response_speech(rid, "lo.")
    out += s.conv.response_finish(rid)
    assert types(out) == [
        "response.output_item.added", "conversation.item.created", "response.content_part.added",
        "response.text.delta", "response.text.delta", "response.text.done",
        "response.content_part.done", "response.output_item.done", "response.done",
        "rate_limits.updated",
    ]
    assert events(out)[5]["text"] == "Hello."
    assert events(out)[-2]["response"]["modalities"] == ["text"]
    assert events(out)[-2]["response"]["output"][0]["content"][0] == {"type": "text",
                                                                      "text": "Hello."}


def test_function_call_sequence_and_follow_up() -> None:
    s = make(tools=[{"type": "function", "name": "search", "parameters": {}}])
    s.user_text("search for cats")
    rid = s.start_response()
    out = s.conv.response_function_call(rid, "search", '{"query": "cats"}', "call_1")
    out += s.conv.response_finish(rid)
    assert types(out) == [
        "response.output_item.added", "conversation.item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "conversation.item.done",
        "response.output_item.done", "response.done", "rate_limits.updated",
    ]
    deltas = "".join(e["delta"] for e in events(out)
                     if e["type"] == "response.function_call_arguments.delta")
    assert deltas == '{"query": "cats"}'
    done = events(out)[6]
    assert done["name"] == "search" and done["call_id"] == "call_1"
    out = s.send({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "Cats purr."}})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    rid2 = s.start_response()
    turns = s.conv.responder_input(rid2).turns
    assert [t.kind for t in turns] == ["message", "function_call", "function_call_output"]
    assert turns[-1].text == "Cats purr."


def test_second_response_is_rejected_while_one_is_active() -> None:
    s = make()
    rid = s.start_response()
    err = events(s.send({"type": "response.create", "event_id": "r2"}))[0]["error"]
    assert err["code"] == "conversation_already_has_active_response" and rid in err["message"]
    # Out-of-band responses may run alongside.
    oob = s.send({"type": "response.create", "response": {"conversation": "none"}})
    assert types(oob) == ["response.created"]
    assert events(oob)[0]["response"]["conversation_id"] is None


def test_cancel() -> None:
    s = make()
    err = events(s.send({"type": "response.cancel", "event_id": "x"}))[0]["error"]
    assert err["code"] == "response_cancel_not_active" and err["event_id"] == "x"
    rid = s.start_response()
    s.conv.response_speech(rid, "Long story.", tone(300))
    out = s.send({"type": "response.cancel"})
    assert actions(out) == [CancelResponse(rid)]
    assert types(out)[-2:] == ["response.done", "rate_limits.updated"]
    assert events(out)[-2]["response"]["status"] == "cancelled"
    assert events(out)[-2]["response"]["status_details"] == {"type": "cancelled",
                                                             "reason": "client_cancelled"}
    assert events(out)[-3]["item"]["status"] == "incomplete"
    assert s.conv.response_speech(rid, "more", tone(100)) == []  # late output is dropped


def test_vad_interrupts_an_active_response() -> None:
    s = make()
    rid = s.start_response()
    s.conv.response_speech(rid, "Once upon a time.", tone(500))
    out = s.append(silence(200) + tone(300))
    assert types(out)[:2] == ["input_audio_buffer.speech_started",
                              "response.output_audio.done"]
    done = next(e for e in events(out) if e["type"] == "response.done")
    assert done["response"]["status_details"] == {"type": "cancelled",
                                                  "reason": "turn_detected"}
    assert CancelResponse(rid) in actions(out)
    assert not s.conv.is_active(rid)


def test_interrupt_response_false_keeps_the_response() -> None:
    s = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                 "interrupt_response": False}}})
    rid = s.start_response()
    s.conv.response_speech(rid, "Talking.", tone(200))
    out = s.append(silence(200) + tone(300))
    assert types(out) == ["input_audio_buffer.speech_started"]
    assert actions(out) == []
    assert s.conv.is_active(rid)


def test_truncate_delete_retrieve() -> None:
    s = make()
    rid = s.start_response()
    s.conv.response_speech(rid, "Hello there.", tone(1000))
    s.conv.response_finish(rid)
    item = s.conv.items[-1]

    def send(event: dict[str, Any]) -> dict[str, Any]:
        [out] = events(s.send(event))
        return out

    err = send({"type": "conversation.item.truncate", "item_id": "nope",
                "content_index": 0, "audio_end_ms": 10})["error"]
    assert err["code"] == "item_truncate_invalid_item_id"
    err = send({"type": "conversation.item.truncate", "item_id": item.id,
                "content_index": 0})["error"]
    assert err["code"] == "missing_required_parameter" and err["param"] == "audio_end_ms"
    out = send({"type": "conversation.item.truncate", "item_id": item.id,
                "content_index": 0, "audio_end_ms": 400})
    assert out == {**out, "type": "conversation.item.truncated", "audio_end_ms": 400}
    assert item.data["content"][0]["transcript"] == ""
    got = send({"type": "conversation.item.retrieve", "item_id": item.id})
    assert len(base64.b64decode(got["item"]["content"][0]["audio"])) == 400 * BYTES_PER_MS
    # Beyond the audio length is clamped to what exists.
    out = send({"type": "conversation.item.truncate", "item_id": item.id,
                "content_index": 0, "audio_end_ms": 5000})
    assert out["audio_end_ms"] == 400
    assert send({"type": "conversation.item.delete", "item_id": item.id})["type"] == \
        "conversation.item.deleted"
    for kind, code in (("delete", "item_delete_invalid_item_id"),
                       ("retrieve", "item_retrieve_invalid_item_id")):
        err = send({"type": f"conversation.item.{kind}", "item_id": item.id})["error"]
        assert err["code"] == code


def test_item_create_positions() -> None:
    s = make()
    s.user_text("one")
    out = events(s.send({"type": "conversation.item.create", "previous_item_id": "root",
                         "item": {"type": "message", "role": "system",
                                  "content": [{"type": "input_text", "text": "zero"}]}}))
    assert out[0]["previous_item_id"] is None
    assert [i.heard for i in s.conv.items] == ["zero", "one"]
    err = events(s.send({"type": "conversation.item.create", "previous_item_id": "missing",
                         "item": {"type": "message", "role": "user", "content": []}}))[0]
    assert err["error"]["param"] == "previous_item_id" and len(s.conv.items) == 2
    err = events(s.send({"type": "conversation.item.create", "item": {"type": "message",
                                                                       "role": "user"}}))[0]
    assert err["error"]["param"] == "item.content"


def test_client_audio_items_are_recognised() -> None:
    s = make()
    out = s.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(tone(300)).decode()}]}})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    [recognize] = actions(out)
    assert recognize == Recognize(s.conv.items[0].id, tone(300), False)
    rid = s.start_response()
    assert s.conv.pending_recognition(rid) == [s.conv.items[0].id]


def test_transcription_events_only_when_enabled() -> None:
    s = make()
    s.append(silence(400) + tone(500) + silence(500))
    item_id = s.conv.items[0].id
    assert s.conv.transcription_done(item_id, "hello", emit=False) == []
    assert s.conv.items[0].heard == "hello"  # the responder still understands the audio
    s = make(audio={"input": {"transcription": {"model": "whisper-1"}}})
    out = s.append(silence(400) + tone(500) + silence(500))
    recognize = next(a for a in actions(out) if isinstance(a, Recognize) and not a.speculative)
    assert recognize.emit_events
    done = s.conv.transcription_done(recognize.item_id, "hello", emit=True)
    assert types(done) == ["conversation.item.input_audio_transcription.delta",
                           "conversation.item.input_audio_transcription.completed"]
    assert events(done)[1]["transcript"] == "hello"
    failed = s.conv.transcription_done(recognize.item_id, None, emit=True, error="boom")
    assert types(failed) == ["conversation.item.input_audio_transcription.failed"]


@pytest.mark.parametrize(("event", "code", "param"), [
    ("not an object", "invalid_event", None),
    ({"event_id": "e"}, "invalid_event", None),
    ({"type": "nope"}, "invalid_value", "type"),
    ({"type": "response.cancel", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "conversation.item.delete"}, "missing_required_parameter", "item_id"),
    ({"type": "input_audio_buffer.append", "audio": "!!!"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAAA", "x": 1}, "unknown_parameter", "x"),
])
def test_malformed_events(event: object, code: str, param: str | None) -> None:
    s = make()
    out = s.send(event)
    assert len(out) == 1 and types(out) == ["error"]
    assert events(out)[0]["error"]["code"] == code
    assert events(out)[0]["error"]["param"] == param
    assert types(s.send({"type": "input_audio_buffer.clear"})) == \
        ["input_audio_buffer.cleared"]  # the session goes on


def test_real_engines_drive_the_state_machine(engines) -> None:
    """Silero VAD and pocketsphinx in the loop: piper speech makes a recognisable turn."""
    from tests.speech import speak_pcm

    s = Session(new_conversation(), engines.detector_factory())
    s.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
    out = s.append(speak_pcm("what is twelve times seven", 24000).tobytes())
    assert types(out)[:3] == ["input_audio_buffer.speech_started",
                              "input_audio_buffer.speech_stopped",
                              "input_audio_buffer.committed"]
    recognize = actions(out)[0]
    assert isinstance(recognize, Recognize)
    text = engines.recognizer.transcribe(recognize.audio, 24000)
    assert "seven" in text


def test_stored_audio_is_bounded() -> None:
    s = Session(new_conversation(max_stored_audio_ms=1500))
    s.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
    for _ in range(3):
        out = s.append(silence(300) + tone(600) + silence(400))
        for action in actions(out):
            if isinstance(action, Recognize) and not action.speculative:
                s.conv.transcription_done(action.item_id, "x", emit=False)
    items = s.conv.items
    assert len(items) == 3
    kept = [i.audio is not None for i in items]
    assert kept[-1] and not kept[0]  # the oldest audio went first
    assert sum(len(i.audio) for i in items if i.audio) <= 1500 * BYTES_PER_MS


def test_session_updates_from_common_clients_are_accepted() -> None:
    """Payload shapes that openai-agents / Pipecat (GA) and rtclient-style beta clients send."""
    pcm = {"type": "audio/pcm", "rate": 24000}
    ga = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
          "instructions": "Be kind.", "tool_choice": "auto", "tracing": "auto",
          "max_output_tokens": "inf", "truncation": "auto", "prompt": None,
          "tools": [{"type": "function", "name": "get_weather", "description": "Weather.",
                     "parameters": {"type": "object", "properties": {
                         "city": {"type": "string"}}, "required": ["city"]}}],
          "audio": {"input": {"format": pcm, "noise_reduction": {"type": "near_field"},
                              "transcription": {"model": "gpt-4o-mini-transcribe",
                                                "language": "en"},
                              "turn_detection": {"type": "semantic_vad", "eagerness": "high",
                                                 "create_response": True,
                                                 "interrupt_response": True}},
                    "output": {"format": pcm, "voice": "marin", "speed": 1.1}}}
    out = events(make().send({"type": "session.update", "session": ga}))
    assert out[0]["type"] == "session.updated", out
    assert out[0]["session"]["audio"]["input"]["turn_detection"]["eagerness"] == "high"
    beta = {"modalities": ["text", "audio"], "instructions": "Be kind.", "voice": "alloy",
            "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                               "prefix_padding_ms": 300, "silence_duration_ms": 500,
                               "create_response": True, "interrupt_response": True},
            "tools": [], "tool_choice": "auto", "temperature": 0.8,
            "max_response_output_tokens": 4096}
    out = events(make(BETA).send({"type": "session.update", "session": beta}))
    assert out[0]["type"] == "session.updated", out
    assert out[0]["session"]["max_response_output_tokens"] == 4096


def test_session_expired_message_matches_the_cloud() -> None:
    ga = events(new_conversation(GA).expire())[0]["error"]
    assert (ga["code"], ga["message"]) == (
        "session_expired", "Your session hit the maximum duration of 60 minutes.")
    beta = events(new_conversation(BETA).expire())[0]["error"]
    assert beta["message"] == "Your session hit the maximum duration of 30 minutes."


def test_finished_responses_are_forgotten_but_a_running_one_is_kept() -> None:
    """An hour of out-of-band replies holds a bounded history; a live response survives it."""
    conv = new_conversation()
    first = actions(conv.handle({"type": "response.create"}))
    (running,) = [a.response_id for a in first if isinstance(a, StartResponse)]
    for _ in range(500):
        outs = conv.handle({"type": "response.create", "response": {"conversation": "none"}})
        (rid,) = [a.response_id for a in outs if isinstance(a, StartResponse)]
        assert "response.done" in types(conv.response_finish(rid))
    assert len(conv.responses) <= 64
    assert conv.is_active(running)
    assert "response.done" in types(conv.response_finish(running))
