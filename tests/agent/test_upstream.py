"""The Realtime connection: every backend shape, reconnects, and a dead upstream.

The cloud services cannot be reached from here, so the project's own offline
backend, which speaks the real protocol (both dialects, the OpenAI and Azure
paths, key checks), stands in for them; the agent builds its URLs and headers
exactly as it would for the cloud.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
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
        # a GA-era version keeps the GA path (Azure refuses an api-version there)
        ({"AZURE_OPENAI_ENDPOINT": "{base}", "AZURE_OPENAI_API_KEY": SECRET,
          "AZURE_OPENAI_DEPLOYMENT": "my-deployment",
          "AZURE_OPENAI_API_VERSION": "2025-08-28"}, "azure", Dialect.GA),
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


async def healthz(server: SignalingServer) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{url(server)}/healthz", timeout=5) as response:
                return json.load(response)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:  # 503 still carries the body
            return json.load(exc)  # type: ignore[no-any-return]
    return await asyncio.to_thread(get)


async def test_wrong_key_is_reported_and_the_call_ends(
    protocol_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{protocol_server}/v1")
    async with running(server_config()) as server:
        # the check at start finds the bad key before any caller does
        for _ in range(100):
            upstream = (await healthz(server))["upstream"]
            if upstream["state"] != "unknown":
                break
            await asyncio.sleep(0.05)
        assert upstream["state"] == "unauthorized", upstream
        assert "HTTP 401" in upstream["detail"] and upstream["checked"]
        caller = ScriptedCaller(url(server))
        started = time.monotonic()
        with pytest.raises(CallFailed):
            await caller.connect(timeout=8)
        ended = [e for e in caller.events if e["type"] == "call.ended"]
        assert ended, caller.events
        assert ended[0]["reason"] == "upstream_failed"
        # the service's status and its own words reach the caller
        assert "HTTP 401" in ended[0]["message"], ended[0]
        assert "Invalid or missing API key" in ended[0]["message"], ended[0]
        assert ended[0]["_t"] - started < 5.0
        assert "sk-wrong" not in json.dumps(caller.events)
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
        ended = [e for e in caller.events if e["type"] == "call.ended"]
        assert ended and ended[-1]["reason"] == "upstream_failed", caller.events
        assert "cannot reach" in ended[-1]["message"]
        assert (await healthz(server))["upstream"]["state"] == "unreachable"
        for _ in range(50):
            if not server.calls:
                break
            await asyncio.sleep(0.1)
        assert server.calls == {}
