"""server_vad's idle_timeout_ms: input_audio_buffer.timeout_triggered, an empty user item
and an automatic response, after that much input audio without speech since the last
reply finished playing.

The timer runs on the input audio timeline (what the client appended), as the event's
audio_start_ms / audio_end_ms are measured: a caller streams its microphone all the
time, silence included. The pure state machine first, then the openai SDK over the
WebSocket (its typed model for the event validates what the backend sends).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from rtc_agent.offline.outputs import Output, Recognize, StartResponse
from rtc_agent.offline.responder import IDLE_PROMPT, RuleResponder
from rtc_agent.offline.server import RealtimeServer
from rtc_agent.protocol import BYTES_PER_MS, Dialect
from tests.offline.conftest import collect, sdk_client
from tests.offline.sdk_types import validate
from tests.offline.test_conversation import (
    BETA,
    GA,
    Session,
    actions,
    events,
    silence,
    tone,
    types,
    with_turn_detection,
)

TRIGGERED = "input_audio_buffer.timeout_triggered"


def idle_session(timeout_ms: int | None = 1000, dialect: Dialect = GA,
                 **fields: Any) -> Session:
    return with_turn_detection(
        {"type": "server_vad", "idle_timeout_ms": timeout_ms, **fields}, dialect)


def reply(s: Session, audio_ms: int = 500, generating_ms: int = 0) -> str:
    """A spoken reply to a text turn: generating_ms of input audio arrives before its first
    audio (the caller hears it from then on), then it finishes."""
    s.user_text("hi")
    rid = s.start_response()
    if generating_ms:
        assert s.append(silence(generating_ms)) == []
    s.conv.response_speech(rid, "Hello.", tone(audio_ms) if audio_ms else b"")
    s.conv.response_finish(rid)
    return rid


def until_triggered(s: Session, limit_ms: int) -> tuple[int, list[Output]]:
    """Silence in 20 ms appends until the timeout fires: (ms appended, its outputs)."""
    for n in range(1, limit_ms // 20 + 1):
        out = s.append(silence(20))
        if TRIGGERED in types(out):
            return n * 20, out
    return limit_ms, []


def test_the_timeout_fires_after_the_reply_played_and_commits_an_empty_turn() -> None:
    s = idle_session(1000)
    reply(s, audio_ms=500, generating_ms=200)  # plays from 200 ms to 700 ms of input
    reply_item = s.conv.items[-1].id
    appended, out = until_triggered(s, 5000)
    assert 200 + appended == 700 + 1000  # the input timeline: 200 ms + the silence
    assert types(out) == [TRIGGERED, "input_audio_buffer.committed", "conversation.item.added",
                          "conversation.item.done", "response.created"]
    triggered, committed, added, _, _ = events(out)
    validate(triggered)
    assert triggered["audio_start_ms"] == 700 and triggered["audio_end_ms"] == 1700
    assert triggered["item_id"] == committed["item_id"] == added["item"]["id"]
    assert committed["previous_item_id"] == reply_item
    assert added["item"]["role"] == "user"
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    # Nothing to recognise (nothing was said), and a response to the empty turn.
    assert not any(isinstance(a, Recognize) for a in actions(out))
    [start] = actions(out)
    assert isinstance(start, StartResponse)
    assert s.conv.pending_recognition(start.response_id) == []
    request = s.conv.responder_input(start.response_id)
    assert request.turns[-1].idle and request.turns[-1].text == ""
    assert RuleResponder().decide(request) == [IDLE_PROMPT]


def test_it_fires_again_after_the_prompt_has_played() -> None:
    s = idle_session(1000)
    reply(s, audio_ms=0)  # a reply without audio: the quiet counts from its end
    appended, out = until_triggered(s, 5000)
    assert appended == 1000
    [start] = actions(out)
    assert isinstance(start, StartResponse)
    s.conv.response_speech(start.response_id, IDLE_PROMPT, tone(800))
    s.conv.response_finish(start.response_id)
    appended, out = until_triggered(s, 5000)
    assert appended == 800 + 1000
    assert events(out)[0]["audio_end_ms"] - events(out)[0]["audio_start_ms"] == 1000


def test_speech_stops_the_timer_and_the_next_reply_restarts_it() -> None:
    s = idle_session(1000, create_response=False)
    reply(s, audio_ms=0)
    out = s.append(silence(500) + tone(400) + silence(600))  # a turn, not answered
    assert "input_audio_buffer.committed" in types(out) and TRIGGERED not in types(out)
    # No reply since the speech: nothing to wait after, however long the quiet.
    assert until_triggered(s, 4000) == (4000, [])
    reply(s, audio_ms=0)
    assert until_triggered(s, 4000)[0] == 1000


def test_an_auto_reply_to_speech_restarts_the_timer_from_its_end() -> None:
    s = idle_session(1000)
    reply(s, audio_ms=0)
    out = s.append(silence(500) + tone(400) + silence(400))
    [start] = [a for a in actions(out) if isinstance(a, StartResponse)]
    assert TRIGGERED not in types(out + s.append(silence(1500)))  # the reply is in progress
    s.conv.response_speech(start.response_id, "Fine.", tone(300))
    s.conv.response_finish(start.response_id)
    appended, out = until_triggered(s, 4000)
    # Its audio began after the 1.5 s of generating and played 300 ms from there.
    assert appended == 300 + 1000
    assert events(out)[0]["audio_end_ms"] - events(out)[0]["audio_start_ms"] == 1000


def test_no_timeout_before_the_first_reply_or_while_one_is_in_progress() -> None:
    s = idle_session(1000)
    assert until_triggered(s, 3000) == (3000, [])
    s.user_text("hi")
    rid = s.start_response()
    assert until_triggered(s, 3000) == (3000, [])
    s.conv.response_finish(rid)
    assert until_triggered(s, 3000)[0] == 1000


@pytest.mark.parametrize("td", [
    {"type": "server_vad", "idle_timeout_ms": None},
    {"type": "server_vad"},
    {"type": "semantic_vad", "eagerness": "high", "idle_timeout_ms": 1000},
], ids=["null", "absent", "semantic_vad"])
def test_only_server_vad_with_a_timeout_has_one(td: dict[str, Any]) -> None:
    s = with_turn_detection(td)
    reply(s, audio_ms=0)
    assert until_triggered(s, 3000) == (3000, [])


def test_beta_accepts_the_setting_but_has_no_such_event() -> None:
    s = idle_session(1000, BETA)
    session = events(s.conv.created())[0]["session"]
    assert session["turn_detection"]["idle_timeout_ms"] == 1000
    reply(s, audio_ms=0)
    assert until_triggered(s, 3000) == (3000, [])


def test_a_new_setting_applies_to_the_running_quiet() -> None:
    s = idle_session(None)
    reply(s, audio_ms=0)
    s.append(silence(600))
    s.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}}}}})
    assert until_triggered(s, 3000)[0] == 400


@pytest.mark.timeout(120)
async def test_sdk_client_gets_the_timeout_and_the_idle_prompt(server: RealtimeServer) -> None:
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 1500}}}})
        updated = (await collect(conn, "session.updated", 60))[-1]
        assert updated.session.audio.input.turn_detection.idle_timeout_ms == 1500
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is two plus two?"}]})
        await conn.response.create()
        first = await collect(conn, "response.done", 60)
        played_ms = sum(len(base64.b64decode(e.delta)) for e in first
                        if e.type == "response.output_audio.delta") // BYTES_PER_MS
        assert played_ms > 500
        # No audio was appended while it played: its playback ends at played_ms on the
        # input timeline, and the quiet counts from there.
        sent_ms, got = 0, []
        while not any(e.type == TRIGGERED for e in got):
            assert sent_ms < played_ms + 1500 + 1000, "no timeout"
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(bytes(100 * BYTES_PER_MS)).decode())
            sent_ms += 100
            try:
                got.append(await asyncio.wait_for(conn.recv(), 0.05))
            except TimeoutError:
                pass
        triggered = next(e for e in got if e.type == TRIGGERED)
        validate(triggered.to_dict())
        assert triggered.audio_start_ms == played_ms
        assert triggered.audio_end_ms - triggered.audio_start_ms in range(1500, 1600)
        rest = got[got.index(triggered) + 1:] + await collect(conn, "response.done", 60)
        names = [e.type for e in rest]
        assert names[:4] == ["input_audio_buffer.committed", "conversation.item.added",
                             "conversation.item.done", "response.created"]
        assert rest[0].item_id == triggered.item_id == rest[1].item.id
        transcript = "".join(e.delta for e in rest
                             if e.type == "response.output_audio_transcript.delta")
        assert transcript == IDLE_PROMPT
        assert rest[-1].response.status == "completed"
