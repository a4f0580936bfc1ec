"""Unit tests of the pure conversation state machine: no sockets, no asyncio."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from rtc_agent.offline.conversation import (
    CancelResponse,
    Conversation,
    Recognize,
    StartResponse,
)
from rtc_agent.offline.dialect import BETA, GA
from rtc_agent.offline.vad import EnergyDetector
from rtc_agent.protocol import BYTES_PER_MS


def tone(ms: int, amplitude: int = 8000) -> bytes:
    t = np.arange(ms * 24) / 24000
    return (np.sin(2 * np.pi * 220 * t) * amplitude).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


def append(conv: Conversation, pcm: bytes, chunk_ms: int = 20) -> list[dict]:
    events = []
    for i in range(0, len(pcm), chunk_ms * BYTES_PER_MS):
        chunk = pcm[i : i + chunk_ms * BYTES_PER_MS]
        events += conv.handle({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(chunk).decode()})
    return events


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def make(dialect=GA, **session) -> Conversation:
    conv = Conversation(dialect, detector=EnergyDetector(), clock=lambda: 1000.0)
    if session:
        update = {"type": "realtime", **session} if dialect is GA else session
        out = conv.handle({"type": "session.update", "session": update})
        assert out[0]["type"] == "session.updated", out
    return conv


def user_text(conv: Conversation, text: str) -> list[dict]:
    return conv.handle({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def start_response(conv: Conversation, **response) -> str:
    events = conv.handle({"type": "response.create", **({"response": response} if response
                                                        else {})})
    assert types(events) == ["response.created"], events
    actions = conv.take_actions()
    assert isinstance(actions[-1], StartResponse)
    return actions[-1].response_id


# --- session ------------------------------------------------------------------------


def test_session_created_ga_shape_and_expiry() -> None:
    event = Conversation(GA, clock=lambda: 1000.0).created_events()[0]
    s = event["session"]
    assert event["type"] == "session.created" and event["event_id"].startswith("event_")
    assert s["type"] == "realtime" and s["object"] == "realtime.session"
    assert s["expires_at"] == 1000 + 3600
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert "modalities" not in s and "temperature" not in s


def test_session_created_beta_shape_and_expiry() -> None:
    s = Conversation(BETA, clock=lambda: 1000.0).created_events()[0]["session"]
    assert s["expires_at"] == 1000 + 1800
    assert s["modalities"] == ["text", "audio"]
    assert s["input_audio_format"] == "pcm16" and s["turn_detection"]["threshold"] == 0.5
    assert "audio" not in s and "type" not in s


def test_session_update_is_a_partial_merge() -> None:
    conv = make()
    before = conv.session["audio"]["input"]["turn_detection"]
    out = conv.handle({"type": "session.update",
                       "session": {"type": "realtime", "instructions": "Be brief."}})
    s = out[0]["session"]
    assert out[0]["type"] == "session.updated"
    assert s["instructions"] == "Be brief."
    assert s["audio"]["input"]["turn_detection"] == before  # untouched fields stay
    out = conv.handle({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    assert out[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert out[0]["session"]["instructions"] == "Be brief."


def test_ga_update_requires_session_type_and_is_dropped() -> None:
    conv = make()
    out = conv.handle({"type": "session.update", "event_id": "e1",
                       "session": {"instructions": "x"}})
    assert out[0]["type"] == "error"
    assert out[0]["error"]["code"] == "missing_required_parameter"
    assert out[0]["error"]["param"] == "session.type"
    assert out[0]["error"]["event_id"] == "e1"
    assert conv.session["instructions"] != "x"


def test_unknown_field_drops_the_whole_update() -> None:
    conv = make()
    out = conv.handle({"type": "session.update", "session": {
        "type": "realtime", "instructions": "new", "bogus_field": 1}})
    assert out[0]["error"]["code"] == "unknown_parameter"
    assert out[0]["error"]["param"] == "session.bogus_field"
    assert conv.session["instructions"] != "new"
    # Beta fields sent in GA are unknown too.
    out = conv.handle({"type": "session.update", "session": {"type": "realtime",
                                                             "modalities": ["text"]}})
    assert out[0]["error"]["param"] == "session.modalities"


def test_invalid_values_name_their_param() -> None:
    conv = make()
    out = conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}}})
    assert out[0]["error"]["param"] == "session.audio.input.turn_detection.threshold"
    out = conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}})
    assert out[0]["error"]["code"] == "integer_below_min_value"


def test_beta_update_flat_fields() -> None:
    conv = make(BETA)
    out = conv.handle({"type": "session.update", "session": {
        "modalities": ["text"], "turn_detection": None, "voice": "verse",
        "input_audio_transcription": {"model": "whisper-1"}, "temperature": 0.7}})
    s = out[0]["session"]
    assert s["modalities"] == ["text"] and s["turn_detection"] is None
    assert s["voice"] == "verse" and s["temperature"] == 0.7
    assert s["input_audio_transcription"]["model"] == "whisper-1"
    assert conv.transcription_on


# --- input audio and VAD ------------------------------------------------------------


def test_server_vad_turn_with_timeline_and_auto_response() -> None:
    conv = make()
    events = append(conv, silence(1000) + tone(1000) + silence(1000))
    assert types(events) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
        "response.created",
    ]
    started, stopped, committed = events[0], events[1], events[2]
    # Speech begins at 1000 ms; prefix padding (300 ms) is included in audio_start_ms.
    assert 650 <= started["audio_start_ms"] <= 750
    # It ends after the tone plus silence_duration_ms (200 ms), within a window or two.
    assert 2150 <= stopped["audio_end_ms"] <= 2300
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert committed["previous_item_id"] is None
    item = conv.find(committed["item_id"])
    assert item is not None and item.data["content"] == [{"type": "input_audio",
                                                          "transcript": None}]
    assert abs(len(item.audio) // BYTES_PER_MS
               - (stopped["audio_end_ms"] - started["audio_start_ms"])) <= 1
    speculative, final, start = conv.take_actions()
    # Recognition starts early on speech + a short tail; the commit reuses that key.
    assert isinstance(speculative, Recognize) and speculative.speculative
    assert isinstance(final, Recognize) and not final.speculative
    assert final.key == speculative.key and final.audio == speculative.audio
    assert final.item_id == committed["item_id"] and final.emit_events is False
    assert isinstance(start, StartResponse)


def test_a_pause_then_more_speech_gets_a_new_recognition_key() -> None:
    conv = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                    "silence_duration_ms": 600}}})
    append(conv, silence(500) + tone(500) + silence(300) + tone(500) + silence(800))
    actions = [a for a in conv.take_actions() if isinstance(a, Recognize)]
    assert [a.speculative for a in actions] == [True, True, False]
    assert actions[0].key != actions[2].key == actions[1].key
    # The recogniser hears both phrases: speech plus the short tail after the last one.
    assert len(actions[2].audio) // BYTES_PER_MS >= 500 + 300 + 500


def test_vad_timeline_is_session_cumulative() -> None:
    conv = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                    "create_response": False}}})
    first = append(conv, silence(500) + tone(500) + silence(600))
    second = append(conv, silence(400) + tone(500) + silence(600))
    assert "response.created" not in types(first)  # create_response: false
    s2 = next(e for e in second if e["type"] == "input_audio_buffer.speech_started")
    assert 1600 + 400 - 300 - 40 <= s2["audio_start_ms"] <= 1600 + 400 - 300 + 40
    assert conv.items[0].id != conv.items[1].id


def test_threshold_is_honoured() -> None:
    conv = make(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.99}}})
    quiet = tone(800, amplitude=300)  # EnergyDetector scores this ~0.4
    assert append(conv, silence(200) + quiet + silence(600)) == []


def test_manual_commit_and_commit_empty() -> None:
    conv = make(audio={"input": {"turn_detection": None}})
    assert append(conv, tone(300)) == []  # no VAD events without turn detection
    conv.handle({"type": "input_audio_buffer.clear"})
    append(conv, tone(60))
    err = conv.handle({"type": "input_audio_buffer.commit", "event_id": "c1"})[0]
    assert err["error"]["code"] == "input_audio_buffer_commit_empty"
    assert err["error"]["event_id"] == "c1"
    append(conv, tone(200))
    events = conv.handle({"type": "input_audio_buffer.commit"})
    assert types(events) == ["input_audio_buffer.committed", "conversation.item.added",
                             "conversation.item.done"]
    assert len(conv.items[0].audio) == 260 * BYTES_PER_MS
    assert conv.handle({"type": "input_audio_buffer.commit"})[0]["error"]["code"] == \
        "input_audio_buffer_commit_empty"


def test_buffer_is_bounded() -> None:
    conv = Conversation(GA, max_buffer_ms=500)
    conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": None}}}})
    append(conv, tone(2000))
    assert len(conv.buffer) == 500 * BYTES_PER_MS


# --- responses ----------------------------------------------------------------------


def test_ga_audio_response_sequence() -> None:
    conv = make()
    user_text(conv, "hi")
    rid = start_response(conv)
    events = conv.response_speech(rid, "Hello.", tone(250))
    events += conv.response_finish(rid)
    assert types(events) == [
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio_transcript.delta", "response.output_audio.delta",
        "response.output_audio.delta", "response.output_audio.delta",
        "response.output_audio.done", "response.output_audio_transcript.done",
        "response.content_part.done", "conversation.item.done", "response.output_item.done",
        "response.done", "rate_limits.updated",
    ]
    deltas = [base64.b64decode(e["delta"]) for e in events
              if e["type"] == "response.output_audio.delta"]
    assert [len(d) // BYTES_PER_MS for d in deltas] == [100, 100, 50]
    done = events[-2]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hello."}]
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert conv.active_response_id is None


def test_beta_text_response_sequence() -> None:
    conv = make(BETA)
    assert types(user_text(conv, "hi")) == ["conversation.item.created"]
    rid = start_response(conv, modalities=["text"])
    events = conv.response_speech(rid, "Hel") + conv.response_speech(rid, "lo.")
    events += conv.response_finish(rid)
    assert types(events) == [
        "response.output_item.added", "conversation.item.created", "response.content_part.added",
        "response.text.delta", "response.text.delta", "response.text.done",
        "response.content_part.done", "response.output_item.done", "response.done",
        "rate_limits.updated",
    ]
    assert events[5]["text"] == "Hello."
    assert events[-2]["response"]["modalities"] == ["text"]
    assert events[-2]["response"]["output"][0]["content"][0] == {"type": "text",
                                                                 "text": "Hello."}


def test_function_call_sequence_and_follow_up() -> None:
    conv = make(tools=[{"type": "function", "name": "search", "parameters": {}}])
    user_text(conv, "search for cats")
    rid = start_response(conv)
    events = conv.response_function_call(rid, "search", '{"query": "cats"}', "call_1")
    events += conv.response_finish(rid)
    assert types(events) == [
        "response.output_item.added", "conversation.item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "conversation.item.done",
        "response.output_item.done", "response.done", "rate_limits.updated",
    ]
    deltas = "".join(e["delta"] for e in events
                     if e["type"] == "response.function_call_arguments.delta")
    assert deltas == '{"query": "cats"}'
    done = events[6]
    assert done["name"] == "search" and done["call_id"] == "call_1"
    out = conv.handle({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "Cats purr."}})
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    rid2 = start_response(conv)
    turns = conv.responder_input(rid2).turns
    assert [t.kind for t in turns] == ["message", "function_call", "function_call_output"]
    assert turns[-1].text == "Cats purr."


def test_second_response_is_rejected_while_one_is_active() -> None:
    conv = make()
    rid = start_response(conv)
    err = conv.handle({"type": "response.create", "event_id": "r2"})[0]["error"]
    assert err["code"] == "conversation_already_has_active_response" and rid in err["message"]
    # Out-of-band responses may run alongside.
    oob = conv.handle({"type": "response.create", "response": {"conversation": "none"}})
    assert oob[0]["type"] == "response.created"
    assert oob[0]["response"]["conversation_id"] is None


def test_cancel() -> None:
    conv = make()
    err = conv.handle({"type": "response.cancel", "event_id": "x"})[0]["error"]
    assert err["code"] == "response_cancel_not_active" and err["event_id"] == "x"
    rid = start_response(conv)
    conv.response_speech(rid, "Long story.", tone(300))
    events = conv.handle({"type": "response.cancel"})
    assert types(events)[-2:] == ["response.done", "rate_limits.updated"]
    assert events[-2]["response"]["status"] == "cancelled"
    assert events[-2]["response"]["status_details"] == {"type": "cancelled",
                                                        "reason": "client_cancelled"}
    assert events[-3]["item"]["status"] == "incomplete"
    assert any(isinstance(a, CancelResponse) for a in conv.take_actions())
    assert conv.response_speech(rid, "more", tone(100)) == []  # late output is dropped


def test_vad_interrupts_an_active_response() -> None:
    conv = make()
    rid = start_response(conv)
    conv.response_speech(rid, "Once upon a time.", tone(500))
    events = append(conv, silence(200) + tone(300))
    assert types(events)[0] == "input_audio_buffer.speech_started"
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status_details"] == {"type": "cancelled",
                                                  "reason": "turn_detected"}
    assert types(events)[:2] == ["input_audio_buffer.speech_started",
                                 "response.output_audio.done"]


def test_interrupt_response_false_keeps_the_response() -> None:
    conv = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                    "interrupt_response": False}}})
    rid = start_response(conv)
    conv.response_speech(rid, "Talking.", tone(200))
    events = append(conv, silence(200) + tone(300))
    assert types(events) == ["input_audio_buffer.speech_started"]
    assert conv.is_active(rid)


def test_truncate_delete_retrieve() -> None:
    conv = make()
    rid = start_response(conv)
    conv.response_speech(rid, "Hello there.", tone(1000))
    conv.response_finish(rid)
    item = conv.items[-1]
    err = conv.handle({"type": "conversation.item.truncate", "item_id": "nope",
                       "content_index": 0, "audio_end_ms": 10})[0]["error"]
    assert err["code"] == "item_truncate_invalid_item_id"
    err = conv.handle({"type": "conversation.item.truncate", "item_id": item.id,
                       "content_index": 0})[0]["error"]
    assert err["code"] == "missing_required_parameter" and err["param"] == "audio_end_ms"
    out = conv.handle({"type": "conversation.item.truncate", "item_id": item.id,
                       "content_index": 0, "audio_end_ms": 400})
    assert out[0] == {**out[0], "type": "conversation.item.truncated", "audio_end_ms": 400}
    assert item.data["content"][0]["transcript"] == ""
    got = conv.handle({"type": "conversation.item.retrieve", "item_id": item.id})[0]
    assert len(base64.b64decode(got["item"]["content"][0]["audio"])) == 400 * BYTES_PER_MS
    # Beyond the audio length is clamped to what exists.
    out = conv.handle({"type": "conversation.item.truncate", "item_id": item.id,
                       "content_index": 0, "audio_end_ms": 5000})
    assert out[0]["audio_end_ms"] == 400
    assert types(conv.handle({"type": "conversation.item.delete", "item_id": item.id})) == \
        ["conversation.item.deleted"]
    for kind, code in (("delete", "item_delete_invalid_item_id"),
                       ("retrieve", "item_retrieve_invalid_item_id")):
        err = conv.handle({"type": f"conversation.item.{kind}", "item_id": item.id})[0]
        assert err["error"]["code"] == code


def test_item_create_positions() -> None:
    conv = make()
    user_text(conv, "one")
    out = conv.handle({"type": "conversation.item.create", "previous_item_id": "root",
                       "item": {"type": "message", "role": "system",
                                "content": [{"type": "input_text", "text": "zero"}]}})
    assert out[0]["previous_item_id"] is None
    assert [i.heard for i in conv.items] == ["zero", "one"]
    err = conv.handle({"type": "conversation.item.create", "previous_item_id": "missing",
                       "item": {"type": "message", "role": "user", "content": []}})[0]
    assert err["error"]["param"] == "previous_item_id" and len(conv.items) == 2
    err = conv.handle({"type": "conversation.item.create", "item": {"type": "message",
                                                                     "role": "user"}})[0]
    assert err["error"]["param"] == "item.content"


def test_transcription_events_only_when_enabled() -> None:
    conv = make()
    append(conv, silence(400) + tone(500) + silence(500))
    item_id = conv.items[0].id
    assert conv.transcription_done(item_id, "hello", emit=False) == []
    assert conv.items[0].heard == "hello"  # the responder still understands the audio
    conv = make(audio={"input": {"transcription": {"model": "whisper-1"}}})
    append(conv, silence(400) + tone(500) + silence(500))
    action = conv.take_actions()[0]
    assert isinstance(action, Recognize) and action.emit_events
    events = conv.transcription_done(action.item_id, "hello", emit=True)
    assert types(events) == ["conversation.item.input_audio_transcription.delta",
                             "conversation.item.input_audio_transcription.completed"]
    assert events[1]["transcript"] == "hello"
    failed = conv.transcription_done(action.item_id, None, emit=True, error="boom")
    assert failed[0]["type"] == "conversation.item.input_audio_transcription.failed"


@pytest.mark.parametrize(("event", "code", "param"), [
    ("not an object", "invalid_event", None),
    ({"event_id": "e"}, "invalid_event", None),
    ({"type": "nope"}, "invalid_value", "type"),
    ({"type": "response.cancel", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "conversation.item.delete"}, "missing_required_parameter", "item_id"),
    ({"type": "input_audio_buffer.append", "audio": "!!!"}, "invalid_value", "audio"),
])
def test_malformed_events(event: object, code: str, param: str | None) -> None:
    conv = make()
    out = conv.handle(event)
    assert len(out) == 1 and out[0]["type"] == "error"
    assert out[0]["error"]["code"] == code and out[0]["error"]["param"] == param
    assert conv.handle({"type": "input_audio_buffer.clear"})[0]["type"] == \
        "input_audio_buffer.cleared"  # the session goes on


def test_real_engines_drive_the_state_machine(engines) -> None:
    """Silero VAD and pocketsphinx in the loop: piper speech makes a recognisable turn."""
    from tests.speech import speak_pcm

    conv = Conversation(GA, detector=engines.detector_factory())
    conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
    events = append(conv, speak_pcm("what is twelve times seven", 24000).tobytes())
    assert types(events)[:3] == ["input_audio_buffer.speech_started",
                                 "input_audio_buffer.speech_stopped",
                                 "input_audio_buffer.committed"]
    action = conv.take_actions()[0]
    text = engines.recognizer.transcribe(action.audio, 24000)
    assert "seven" in text


def test_stored_audio_is_bounded() -> None:
    conv = Conversation(GA, detector=EnergyDetector(), max_stored_audio_ms=1500)
    conv.handle({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
    for _ in range(3):
        append(conv, silence(300) + tone(600) + silence(400))
        for action in conv.take_actions():
            conv.transcription_done(action.item_id, "x", emit=False)
    assert len(conv.items) == 3
    kept = [i.audio is not None for i in conv.items]
    assert kept[-1] and not kept[0]  # the oldest audio went first
    assert sum(len(i.audio) for i in conv.items if i.audio) <= 1500 * BYTES_PER_MS


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
    out = make().handle({"type": "session.update", "session": ga})
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
    out = make(BETA).handle({"type": "session.update", "session": beta})
    assert out[0]["type"] == "session.updated", out
    assert out[0]["session"]["max_response_output_tokens"] == 4096


def test_session_expired_message_matches_the_cloud() -> None:
    ga = Conversation(GA).expire_events()[0]["error"]
    assert (ga["code"], ga["message"]) == (
        "session_expired", "Your session hit the maximum duration of 60 minutes.")
    beta = Conversation(BETA).expire_events()[0]["error"]
    assert beta["message"] == "Your session hit the maximum duration of 30 minutes."
