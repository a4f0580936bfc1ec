"""The agent's conversation state machine, driven event by event without I/O."""

from __future__ import annotations

import base64
import json
from typing import Any

from rtc_agent.datachannel import CallState
from rtc_agent.protocol import Dialect
from rtc_agent.realtime.dialect import normalize_event
from rtc_agent.realtime.session import (
    EndItemAudio,
    FlushPlayout,
    PlayAudio,
    RealtimeSession,
    RunTool,
    SendCaller,
    SendUpstream,
)
from rtc_agent.realtime.settings import SessionSettings

SEARCH = {"type": "function", "name": "search", "description": "d",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}


def upstream(effects: list) -> list[dict[str, Any]]:
    return [e.event for e in effects if isinstance(e, SendUpstream)]


def caller(effects: list) -> list[dict[str, Any]]:
    return [e.message for e in effects if isinstance(e, SendCaller)]


def audio(ms: int) -> str:
    return base64.b64encode(b"\x01\x00" * (24 * ms)).decode()


def configured(s: RealtimeSession) -> RealtimeSession:
    """A session whose session.update the service has acknowledged."""
    s.start()
    s.handle_upstream({"type": "session.updated", "session": {}})
    return s


def start_reply(s: RealtimeSession, rid: str = "resp_1", item: str = "item_a") -> list:
    out = s.handle_upstream({"type": "response.created", "response": {"id": rid}})
    out += s.handle_upstream({"type": "response.output_item.added", "response_id": rid,
                              "item": {"id": item, "type": "message", "role": "assistant"}})
    return out


def test_start_sends_ga_session_without_temperature() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings(), [SEARCH])
    (update,) = upstream(s.start())
    session = update["session"]
    assert session["type"] == "realtime"
    assert "temperature" not in session
    td = session["audio"]["input"]["turn_detection"]
    assert (td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (0.5, 300, 500)
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert session["tools"] == [SEARCH]


def test_start_sends_beta_shape() -> None:
    s = RealtimeSession(Dialect.BETA, SessionSettings(), [])
    session = upstream(s.start())[0]["session"]
    assert session["modalities"] == ["text", "audio"]
    assert session["input_audio_format"] == "pcm16"
    assert session["temperature"] == 0.8
    assert session["turn_detection"]["type"] == "server_vad"


def test_beta_events_are_renamed() -> None:
    ev = normalize_event(Dialect.BETA, {"type": "response.audio.delta"})
    assert ev["type"] == "response.output_audio.delta"
    assert normalize_event(Dialect.GA, {"type": "response.audio.delta"})["type"] == (
        "response.audio.delta")


def test_audio_turn_transcripts_and_states() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    out = s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u1"})
    assert upstream(out) == [] and not any(isinstance(e, FlushPlayout) for e in out)
    assert caller(out) == [{"type": "state", "state": "user_speaking"}]
    out = s.handle_upstream({"type": "input_audio_buffer.speech_stopped", "item_id": "u1"})
    assert caller(out) == [{"type": "state", "state": "thinking"}]
    out = s.handle_upstream({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": "u1", "transcript": " what is twelve times seven "})
    assert caller(out)[0]["text"] == "what is twelve times seven"
    start_reply(s)
    out = s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                             "item_id": "item_a", "delta": audio(100)})
    assert [type(e) for e in out] == [PlayAudio] and len(out[0].pcm) == 4800
    out = s.handle_upstream({"type": "response.output_audio_transcript.delta",
                             "item_id": "item_a", "delta": "eighty-four"})
    # Its text came with the end of its first 100 ms of audio: it waits for them to play.
    assert caller(out) == [] and s.captions_held
    s.on_playout_delay(40)
    assert caller(s.on_playout_progress("item_a", 140.0)) == []  # 100 ms heard: not yet past
    (delta,) = caller(s.on_playout_progress("item_a", 160.0))
    assert delta == {"type": "transcript.delta", "role": "assistant", "item_id": "item_a",
                     "delta": "eighty-four"}
    assert not s.captions_held
    out = s.handle_upstream({"type": "response.output_audio.done", "item_id": "item_a"})
    assert out == [EndItemAudio("item_a")]
    # The final transcript waits for the audio to have been played.
    out = s.handle_upstream({"type": "response.output_audio_transcript.done",
                             "item_id": "item_a", "transcript": "eighty-four"})
    assert caller(out) == []
    assert caller(s.on_item_started("item_a")) == [{"type": "state", "state": "speaking"}]
    s.handle_upstream({"type": "response.done", "response": {"id": "resp_1",
                                                             "status": "completed"}})
    out = s.on_item_finished("item_a", 100.0)
    done, state = caller(out)
    assert done["type"] == "transcript.done" and done["text"] == "eighty-four"
    assert done["interrupted"] is False
    assert state == {"type": "state", "state": "listening"}


def playing_reply(s: RealtimeSession, ms: int = 2000) -> None:
    start_reply(s)
    s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                       "item_id": "item_a", "delta": audio(ms)})
    s.handle_upstream({"type": "response.output_audio_transcript.delta", "item_id": "item_a",
                       "delta": "once upon a time"})
    s.on_item_started("item_a")


def two_sentences(s: RealtimeSession) -> None:
    """A reply as services stream it: each sentence's text, then its second of audio."""
    start_reply(s)
    for text in ("Seven times six is forty-two. ", "Anything else?"):
        s.handle_upstream({"type": "response.output_audio_transcript.delta",
                           "response_id": "resp_1", "item_id": "item_a", "delta": text})
        s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                           "item_id": "item_a", "delta": audio(1000)})


def deltas(effects: list) -> list[str]:
    return [m["delta"] for m in caller(effects) if m["type"] == "transcript.delta"]


def test_captions_follow_the_audio_as_the_caller_hears_it() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    s.on_playout_delay(80)
    two_sentences(s)  # all of it generated, nothing played: nothing shown
    assert s.captions_held
    s.on_item_started("item_a")
    assert deltas(s.on_playout_progress("item_a", 60.0)) == []  # still in the caller's buffer
    assert deltas(s.on_playout_progress("item_a", 100.0)) == ["Seven times six is forty-two. "]
    assert deltas(s.on_playout_progress("item_a", 1060.0)) == []  # 980 ms heard
    assert deltas(s.on_playout_progress("item_a", 1100.0)) == ["Anything else?"]
    assert not s.captions_held
    # text that comes after its audio has played goes out at once
    s.handle_upstream({"type": "response.output_audio.done", "item_id": "item_a"})
    s.on_item_finished("item_a", 2000.0)
    late = s.handle_upstream({"type": "response.output_audio_transcript.delta",
                              "response_id": "resp_1", "item_id": "item_a", "delta": " Bye."})
    assert deltas(late) == [" Bye."]


def test_captions_of_a_text_session_are_not_held() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings(text_only=True))
    start_reply(s)
    out = s.handle_upstream({"type": "response.output_text.delta", "response_id": "resp_1",
                             "item_id": "item_a", "delta": "forty-two"})
    assert deltas(out) == ["forty-two"] and not s.captions_held


def test_an_interrupted_reply_says_which_part_was_heard_and_replays_only_that() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    s.on_playout_delay(100)
    two_sentences(s)
    s.on_item_started("item_a")
    shown = deltas(s.on_playout_progress("item_a", 600.0))
    out = s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u2"})
    out = s.on_playout_flushed("item_a", 1400.0)  # 1300 ms heard: into the second sentence
    assert deltas(out) == []  # the unheard caption is never shown as spoken
    (done,) = [m for m in caller(out) if m["type"] == "transcript.done"]
    assert done["interrupted"] is True and done["heard_ms"] == 1300
    assert done["text"] == "Seven times six is forty-two. Anything else?"
    assert done["heard_text"] == "Seven times six is forty-two. Anything else?"
    assert shown == ["Seven times six is forty-two. "]
    assert not s.captions_held

    # cut inside the first sentence's audio: only the first sentence was heard at all
    s2 = RealtimeSession(Dialect.GA, SessionSettings())
    two_sentences(s2)
    s2.on_item_started("item_a")
    s2.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u2"})
    (done,) = [m for m in caller(s2.on_playout_flushed("item_a", 700.0))
               if m["type"] == "transcript.done"]
    assert done["heard_text"] == "Seven times six is forty-two."
    replay = [e["item"]["content"][0]["text"] for e in upstream(s2.on_reconnected())
              if e["type"] == "conversation.item.create"]
    assert replay == ["Seven times six is forty-two."]


def test_a_transcript_delta_that_is_not_text_is_ignored() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    start_reply(s)
    for bad in ({"x": 1}, ["a"], 7):
        assert s.handle_upstream({"type": "response.output_audio_transcript.delta",
                                  "response_id": "resp_1", "item_id": "item_a",
                                  "delta": bad}) == []
    assert not s.captions_held


def test_barge_in_cancels_flushes_and_truncates_at_what_was_heard() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    playing_reply(s)
    s.on_playout_delay(120)
    out = s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u2"})
    assert upstream(out) == [{"type": "response.cancel"}]
    assert any(isinstance(e, FlushPlayout) for e in out)
    out = s.on_playout_flushed("item_a", 1000.0)
    assert upstream(out) == [{"type": "conversation.item.truncate", "item_id": "item_a",
                              "content_index": 0, "audio_end_ms": 880}]
    (done,) = [m for m in caller(out) if m["type"] == "transcript.done"]
    assert done["interrupted"] is True and done["text"] == "once upon a time"
    # Audio still in flight from the cancelled response is dropped.
    late = s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                              "item_id": "item_a", "delta": audio(100)})
    assert late == []


def test_no_barge_in_when_interrupt_response_is_off() -> None:
    from rtc_agent.realtime.settings import TurnDetection

    s = RealtimeSession(Dialect.GA, SessionSettings(
        turn_detection=TurnDetection(interrupt_response=False)))
    playing_reply(s)
    out = s.handle_upstream({"type": "input_audio_buffer.speech_started"})
    assert upstream(out) == [] and not any(isinstance(e, FlushPlayout) for e in out)
    # A typed message still interrupts: it is an explicit request.
    assert any(isinstance(e, FlushPlayout) for e in s.on_text("wait"))


def test_truncate_is_clamped_to_received_audio() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    playing_reply(s, ms=500)
    s.handle_upstream({"type": "input_audio_buffer.speech_started"})
    out = s.on_playout_flushed("item_a", 900.0)
    assert upstream(out)[0]["audio_end_ms"] == 500


def test_truncate_skipped_when_nothing_was_heard() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    playing_reply(s)
    s.on_playout_delay(100)
    s.handle_upstream({"type": "input_audio_buffer.speech_started"})
    out = s.on_playout_flushed("item_a", 60.0)
    assert upstream(out) == []
    assert caller(out)[0]["interrupted"] is True


def test_no_interruption_when_agent_is_silent() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    out = s.on_interrupt()
    assert out == []


def test_typed_text_interrupts_and_defers_create_until_cancel_lands() -> None:
    s = configured(RealtimeSession(Dialect.GA, SessionSettings()))
    playing_reply(s)
    out = s.on_text("stop, what time is it")
    events = upstream(out)
    assert events[0] == {"type": "response.cancel"}
    assert events[1]["item"]["content"][0] == {"type": "input_text",
                                               "text": "stop, what time is it"}
    assert {"type": "response.create"} not in events
    s.on_playout_flushed("item_a", 400.0)
    out = s.handle_upstream({"type": "response.done",
                             "response": {"id": "resp_1", "status": "cancelled"}})
    assert {"type": "response.create"} in upstream(out)


def test_typed_text_when_idle_creates_response_at_once() -> None:
    s = configured(RealtimeSession(Dialect.BETA, SessionSettings()))
    events = upstream(s.on_text("hello"))
    assert events[0]["item"]["content"][0]["type"] == "input_text"
    assert events[-1] == {"type": "response.create"}


def tool_call(s: RealtimeSession, call_id: str, item_id: str, query: str) -> list:
    s.handle_upstream({"type": "response.output_item.added", "response_id": "resp_t",
                       "item": {"id": item_id, "type": "function_call", "name": "search",
                                "call_id": call_id}})
    return s.handle_upstream({"type": "response.function_call_arguments.done",
                              "response_id": "resp_t", "item_id": item_id, "call_id": call_id,
                              "arguments": json.dumps({"query": query})})


def test_tool_round_sends_all_outputs_then_one_create() -> None:
    s = RealtimeSession(Dialect.BETA, SessionSettings(), [SEARCH])
    s.handle_upstream({"type": "response.created", "response": {"id": "resp_t"}})
    out1 = tool_call(s, "call_1", "fc1", "weather")
    out2 = tool_call(s, "call_2", "fc2", "news")
    runs = [e for e in out1 + out2 if isinstance(e, RunTool)]
    assert [(r.call_id, r.name, r.arguments) for r in runs] == [
        ("call_1", "search", {"query": "weather"}), ("call_2", "search", {"query": "news"})]
    assert caller(out1)[0] == {"type": "tool.started", "call_id": "call_1", "name": "search",
                               "arguments": {"query": "weather"}}
    # One tool finishes before response.done: nothing is sent upstream yet.
    assert upstream(s.on_tool_result("call_1", True, "sunny", 12)) == []
    assert upstream(s.handle_upstream({"type": "response.done",
                                       "response": {"id": "resp_t", "status": "completed"}})) == []
    out = s.on_tool_result("call_2", False, '{"error": "timed out"}', 8000)
    assert caller(out)[0] == {"type": "tool.finished", "call_id": "call_2", "name": "search",
                              "ok": False, "duration_ms": 8000}
    events = upstream(out)
    assert [e["type"] for e in events] == ["conversation.item.create",
                                           "conversation.item.create", "response.create"]
    assert [e["item"]["call_id"] for e in events[:2]] == ["call_1", "call_2"]
    assert events[1]["item"]["output"] == '{"error": "timed out"}'


def test_a_tool_the_caller_moved_on_from_has_its_output_placed_after_its_call() -> None:
    """The caller typed over a running tool: their message is in the conversation
    before the cancelled tool's output is, and a reply must answer the message, not
    the output. So the output goes right after its call (previous_item_id), and no
    response of its own is asked for. Appended at the end, it raced the reply."""
    s = configured(RealtimeSession(Dialect.GA, SessionSettings(), [SEARCH]))
    s.handle_upstream({"type": "response.created", "response": {"id": "resp_t"}})
    tool_call(s, "call_1", "fc1", "solar power")
    s.handle_upstream({"type": "response.done", "response": {"id": "resp_t",
                                                             "status": "completed"}})
    moved = upstream(s.on_text("what is two plus two"))
    assert moved[0]["type"] == "conversation.item.create"  # the caller's message first
    out = upstream(s.on_tool_result("call_1", False, '{"error": "cancelled"}', 5,
                                    moved_on=True))
    assert out == [{"type": "conversation.item.create", "previous_item_id": "fc1", "item": {
        "type": "function_call_output", "call_id": "call_1",
        "output": '{"error": "cancelled"}'}}]


def test_a_tool_that_ran_on_is_answered_after_the_caller_interrupted_its_response() -> None:
    """The caller typed while the response that called a (not cancellable) tool was
    still open: that response is cancelled, but the tool runs on and nobody cancelled
    it, so its output goes last and gets a reply of its own after the caller's. The
    race (text before response.done) made the answer never come, 1 run in 16."""
    s = configured(RealtimeSession(Dialect.GA, SessionSettings(), [SEARCH]))
    s.handle_upstream({"type": "response.created", "response": {"id": "resp_t"}})
    tool_call(s, "call_1", "fc1", "solar power")
    moved = upstream(s.on_text("what is two plus two"))  # before the response is done
    assert [e["type"] for e in moved] == ["response.cancel", "conversation.item.create"]
    done = upstream(s.handle_upstream({"type": "response.done", "response": {
        "id": "resp_t", "status": "cancelled"}}))
    assert done == [{"type": "response.create"}]  # the reply to the caller
    s.handle_upstream({"type": "response.created", "response": {"id": "resp_u"}})
    out = upstream(s.on_tool_result("call_1", True, "Solar grew.", 3000))
    assert out == [{"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "Solar grew."}}]
    out = upstream(s.handle_upstream({"type": "response.done", "response": {
        "id": "resp_u", "status": "completed"}}))
    assert out == [{"type": "response.create"}]  # the tool's answer, after the caller's


def test_tool_with_invalid_arguments_gets_an_error_output() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings(), [SEARCH])
    s.handle_upstream({"type": "response.created", "response": {"id": "resp_t"}})
    out = s.handle_upstream({"type": "response.function_call_arguments.done",
                             "response_id": "resp_t", "item_id": "fc", "call_id": "c",
                             "name": "search", "arguments": "{not json"})
    assert not any(isinstance(e, RunTool) for e in out)
    assert caller(out)[-1]["ok"] is False
    out = s.handle_upstream({"type": "response.done",
                             "response": {"id": "resp_t", "status": "completed"}})
    events = upstream(out)
    assert "invalid arguments" in events[0]["item"]["output"]
    assert events[-1] == {"type": "response.create"}


def test_reconnect_replays_the_conversation_as_text() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    s.handle_upstream({"type": "conversation.item.added", "item": {
        "id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}})
    s.handle_upstream({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": "u1", "transcript": "what is two plus two"})
    start_reply(s, item="a1")
    s.handle_upstream({"type": "response.output_text.done", "item_id": "a1",
                       "text": "two plus two is four"})
    out = s.on_disconnected()
    assert {"type": "state", "state": "reconnecting"} in caller(out)
    events = upstream(s.on_reconnected())
    assert events[0]["type"] == "session.update"
    assert [(e["item"]["role"], e["item"]["content"][0]) for e in events[1:]] == [
        ("user", {"type": "input_text", "text": "what is two plus two"}),
        ("assistant", {"type": "output_text", "text": "two plus two is four"}),
    ]


def test_benign_errors_are_swallowed_others_reach_the_caller() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    assert s.handle_upstream({"type": "error", "error": {
        "code": "response_cancel_not_active", "message": "x"}}) == []
    (msg,) = caller(s.handle_upstream({"type": "error", "error": {
        "code": "invalid_value", "message": "bad voice"}}))
    assert msg == {"type": "error", "code": "upstream_error", "message": "bad voice"}


def test_text_only_reply_finalizes_without_audio() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings(text_only=True))
    start_reply(s)
    s.handle_upstream({"type": "response.output_text.delta", "item_id": "item_a", "delta": "hi"})
    out = s.handle_upstream({"type": "response.output_text.done", "item_id": "item_a",
                             "text": "hi there"})
    assert caller(out)[0]["text"] == "hi there"


def test_audio_of_a_new_item_of_a_cancelled_response_is_not_played() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    playing_reply(s)
    s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u2"})
    s.on_playout_flushed("item_a", 500.0)
    # The service had already started a second message in the cancelled response.
    s.handle_upstream({"type": "response.output_item.added", "response_id": "resp_1",
                       "item": {"id": "item_b", "type": "message", "role": "assistant"}})
    out = s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                             "item_id": "item_b", "delta": audio(200)})
    assert not any(isinstance(e, PlayAudio) for e in out), out
    # Nor when the server skips output_item.added and the item would be adopted.
    out = s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_1",
                             "item_id": "item_c", "delta": audio(200)})
    assert not any(isinstance(e, PlayAudio) for e in out), out


def one_turn(s: RealtimeSession, n: int) -> list:
    """One turn of a long call, by kind: a reply heard out, a barge-in, a tool round."""
    rid, item, user = f"resp_{n}", f"item_{n}", f"user_{n}"
    effects = s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": user})
    effects += s.handle_upstream({"type": "conversation.item.added", "item": {
        "id": user, "type": "message", "role": "user", "content": [{"type": "input_audio"}]}})
    effects += s.handle_upstream({
        "type": "conversation.item.input_audio_transcription.completed", "item_id": user,
        "transcript": f"question {n}"})
    effects += s.handle_upstream({"type": "response.created", "response": {"id": rid}})
    if n % 3 == 2:  # a tool round: the call, its output, then the reply
        effects += s.handle_upstream({
            "type": "response.output_item.added", "response_id": rid,
            "item": {"id": f"fc_{n}", "type": "function_call", "name": "search",
                     "call_id": f"call_{n}"}})
        effects += s.handle_upstream({
            "type": "response.function_call_arguments.done", "response_id": rid,
            "item_id": f"fc_{n}", "call_id": f"call_{n}", "arguments": "{}"})
        effects += s.on_tool_result(f"call_{n}", True, "found", 3)
        effects += s.handle_upstream({"type": "response.done",
                                      "response": {"id": rid, "status": "completed"}})
        rid = f"resp_{n}_b"
        effects += s.handle_upstream({"type": "response.created", "response": {"id": rid}})
    effects += s.handle_upstream({"type": "response.output_item.added", "response_id": rid,
                                  "item": {"id": item, "type": "message", "role": "assistant"}})
    effects += s.handle_upstream({"type": "response.output_audio_transcript.delta",
                                  "response_id": rid, "item_id": item, "delta": f"answer {n}"})
    effects += s.handle_upstream({"type": "response.output_audio.delta", "response_id": rid,
                                  "item_id": item, "delta": audio(100)})
    effects += s.on_item_started(item)
    if n % 3 == 1:  # the caller talks over the reply
        effects += s.handle_upstream({"type": "input_audio_buffer.speech_started",
                                      "item_id": f"{user}_b"})
        effects += s.on_playout_flushed(item, 60.0)
        effects += s.handle_upstream({"type": "response.done",
                                      "response": {"id": rid, "status": "cancelled"}})
        return effects
    effects += s.handle_upstream({"type": "response.output_audio.done", "response_id": rid,
                                  "item_id": item})
    effects += s.handle_upstream({"type": "response.output_audio_transcript.done",
                                  "response_id": rid, "item_id": item,
                                  "transcript": f"answer {n}"})
    effects += s.handle_upstream({"type": "response.done",
                                  "response": {"id": rid, "status": "completed"}})
    effects += s.on_item_finished(item, 100.0)
    return effects


def held(s: RealtimeSession) -> dict[str, int]:
    return {"items": len(s._items), "responses": len(s._response_items),
            "done": len(s._response_done), "discarded": len(s._discarded_responses),
            "retired": len(s._retired_responses), "names": len(s._function_names),
            "tools": len(s._tool_calls), "history": len(s._history)}


def test_an_hour_long_call_holds_constant_state() -> None:
    """Thousands of turns: the session's books stop growing once they are full."""
    s = RealtimeSession(Dialect.GA, SessionSettings(), [SEARCH])
    for n in range(300):
        one_turn(s, n)
    full = held(s)
    for n in range(300, 3000):
        effects = one_turn(s, n)
    assert held(s) == full, (full, held(s))
    assert full["items"] == 0 and full["tools"] == 0 and full["done"] == 0
    assert full["history"] == 100 and full["retired"] <= 64
    # The last turn still does its job: a reply heard out, then listening again.
    assert caller(effects)[-2:] == [
        {"type": "transcript.done", "role": "assistant", "item_id": "item_2999",
         "text": "answer 2999", "interrupted": False, "heard_ms": 100, "audio_ms": 100},
        {"type": "state", "state": "listening"}]
    # A reconnect replays only the most recent turns.
    replay = [e for e in upstream(s.on_reconnected()) if e["type"] == "conversation.item.create"]
    assert len(replay) == 100
    assert replay[-1]["item"]["content"][0]["text"] == "answer 2999"


def test_late_audio_of_a_finished_response_is_not_played() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    one_turn(s, 0)  # heard out and retired
    out = s.handle_upstream({"type": "response.output_audio.delta", "response_id": "resp_0",
                             "item_id": "item_0", "delta": audio(100)})
    assert out == []


def test_text_typed_before_the_session_is_configured_waits_for_it() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    s.start()
    out = s.on_text("hello there")
    assert upstream(out) == []  # the socket may not even be open yet: nothing is lost
    assert caller(out)[0]["text"] == "hello there"
    out = s.on_text("and another")
    events = upstream(s.handle_upstream({"type": "session.updated", "session": {}}))
    assert [e["type"] for e in events] == ["conversation.item.create",
                                           "conversation.item.create", "response.create"]
    assert [e["item"]["content"][0]["text"] for e in events[:2]] == ["hello there",
                                                                      "and another"]
    # The same while a dropped session is being replaced.
    s.on_disconnected()
    s.on_reconnected()
    assert upstream(s.on_text("are you back")) == []
    events = upstream(s.handle_upstream({"type": "session.updated", "session": {}}))
    assert [e["type"] for e in events] == ["conversation.item.create", "response.create"]


def test_a_lost_path_cuts_the_reply_where_it_was_last_heard() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    two_sentences(s)
    s.on_item_started("item_a")
    out = s.on_path_lost(unheard_ms=900.0)
    assert upstream(out) == [{"type": "response.cancel"}]
    (flush,) = [e for e in out if isinstance(e, FlushPlayout)]
    assert flush.unheard_ms == 900.0
    # the call subtracts the unheard part from what was sent: 1700 - 900 ms heard
    out = s.on_playout_flushed("item_a", 1700.0 - flush.unheard_ms)
    assert upstream(out) == [{"type": "conversation.item.truncate", "item_id": "item_a",
                              "content_index": 0, "audio_end_ms": 800}]
    (done,) = [m for m in caller(out) if m["type"] == "transcript.done"]
    assert done["interrupted"] and done["heard_text"] == "Seven times six is forty-two."


def test_a_lost_path_drops_a_half_spoken_turn_and_leaves_a_quiet_call_alone() -> None:
    s = RealtimeSession(Dialect.GA, SessionSettings())
    assert s.on_path_lost(500.0) == []  # nothing playing, nobody talking: nothing to do
    s.handle_upstream({"type": "input_audio_buffer.speech_started", "item_id": "u1"})
    out = s.on_path_lost(500.0)
    assert upstream(out) == [{"type": "input_audio_buffer.clear"}]
    assert s.state == CallState.LISTENING
