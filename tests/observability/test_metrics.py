"""/metrics, the call log and GET /calls after real calls (offline backend, aiortc caller)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtc_agent.loadtest.caller import ScriptedCaller
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.agent.test_call import is_done, server_config, url
from tests.security.test_backend_restart import offline_children
from tests.speech import speak_wav

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: SignalingServer, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, \
            http.get(f"{url(server)}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def until(check: Any, within_s: float = 10.0) -> None:
    """Poll `check` (an HTTP scrape: nothing to wait on) until it holds."""
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def barge_in(caller: ScriptedCaller, story: Prompt, interruption: Prompt) -> None:
    """Ask for a long reply, let it play 1.5 s, talk over it; until the reply is marked
    interrupted and the interruption has been spoken."""
    n = len(caller.events)
    spoken_end = await caller.speak(story)
    assert await caller.wait_audible(spoken_end, 30) is not None
    await asyncio.sleep(1.5)
    talk_over = caller.start_speaking(interruption)
    await caller.wait_event(lambda e: e["type"] == "transcript.done"
                            and e["role"] == "assistant" and e["interrupted"], 20, start=n)
    await talk_over


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[SignalingServer]:
    (tmp_path / "turn.md").write_text(
        "coturn is a TURN relay server. It checks short-lived credentials with "
        "use-auth-secret.\n")
    cfg = server_config(search_dir=tmp_path, call_log=tmp_path / "calls.jsonl")
    async with running(cfg) as server:
        yield server


async def test_every_family_moves_by_the_right_amount(agent: SignalingServer,
                                                      tmp_path: Path) -> None:
    question = Prompt.from_wav(speak_wav("what is twelve times seven"))
    story = Prompt.from_wav(speak_wav("tell me a story"))
    interruption = Prompt.from_wav(speak_wav("stop please"))
    before = await scrape(agent)
    async with ScriptedCaller(url(agent)) as caller:
        await caller.connect(timeout=20)
        up = await scrape(agent)
        assert value(up, "rtc_agent_calls_active") == 1
        # set-up: offer -> the caller's audio flowing, once
        assert moved(before, up, "rtc_agent_call_setup_seconds_count") == 1
        assert 0 < moved(before, up, "rtc_agent_call_setup_seconds_sum") < 10

        # a spoken turn
        n = len(caller.events)
        await caller.speak(question)
        await caller.wait_event(is_done("assistant"), 30, start=n)
        spoken = await scrape(agent)
        assert moved(up, spoken, "rtc_agent_turn_latency_seconds_count") == 1
        assert 0 < moved(up, spoken, "rtc_agent_turn_latency_seconds_sum") < 10
        for kind in ("input_audio", "output_audio", "output_text"):
            assert moved(up, spoken, "rtc_agent_realtime_tokens_total", kind=kind) > 0, kind

        # a typed turn, then a tool turn
        n = len(caller.events)
        caller.send({"type": "text", "text": "what is two plus three"})
        await caller.wait_event(is_done("assistant"), 30, start=n)
        n = len(caller.events)
        caller.send({"type": "text", "text": "search for coturn"})
        await caller.wait_event(lambda e: e["type"] == "tool.finished", 30, start=n)
        await caller.wait_event(is_done("assistant"), 40, start=n)
        typed = await scrape(agent)
        assert moved(spoken, typed, "rtc_agent_turn_latency_seconds_count") == 2
        assert moved(spoken, typed, "rtc_agent_tool_calls_total", tool="search",
                     outcome="ok") == 1
        assert moved(spoken, typed, "rtc_agent_tool_seconds_count", tool="search") == 1

        # a barge-in: talk over a long reply
        n = len(caller.events)
        await barge_in(caller, story, interruption)
        # the interruption is a turn of its own: wait for its reply
        await caller.wait_event(lambda e: e["type"] == "transcript.done"
                                and e["role"] == "assistant" and not e["interrupted"], 30,
                                start=n)
        barged = await scrape(agent)
        assert moved(typed, barged, "rtc_agent_barge_in_seconds_count") == 1
        assert 0 <= moved(typed, barged, "rtc_agent_barge_in_seconds_sum") < 1

        # the upstream lost: its child killed; the call's socket comes back
        (child,) = offline_children()
        n = len(caller.events)
        os.kill(child, signal.SIGKILL)
        lost = await caller.wait_event(lambda e: e.get("state") == "reconnecting", 10, start=n)
        await caller.wait_event(lambda e: e.get("state") == "listening", 20,
                                after=lost["_t"])
        reconnected = await scrape(agent)
        assert moved(barged, reconnected, "rtc_agent_upstream_reconnects_total") == 1

        # the caller's RTP statistics, sampled every few seconds per call
        assert value(reconnected, "rtc_agent_inbound_jitter_seconds_count") >= 1
        assert value(reconnected, "rtc_agent_inbound_packets_lost_total") == 0  # loopback
        assert value(reconnected, "rtc_agent_event_loop_lag_seconds_count", worker="0") >= 1
        call_id = caller.call_id
    async def ended() -> bool:
        return value(await scrape(agent), "rtc_agent_calls_active") == 0
    await until(ended)
    after = await scrape(agent)
    assert moved(before, after, "rtc_agent_calls_total", end_reason="hangup") == 1
    assert value(after, "rtc_agent_playout_late_frames_total") >= 0

    (line,) = (tmp_path / "calls.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["call_id"] == call_id and record["end_reason"] == "hangup"
    # the question, two typed ones, the story, the interruption
    assert record["turns"] == 5 and len(record["turn_latency_ms"]) == 5
    assert record["barge_ins"] == 1 and record["upstream_reconnects"] == 1
    assert record["tool_calls"] == [{"name": "search", "ok": True, "outcome": "ok",
                                     "ms": record["tool_calls"][0]["ms"]}]
    assert record["tokens"]["output_audio"] > 0 and record["setup_ms"] is not None
    assert record["user_agent"].startswith("Python/") and record["duration_s"] > 5
    assert record["started"].endswith("+00:00") and record["ended"].endswith("+00:00")
    assert "sk-" not in line and "audio" not in {k for k in record if k != "tokens"}


async def test_offers_refused_are_counted_by_code(agent: SignalingServer) -> None:
    before = await scrape(agent)
    async with aiohttp.ClientSession() as http:
        for body in ("not json", json.dumps({"type": "offer", "sdp": ""})):
            async with http.post(f"{url(agent)}/offer", data=body) as response:
                assert response.status == 400
    after = await scrape(agent)
    assert moved(before, after, "rtc_agent_offers_rejected_total", code="invalid_json") == 1
    assert moved(before, after, "rtc_agent_offers_rejected_total", code="invalid_sdp") == 1


async def test_calls_and_metrics_need_their_tokens(tmp_path: Path) -> None:
    cfg = server_config(token="call-token", metrics_token="metrics-token")
    async with running(cfg) as agent, aiohttp.ClientSession() as http:
        async with http.get(f"{url(agent)}/metrics") as response:
            assert response.status == 401
        assert await scrape(agent, token="metrics-token")
        async with http.get(f"{url(agent)}/calls") as response:
            assert response.status == 401
        async with http.get(f"{url(agent)}/calls/nope") as response:
            assert response.status == 401
        async with ScriptedCaller(url(agent), token="call-token") as caller:
            await caller.connect(timeout=20)
            auth = {"Authorization": "Bearer call-token"}
            async with http.get(f"{url(agent)}/calls", headers=auth) as response:
                listed = (await response.json())["calls"]
            assert [c["call_id"] for c in listed] == [caller.call_id]
            assert listed[0]["end_reason"] is None and listed[0]["duration_s"] > 0
            async with http.get(f"{url(agent)}/calls/{caller.call_id}",
                                headers=auth) as response:
                assert response.status == 200
                assert (await response.json())["call_id"] == caller.call_id
            async with http.get(f"{url(agent)}/calls/unknown", headers=auth) as response:
                assert response.status == 404


async def test_a_call_past_max_call_s_ends_with_max_duration(tmp_path: Path) -> None:
    cfg = server_config(max_call_s=2.0, call_log=tmp_path / "calls.jsonl")
    async with running(cfg) as agent:
        before = await scrape(agent)
        async with ScriptedCaller(url(agent)) as caller:
            await caller.connect(timeout=20)
            ended = await caller.wait_event(lambda e: e["type"] == "call.ended", 10, start=0)
            assert ended["reason"] == "max_duration" and "2 s" in ended["message"]

            async def ended() -> bool:
                return value(await scrape(agent), "rtc_agent_calls_active") == 0
            await until(ended)
        after = await scrape(agent)
    assert moved(before, after, "rtc_agent_calls_total", end_reason="max_duration") == 1
    (line,) = (tmp_path / "calls.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["end_reason"] == "max_duration" and 1.9 < record["duration_s"] < 5
