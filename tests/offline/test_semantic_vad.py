"""Semantic VAD, approximated: eagerness picks the silence that ends a turn, and the words
recognised at the first pause make it longer when they sound unfinished.

The pure state machine first (scripted audio through the EnergyDetector, the words
handed in as the driver would), then the real backend over the WebSocket with the openai
SDK: a phrase that stops at "nine plus", a pause, then "four" is one turn under
semantic VAD and two under server VAD.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest

from rtc_agent.offline.input_buffer import SEMANTIC_WAIT_MS, sounds_unfinished
from rtc_agent.offline.outputs import CancelResponse, Recognize, StartResponse
from rtc_agent.offline.server import RealtimeServer
from tests.offline.conftest import check_sdk_event, sdk_client, speech
from tests.offline.test_conversation import (
    BETA,
    GA,
    Session,
    actions,
    events,
    make,
    silence,
    tone,
    types,
    with_turn_detection,
)

WINDOW_MS = 32  # the EnergyDetector's window: where a turn can end


def semantic(eagerness: str = "high", dialect: Any = GA, **fields: Any) -> Session:
    return with_turn_detection(
        {"type": "semantic_vad", "eagerness": eagerness, **fields}, dialect)


def paused(s: Session, out: list[Any]) -> Recognize:
    """The speculative recognition the first pause started (it asks for its words back)."""
    [guess] = [a for a in actions(out) if isinstance(a, Recognize) and a.speculative]
    assert guess.report and guess.key is not None
    return guess


def stopped(out: list[Any]) -> dict[str, Any]:
    [event] = [e for e in events(out) if e["type"] == "input_audio_buffer.speech_stopped"]
    return event


# --- the judge ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "unfinished"), [
    ("i would like a pizza and", True),
    ("but", True),
    ("tell me about the", True),
    ("the capital of", True),
    ("i want to", True),
    ("um", True),
    ("so uh", True),
    ("what is nine plus", True),
    ("what is 9 times", True),
    ("twelve divided by", True),
    ("what is twelve times seven", False),
    ("good times", False),  # an operator word ends a phrase only after a number
    ("hello there", False),
    ("that is all", False),
    ("", False),  # nothing recognised: judged by silence alone
    ("AND", True),
])
def test_sounds_unfinished(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text) is unfinished


def test_the_judge_reads_only_the_end_of_a_long_phrase() -> None:
    assert sounds_unfinished("word " * 200_000 + "and")
    assert not sounds_unfinished("and " * 200_000 + "done")


# --- eagerness and the words ----------------------------------------------------------


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_without_words_the_turn_ends_after_the_eagerness_maximum(eagerness: str) -> None:
    short, longest = SEMANTIC_WAIT_MS[eagerness]
    s = semantic(eagerness)
    out = s.append(silence(300) + tone(600) + silence(longest - 100))
    guess = paused(s, out)
    assert "input_audio_buffer.speech_stopped" not in types(out)  # still waiting for words
    out = s.append(silence(300))
    quiet = stopped(out)["audio_end_ms"] - guess.key[1]  # type: ignore[index]
    assert longest <= quiet < longest + WINDOW_MS
    assert short < longest


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_finished_words_end_the_turn_after_the_short_silence(eagerness: str) -> None:
    short, _ = SEMANTIC_WAIT_MS[eagerness]
    s = semantic(eagerness)
    guess = paused(s, s.append(silence(300) + tone(600) + silence(160)))
    assert guess.key is not None
    assert s.conv.heard_so_far(guess.key, "what is twelve times seven") == []  # too soon
    out = s.append(silence(short))
    quiet = stopped(out)["audio_end_ms"] - guess.key[1]
    assert short <= quiet < short + WINDOW_MS
    # The commit reuses the running recognition (same key) and a reply starts.
    final = next(a for a in actions(out) if isinstance(a, Recognize))
    assert final.key == guess.key and not final.speculative
    assert types(out)[-1] == "response.created" and isinstance(out[-1], StartResponse)


def test_words_that_arrive_after_the_short_silence_end_the_turn_at_once() -> None:
    s = semantic("medium")  # 500 ms for a finished phrase
    guess = paused(s, s.append(silence(300) + tone(600) + silence(900)))
    assert guess.key is not None
    out = s.conv.heard_so_far(guess.key, "hello")
    assert types(out)[:3] == ["input_audio_buffer.speech_stopped",
                              "input_audio_buffer.committed", "conversation.item.added"]
    # Stopped where the audio was when the words came back, not back in time.
    assert stopped(out)["audio_end_ms"] >= guess.key[1] + 800
    assert s.conv.heard_so_far(guess.key, "hello") == []  # late words of an ended turn


def test_unfinished_words_keep_the_turn_open_across_a_pause() -> None:
    s = semantic("high")  # 250 ms finished, 2 s at most
    first = paused(s, s.append(silence(300) + tone(600) + silence(200)))
    assert first.key is not None
    assert s.conv.heard_so_far(first.key, "what is nine plus") == []
    out = s.append(silence(1200))  # a pause that would end a server-VAD turn
    assert "input_audio_buffer.speech_stopped" not in types(out)
    out = s.append(tone(500) + silence(300))  # the caller goes on: the same turn
    assert "input_audio_buffer.speech_started" not in types(out)
    second = paused(s, out)
    assert second.key is not None and second.key != first.key
    assert second.key[0] == first.key[0]  # same start, later last voice
    assert s.conv.heard_so_far(first.key, "what is nine plus") == []  # stale words
    out = s.conv.heard_so_far(second.key, "what is nine plus four")
    assert "input_audio_buffer.speech_stopped" in types(out)
    item = s.conv.items[-1]
    assert item.audio_ms >= 600 + 200 + 1200 + 500  # both phrases and the pause between


def test_words_that_could_not_be_recognised_count_as_finished() -> None:
    s = semantic("low")
    guess = paused(s, s.append(silence(300) + tone(600) + silence(900)))
    assert guess.key is not None
    assert "input_audio_buffer.speech_stopped" in types(s.conv.heard_so_far(guess.key, None))


def test_server_vad_asks_for_no_words_and_ignores_them() -> None:
    s = make(audio={"input": {"turn_detection": {"type": "server_vad",
                                                 "silence_duration_ms": 800}}})
    out = s.append(silence(300) + tone(600) + silence(300))
    [guess] = [a for a in actions(out) if isinstance(a, Recognize)]
    assert guess.speculative and not guess.report and guess.key is not None
    assert s.conv.heard_so_far(guess.key, "hello") == []  # no early end
    assert "input_audio_buffer.speech_stopped" in types(s.append(silence(600)))


def test_beta_semantic_vad_works_alike() -> None:
    s = semantic("high", BETA)
    guess = paused(s, s.append(silence(300) + tone(600) + silence(300)))
    assert guess.key is not None
    out = s.conv.heard_so_far(guess.key, "hello")
    assert types(out)[:3] == ["input_audio_buffer.speech_stopped",
                              "input_audio_buffer.committed", "conversation.item.created"]


# --- create_response, interrupt_response, noise_reduction for both kinds ----------------

TURN_DETECTIONS = [{"type": "server_vad"}, {"type": "semantic_vad", "eagerness": "high"}]


@pytest.mark.parametrize("td", TURN_DETECTIONS, ids=["server_vad", "semantic_vad"])
def test_create_response_false_commits_without_a_reply(td: dict[str, Any]) -> None:
    s = make(audio={"input": {"turn_detection": {**td, "create_response": False}}})
    out = s.append(silence(300) + tone(600) + silence(2500))  # past semantic's 2 s maximum
    assert "input_audio_buffer.committed" in types(out)
    assert "response.created" not in types(out)
    assert not any(isinstance(a, StartResponse) for a in actions(out))
    s2 = make(audio={"input": {"turn_detection": td}})
    assert "response.created" in types(s2.append(silence(300) + tone(600) + silence(2500)))


@pytest.mark.parametrize("td", TURN_DETECTIONS, ids=["server_vad", "semantic_vad"])
@pytest.mark.parametrize("interrupt", [True, False])
def test_interrupt_response_is_honoured(td: dict[str, Any], interrupt: bool) -> None:
    s = make(audio={"input": {"turn_detection": {**td, "interrupt_response": interrupt}}})
    assert s.conv.session["audio"]["input"]["turn_detection"]["interrupt_response"] is interrupt
    rid = s.start_response()
    s.conv.response_speech(rid, "Once upon a time.", tone(500))
    out = s.append(silence(200) + tone(300))
    assert types(out)[0] == "input_audio_buffer.speech_started"
    assert (CancelResponse(rid) in actions(out)) is interrupt
    assert s.conv.is_active(rid) is not interrupt
    if interrupt:
        done = next(e for e in events(out) if e["type"] == "response.done")
        assert done["response"]["status_details"] == {"type": "cancelled",
                                                      "reason": "turn_detected"}


@pytest.mark.parametrize("value", [{"type": "near_field"}, {"type": "far_field"}, None])
def test_noise_reduction_is_accepted_and_echoed(value: dict[str, str] | None) -> None:
    ga = make(audio={"input": {"noise_reduction": value}})
    shown = events(ga.conv.created())[0]["session"]["audio"]["input"]["noise_reduction"]
    assert shown == value
    beta = make(BETA, input_audio_noise_reduction=value)
    assert events(beta.conv.created())[0]["session"]["input_audio_noise_reduction"] == value


def test_noise_reduction_of_an_unknown_kind_is_refused() -> None:
    s = make()
    out = s.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"noise_reduction": {"type": "studio"}}}}})
    err = events(out)[0]["error"]
    assert (err["code"], err["param"]) == ("invalid_value",
                                           "session.audio.input.noise_reduction.type")


# --- over the WebSocket ----------------------------------------------------------------


def spoken(*phrases: str, pause_ms: int) -> bytes:
    """Piper phrases one after another, pause_ms of silence between them (and 1.5 s after)."""
    parts = [speech(p) for p in phrases]
    trail = int(1.5 * 24000)
    gap = np.zeros(pause_ms * 24, np.int16)
    joined = [parts[0][:-trail]]
    for part in parts[1:]:
        joined += [gap, part[int(0.5 * 24000):-trail]]
    return np.concatenate([*joined, np.zeros(trail, np.int16)]).tobytes()


async def audio_turns(server: RealtimeServer, td: dict[str, Any], pcm: bytes,
                      wait_s: float = 60.0) -> list[Any]:
    """Stream pcm in 20 ms appends in real time, as a caller's microphone does (semantic
    VAD's words come back from the recogniser while the pause goes on), then collect the
    session's typed events until every turn is transcribed and answered."""
    got: list[Any] = []

    def count(kind: str) -> int:
        return sum(e.type == kind for e in got)

    def settled() -> bool:
        """Every committed turn transcribed, every response done."""
        committed = count("input_audio_buffer.committed")
        return committed > 0 and count(
            "conversation.item.input_audio_transcription.completed") >= committed \
            and count("response.done") >= count("response.created")

    streamed, quiet = False, asyncio.Event()
    async with sdk_client(server).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "gpt-4o-mini-transcribe"}, "turn_detection": td}}})

        async def read() -> None:
            async for event in conn:
                check_sdk_event(event)
                got.append(event)
                if streamed and settled():
                    quiet.set()

        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n, i in enumerate(range(0, len(pcm), 960)):
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(pcm[i : i + 960]).decode())
        streamed = True
        if settled():
            quiet.set()
        await asyncio.wait_for(quiet.wait(), wait_s)
        reader.cancel()
    return got


PAUSE_MS = 2000  # longer than server VAD's silence, far shorter than "low"'s 8 s maximum
LOW = {"type": "semantic_vad", "eagerness": "low"}  # 800 ms after a finished phrase


@pytest.mark.timeout(120)
async def test_a_pause_after_an_unfinished_phrase_stays_in_the_turn(
        server: RealtimeServer) -> None:
    got = await audio_turns(server, LOW, spoken("what is nine plus", "four", pause_ms=PAUSE_MS))
    names = [e.type for e in got]
    assert names.count("input_audio_buffer.speech_started") == 1, names
    assert names.count("input_audio_buffer.committed") == 1, names
    heard = next(e for e in got
                 if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard.transcript.endswith("nine plus four")
    done = next(e for e in got if e.type == "response.done").response
    assert done.output[0].content[0].transcript == "Nine plus four is thirteen."


@pytest.mark.timeout(120)
async def test_the_same_pause_after_a_finished_phrase_ends_the_turn(
        server: RealtimeServer) -> None:
    pcm = spoken("what is twelve times seven", "hello", pause_ms=PAUSE_MS)
    got = await audio_turns(server, {**LOW, "create_response": False}, pcm)
    names = [e.type for e in got]
    assert names.count("input_audio_buffer.committed") == 2, names
    assert "response.created" not in names  # create_response: false
    heard = [e.transcript for e in got
             if e.type == "conversation.item.input_audio_transcription.completed"]
    assert heard[0] == "what is twelve times seven"
    starts = [e for e in got if e.type == "input_audio_buffer.speech_started"]
    stops = [e for e in got if e.type == "input_audio_buffer.speech_stopped"]
    assert [e.item_id for e in starts] == [e.item_id for e in stops]
    # The first turn ended inside the pause, long before "low"'s 8 s maximum.
    assert stops[0].audio_end_ms < starts[1].audio_start_ms
