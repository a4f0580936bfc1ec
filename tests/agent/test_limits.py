"""What real deployments set at the edges of a call, through real calls on the
offline backend: the idle caller, the longest call, the session's renewal before
the service's cap, and a tool that takes its time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.serve import running
from rtc_agent.tools.registry import Tool, ToolRegistry
from tests.agent.test_call import is_done, server_config, url

pytestmark = pytest.mark.slow


def assistant_texts(caller: ScriptedCaller, start: int = 0) -> list[str]:
    return [e["text"] for e in caller.events[start:] if is_done("assistant")(e)]


async def ended(caller: ScriptedCaller, within_s: float) -> dict[str, Any]:
    return await caller.wait_event(lambda e: e["type"] == "call.ended", within_s, start=0)


async def test_an_idle_caller_is_asked_then_told_goodbye() -> None:
    cfg = server_config(idle_timeout_s=2.0, idle_prompt="Hello, are you still with me?",
                        goodbye="Bye for now.")
    async with running(cfg) as server:
        caller = ScriptedCaller(url(server))
        try:
            await caller.connect(timeout=20)
            started = time.monotonic()
            asked = await caller.wait_event(is_done("assistant"), 10, start=0)
            assert asked["text"] == "Hello, are you still with me?"
            assert 1.8 < asked["_t"] - started < 6
            with pytest.raises(CallFailed) as gone:
                await caller.wait_event(lambda e: False, 15)  # until the server hangs up
            assert gone.value.kind == "idle" and gone.value.by_server
            notice = await ended(caller, 1)
            assert assistant_texts(caller) == ["Hello, are you still with me?", "Bye for now."]
            assert "without a word" in notice["message"]
            assert caller.ended is not None and caller.ended.reason == "idle"
        finally:
            await caller.hangup()


async def test_a_caller_who_answers_the_idle_prompt_goes_on() -> None:
    async with running(server_config(idle_timeout_s=2.0)) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            await caller.wait_event(is_done("assistant"), 10, start=0)  # are you there?
            n = len(caller.events)
            caller.send({"type": "text", "text": "what is two plus two"})
            reply = await caller.wait_event(is_done("assistant"), 20, start=n)
            assert "four" in reply["text"]
            # the clock started over: asked again, not told goodbye, ~2 s later
            again = await caller.wait_event(is_done("assistant"), 10,
                                            start=caller.events.index(reply) + 1)
            assert again["text"] == "Are you still there?"
            assert caller.ended is None
            call = server.calls[caller.call_id]
            assert not call.closed


async def test_at_the_longest_call_the_agent_finishes_its_sentence_then_says_goodbye() -> None:
    async with running(server_config(max_call_s=2.0)) as server:
        caller = ScriptedCaller(url(server))
        try:
            await caller.connect(timeout=20)
            caller.send({"type": "text", "text": "what is twelve times seven"})
            with pytest.raises(CallFailed) as gone:
                await caller.wait_event(lambda e: False, 25)
            assert gone.value.kind == "max_duration"
            replies = [e for e in caller.events if is_done("assistant")(e)]
            # the answer under way at the limit was heard out, then the goodbye
            assert [r["text"] for r in replies] == ["Twelve times seven is eighty-four.",
                                                    "Thank you for calling. Goodbye!"]
            assert not any(r["interrupted"] for r in replies)
            notice = await ended(caller, 1)
            assert notice["reason"] == "max_duration" and "2 s" in notice["message"]
        finally:
            await caller.hangup()


async def test_the_session_is_renewed_at_a_quiet_moment_without_troubling_the_caller() -> None:
    async with running(server_config(session_renew_s=3.0)) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            call = server.calls[caller.call_id]
            # a long reply is under way when the renewal falls due: it is not cut
            await asyncio.sleep(1.5)
            n = len(caller.events)
            caller.send({"type": "text", "text": "tell me a story"})
            story = await caller.wait_event(is_done("assistant"), 60, start=n)
            assert not story["interrupted"]
            for _ in range(100):
                if call.record.session_renewals:
                    break
                await asyncio.sleep(0.1)
            assert call.record.session_renewals == 1
            # the new socket opened after the story ended, not in the middle of it
            # (loop time is the monotonic clock, as the caller's stamps are)
            assert call.client.connected_at is not None
            assert call.client.connected_at > story["_t"] - 0.5
            # nothing alarming reached the caller, and the conversation goes on
            assert not [e for e in caller.events if e["type"] == "error"]
            assert call.record.upstream_reconnects == 0
            n = len(caller.events)
            caller.send({"type": "text", "text": "what is three plus three"})
            assert "six" in (await caller.wait_event(is_done("assistant"), 20, start=n))["text"]


async def test_a_slow_tool_is_acknowledged_and_its_answer_follows() -> None:
    async def slow_search(query: str) -> str:
        await asyncio.sleep(3.5)
        return f"Solar power grew by a third last year. ({query})"

    tools = ToolRegistry()
    tools.register(Tool("search", "Search the web.", {
        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        slow_search, timeout_s=10))
    async with running(server_config(tool_ack_ms=800)) as server:
        server.tools = tools
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "search for solar power"})
            ack = await caller.wait_event(is_done("assistant"), 20, start=n)
            assert ack["text"] == "One moment, let me look that up."
            finished = await caller.wait_event(lambda e: e["type"] == "tool.finished", 10,
                                               start=n)
            # said while the tool ran: its words began before the tool finished
            first_words = next(e for e in caller.events if e["type"] == "transcript.delta"
                               and e["item_id"] == ack["item_id"])
            assert first_words["_t"] < finished["_t"]
            answer = await caller.wait_event(is_done("assistant"), 20,
                                             start=caller.events.index(ack) + 1)
            assert "Solar power grew by a third" in answer["text"]


async def test_every_session_feature_set_at_once_still_makes_a_working_call(
        tmp_path: Any) -> None:
    """Semantic VAD, noise reduction and every pass-through setting go to the service
    in the agent's session.update; the offline backend takes them (as the service
    would), and a spoken turn works: the caller sees its own words as they are
    recognised (live captions), then the answer."""
    from rtc_agent.loadtest.microphone import Prompt
    from tests.speech import speak_wav

    f = tmp_path / "agent.toml"
    f.write_text('[session]\nvad = "semantic"\nvad_eagerness = "high"\n'
                 'noise_reduction = "near_field"\nreasoning_effort = "low"\n'
                 'truncation = 0.8\ntracing = "auto"\n'
                 'include = ["item.input_audio_transcription.logprobs"]\n'
                 '[session.prompt]\nid = "pmpt_1"\n')
    import argparse

    from rtc_agent import config
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    session = config.from_args(parser.parse_args(["--config", str(f)]), env={}).session
    async with running(server_config(session=session)) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            call = server.calls[caller.call_id]
            assert call.session.settings.turn_detection is not None
            assert call.session.settings.turn_detection.type == "semantic_vad"
            n = len(caller.events)
            await caller.speak(Prompt.from_wav(speak_wav("what is twelve times seven")))
            user = await caller.wait_event(is_done("user"), 30, start=n)
            captions = [e for e in caller.events[n:caller.events.index(user)]
                        if e["type"] == "transcript.delta" and e["role"] == "user"]
            assert len(captions) >= 3  # word by word, before the final text
            assert "".join(c["delta"] for c in captions).strip() == user["text"]
            reply = await caller.wait_event(is_done("assistant"), 30, start=n)
            assert "eighty" in reply["text"]
            assert not [e for e in caller.events if e["type"] == "error"]


@pytest.mark.parametrize("cancellable", [True, False])
async def test_a_barge_in_cancels_only_a_tool_marked_cancellable(cancellable: bool) -> None:
    async def slow_search(query: str) -> str:
        await asyncio.sleep(3.0)
        return f"Solar power grew by a third last year. ({query})"

    tools = ToolRegistry()
    tools.register(Tool("search", "Search the web.", {
        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        slow_search, timeout_s=10, cancellable=cancellable))
    async with running(server_config(tool_ack_ms=0)) as server:
        server.tools = tools
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            n = len(caller.events)
            caller.send({"type": "text", "text": "search for solar power"})
            await caller.wait_event(lambda e: e["type"] == "tool.started", 20, start=n)
            moved_on = time.monotonic()
            caller.send({"type": "text", "text": "what is two plus two"})  # the caller moves on
            finished = await caller.wait_event(lambda e: e["type"] == "tool.finished", 10,
                                               start=n)
            answer = await caller.wait_event(
                lambda e: is_done("assistant")(e) and "four" in e["text"], 20, start=n)
            if cancellable:
                assert finished["ok"] is False and finished["_t"] - moved_on < 1.0
                await asyncio.sleep(2.5)  # no reply about the cancelled search follows
                assert [t for t in assistant_texts(caller, n) if "Solar" in t] == []
            else:
                assert finished["ok"] is True and finished["_t"] - moved_on > 2.0
                # its answer still comes, after the caller's own
                result = await caller.wait_event(
                    lambda e: is_done("assistant")(e) and "Solar" in e["text"], 20,
                    start=caller.events.index(answer))
                assert result["_t"] > finished["_t"]
