"""The Realtime connection: every backend shape, reconnects, and a dead upstream.

The cloud services cannot be reached from here, so the project's own offline
backend, which speaks the real protocol (both dialects, the OpenAI and Azure
paths, key checks), stands in for them; the agent builds its URLs and headers
exactly as it would for the cloud.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtc_agent.loadtest.caller import CallFailed, ScriptedCaller
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.offline.process import OfflineProcess
from rtc_agent.protocol import Dialect
from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.agent.test_call import is_done, server_config, url
from tests.ports import loopback_port
from tests.speech import speak_wav

pytestmark = pytest.mark.slow

SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"
CLOUD_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT",
             "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_API_VERSION")


@pytest.fixture
async def protocol_server() -> AsyncIterator[str]:
    """The offline backend alone, requiring SECRET like a cloud service would."""
    child = OfflineProcess(["--api-key", SECRET])
    realtime_url = await child.start()
    try:
        yield realtime_url.split("/v1/realtime")[0].replace("ws://", "http://")
    finally:
        await child.stop()


@pytest.fixture(autouse=True)
def no_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLOUD_ENV:
        monkeypatch.delenv(name, raising=False)


def tap_upstream(server: SignalingServer, call_id: str) -> list[dict[str, Any]]:
    call = server.calls[call_id]
    seen: list[dict[str, Any]] = []
    on_event = call.client._on_event

    def tap(event: dict[str, Any]) -> None:
        seen.append(event)
        on_event(event)

    call.client._on_event = tap
    return seen


async def typed_turn(caller: ScriptedCaller, text: str, expect: str) -> dict[str, Any]:
    n = len(caller.events)
    caller.send({"type": "text", "text": text})
    reply = await caller.wait_event(is_done("assistant"), 30, start=n)
    assert expect in reply["text"], reply
    return reply


def assert_no_secret(server: SignalingServer, caller: ScriptedCaller) -> None:
    sent = json.dumps([{k: v for k, v in e.items() if k != "_t"} for e in caller.events])
    assert SECRET not in sent
    assert SECRET not in json.dumps(server.ice_servers())


@pytest.mark.parametrize(
    ("env", "kind", "dialect"),
    [
        ({"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "{base}/v1"}, "openai", Dialect.GA),
        ({"AZURE_OPENAI_ENDPOINT": "{base}", "AZURE_OPENAI_API_KEY": SECRET,
          "AZURE_OPENAI_DEPLOYMENT": "my-deployment"}, "azure", Dialect.GA),
        ({"AZURE_OPENAI_ENDPOINT": "{base}", "AZURE_OPENAI_API_KEY": SECRET,
          "AZURE_OPENAI_DEPLOYMENT": "my-deployment",
          "AZURE_OPENAI_API_VERSION": "2025-04-01-preview"}, "azure-preview", Dialect.BETA),
    ],
)
async def test_cloud_shaped_backends(protocol_server: str, monkeypatch: pytest.MonkeyPatch,
                                     env: dict[str, str], kind: str, dialect: Dialect) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(base=protocol_server))
    async with running(server_config()) as server:
        assert (server.service.kind, server.service.dialect) == (kind, dialect)
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            ready = next(e for e in caller.events if e["type"] == "session.ready")
            assert ready["backend"] == kind
            await typed_turn(caller, "what is six times seven", "forty")
            if dialect is Dialect.BETA:
                # A spoken turn too: beta names for audio, transcripts and items.
                n = len(caller.events)
                await caller.speak(Prompt.from_wav(speak_wav("what is nine plus four")))
                user = await caller.wait_event(is_done("user"), 30, start=n)
                assert "nine" in user["text"]
                reply = await caller.wait_event(is_done("assistant"), 30, start=n)
                assert "thirteen" in reply["text"] and reply["audio_ms"] > 0
            assert_no_secret(server, caller)


async def test_wrong_key_is_reported_and_the_call_ends(
    protocol_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{protocol_server}/v1")
    async with running(server_config()) as server:
        caller = ScriptedCaller(url(server))
        with pytest.raises(CallFailed):
            await caller.connect(timeout=8)
        await asyncio.sleep(0.5)
        assert server.calls == {}


async def test_upstream_drop_reconnects_and_replays(protocol_server: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{protocol_server}/v1")
    async with running(server_config()) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            upstream = tap_upstream(server, caller.call_id)
            await typed_turn(caller, "what is two plus two", "four")
            call = server.calls[caller.call_id]
            n = len(caller.events)
            mark = len(upstream)
            call.client._ws.transport.abort()  # the network drops under us
            err = await caller.wait_event(lambda e: e["type"] == "error", 10, start=n)
            assert err["code"] == "upstream_reconnecting"
            lost = await caller.wait_event(lambda e: e.get("state") == "reconnecting", 10,
                                           start=n)
            await caller.wait_event(lambda e: e.get("state") == "listening", 10,
                                    after=lost["_t"])
            assert call.client.reconnects == 1
            # The new session was configured and heard the conversation so far.
            for _ in range(100):
                replayed = [e["item"] for e in upstream[mark:]
                            if e["type"] == "conversation.item.added"]
                if len(replayed) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert any(e["type"] == "session.updated" for e in upstream[mark:])
            texts = [(i["role"], i["content"][0].get("text")) for i in replayed[:2]]
            assert texts[0] == ("user", "what is two plus two")
            assert texts[1][0] == "assistant" and "four" in texts[1][1]
            await typed_turn(caller, "what is three plus three", "six")


async def test_session_length_cap_is_crossed_by_a_new_session() -> None:
    """The service ends sessions at a maximum length (60 min on OpenAI GA); the call
    must outlive it: a new session, the conversation replayed, the caller told."""
    cfg = server_config(offline_args=["--max-session-s", "4"])
    async with running(cfg) as server:
        async with ScriptedCaller(url(server)) as caller:
            await caller.connect(timeout=20)
            await typed_turn(caller, "what is two plus two", "four")
            n = len(caller.events)
            lost = await caller.wait_event(lambda e: e.get("state") == "reconnecting", 15,
                                           start=n)
            await caller.wait_event(lambda e: e.get("state") == "listening", 10,
                                    after=lost["_t"])
            assert server.calls[caller.call_id].client.reconnects == 1
            await typed_turn(caller, "what is three plus three", "six")


async def test_dead_upstream_gives_up_and_hangs_up() -> None:
    cfg = server_config(realtime_url=f"ws://127.0.0.1:{loopback_port()}/v1/realtime")
    async with running(cfg) as server:
        caller = ScriptedCaller(url(server))
        with pytest.raises(CallFailed):
            await caller.connect(timeout=10)
        errors = [e for e in caller.events if e["type"] == "error"]
        assert errors and errors[-1]["code"] == "upstream_failed", caller.events
        for _ in range(50):
            if not server.calls:
                break
            await asyncio.sleep(0.1)
        assert server.calls == {}
