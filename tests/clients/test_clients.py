"""Strict third-party Realtime clients against the offline backend, unchanged but for the URL.

Pipecat's OpenAIRealtimeLLMService, the OpenAI Agents SDK's RealtimeRunner and LiveKit's
openai.realtime.RealtimeModel each run a text, an audio and a tool turn (their drivers
are in drivers/, their pinned venvs built by venvs.py). Each turn is asserted on what
the client surfaced (its JSON) and on what the backend saw of it (the session taps):
one GA session per turn, no error event from the server, every byte of reply audio
delivered, the tool's output in the conversation.
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import ClientRun, SessionTap
from tests.speech import hears, read_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a cold venv build is in the first

ANSWER = "Twelve times seven is eighty-four."
TOOL_REPLY = "Here is what I found: Solar power capacity grew by a third last year."
TURNS = ("text", "audio", "tool")  # the order the drivers run them in, one session each


def session_of(run: ClientRun, turn: str) -> SessionTap:
    """The backend's view of the session the turn used."""
    assert len(run.sessions) == len(TURNS), (
        f"{run.client.name} opened {len(run.sessions)} sessions for {len(TURNS)} turns "
        f"(a reconnect after an error?)\n{run.stderr[-3000:]}")
    return run.sessions[TURNS.index(turn)]


def assert_clean(run: ClientRun, turn: str) -> SessionTap:
    """No error on either side of the turn; the session spoke GA."""
    got = run.turn(turn)
    tap = session_of(run, turn)
    assert got["errors"] == [], f"{run.client.name} {turn}: {got['errors']}\n{run.stderr[-3000:]}"
    errors = [e for e in tap.sent if e["type"] == "error"]
    assert errors == [], f"the backend refused {run.client.name}'s {turn} turn: {errors}"
    assert tap.dialect == "ga" and tap.sent[0]["type"] == "session.created"
    assert tap.sent[0]["session"]["type"] == "realtime"
    assert "session.updated" in tap.sent_types()  # the client configured its session
    return tap


def test_the_pinned_client_ran(client_run: ClientRun) -> None:
    client = client_run.client
    assert f"{client.package}=={client.version}\n" in client.requirements.read_text()
    assert client_run.result["client"] == client.name
    assert client_run.result["version"] == client.version  # what the driver imported
    assert sorted(client_run.result["turns"]) == sorted(TURNS)


def test_text_turn(client_run: ClientRun) -> None:
    got = client_run.turn("text")
    tap = assert_clean(client_run, "text")
    assert got["transcript"] == ANSWER
    assert got["audio_bytes"] == 0 and tap.audio_sent_bytes == 0  # text output only
    done = [e for e in tap.sent if e["type"] == "response.done"]
    assert [d["response"]["status"] for d in done] == ["completed"]
    assert done[0]["response"]["output_modalities"] == ["text"]
    assert done[0]["response"]["output"][0]["content"][0]["text"] == ANSWER
    creates = tap.received_of("response.create")
    assert len(creates) == 1
    # LiveKit's default response.create carries "instructions": null; the others leave it out.
    null_instructions = "instructions" in (creates[0].get("response") or {}) and \
        creates[0]["response"]["instructions"] is None
    assert null_instructions == (client_run.client.name == "livekit")


def test_audio_turn(client_run: ClientRun) -> None:
    got = client_run.turn("audio")
    tap = assert_clean(client_run, "audio")
    assert tap.appended_bytes > 48_000  # over a second of speech went in, at 24 kHz
    assert tap.received_of("input_audio_buffer.commit") == []  # the server's VAD ended it
    types = tap.sent_types()
    assert types.index("input_audio_buffer.speech_started") < \
        types.index("input_audio_buffer.speech_stopped") < \
        types.index("input_audio_buffer.committed") < types.index("response.created")
    assert got["user_transcript"] == "what is twelve times seven"
    assert got["transcript"] == ANSWER
    assert got["audio_bytes"] > 24_000  # over half a second of reply
    assert got["audio_bytes"] == tap.audio_sent_bytes  # every byte sent reached the client
    pcm, rate = read_wav(got["audio_file"])
    assert rate == 24000 and len(pcm) * 2 == got["audio_bytes"]
    assert hears(pcm, rate, "eighty")


def test_tool_turn(client_run: ClientRun) -> None:
    got = client_run.turn("tool")
    tap = assert_clean(client_run, "tool")
    assert got["tool_calls"] == [{"name": "get_news", "arguments": {"topic": "solar power"}}]
    assert got["tool_results_sent"] == 1
    # The client declared the tool in its session ...
    declared = [t for e in tap.received_of("session.update")
                for t in e["session"].get("tools") or []]
    assert [t["name"] for t in declared][-1:] == ["get_news"]
    assert declared[-1]["type"] == "function"
    assert declared[-1]["parameters"]["properties"]["topic"]["type"] == "string"
    # ... the model called it, the client answered that call, and the reply used the answer.
    done = [e["response"] for e in tap.sent if e["type"] == "response.done"]
    assert [r["status"] for r in done] == ["completed", "completed"]
    call = done[0]["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_news"
    outputs = [e["item"] for e in tap.received_of("conversation.item.create")
               if e["item"]["type"] == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [call["call_id"]]
    assert "Solar power capacity grew by a third last year." in outputs[0]["output"]
    assert got["transcript"] == TOOL_REPLY
    assert done[1]["output"][0]["content"][0]["transcript"] == TOOL_REPLY
    assert got["audio_bytes"] == tap.audio_sent_bytes > 0
