"""Signaling over HTTP: good offers are answered, bad ones get a JSON reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from rtc_agent.ice import rtc_configuration
from rtc_agent.serve import running
from rtc_agent.signaling.app import SignalingServer
from tests.agent.test_call import server_config

pytestmark = pytest.mark.slow


@pytest.fixture
async def agent() -> AsyncIterator[SignalingServer]:
    async with running(server_config(token="s3cret", max_calls=1,
                                     allow_origins=["https://app.example"])) as server:
        yield server


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post(server: SignalingServer, body: Any, *, raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    h = {"Authorization": "Bearer s3cret", **(headers or {})}
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{server.config.port}/offer", data=data, headers=h
    ) as r:
        return r.status, await r.json(), r.headers


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "invalid_json"),
        (b"[" * 30000 + b"]" * 30000, 400, "invalid_json"),  # deep nesting
        (b"[]", 400, "invalid_offer"),
        (json.dumps({"type": "answer", "sdp": "v=0"}).encode(), 400, "invalid_type"),
        (json.dumps({"type": "offer"}).encode(), 400, "invalid_sdp"),
        (json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}).encode(),
         400, "no_audio"),
        (json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
                     "a=garbage\r\n"}).encode(), 400, "invalid_sdp"),
        (b'{"type": "offer", "sdp": "' + b"a" * 70_000 + b'"}', 413, "too_large"),
    ],
)
async def test_bad_offers_get_a_json_reason(agent: SignalingServer, body: bytes, status: int,
                                            code: str) -> None:
    got, data, _ = await post(agent, None, raw=body)
    assert (got, data["error"]["code"]) == (status, code)
    assert data["error"]["message"]
    assert agent.calls == {} and agent.pending == 0


async def test_token_origin_capacity_and_hangup(agent: SignalingServer) -> None:
    pc, sdp = await offer_sdp()
    offer = {"type": "offer", "sdp": sdp}
    status, data, _ = await post(agent, offer, headers={"Authorization": "Bearer wrong"})
    assert (status, data["error"]["code"]) == (401, "unauthorized")
    status, data, _ = await post(agent, offer, headers={"Origin": "https://evil.example"})
    assert (status, data["error"]["code"]) == (403, "origin_not_allowed")
    status, data, _ = await post(agent, offer, headers={"Origin": "https://app.example"})
    assert status == 200 and data["type"] == "answer" and "a=candidate" in data["sdp"]
    call_id = data["call_id"]
    pc2, sdp2 = await offer_sdp()
    status, data, headers = await post(agent, {"type": "offer", "sdp": sdp2})
    assert (status, data["error"]["code"]) == (503, "at_capacity")
    assert int(headers["Retry-After"]) > 0
    base = f"http://127.0.0.1:{agent.config.port}"
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{base}/calls/{call_id}") as r:
            assert r.status == 401
        async with http.delete(f"{base}/calls/{call_id}",
                               headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
        # /healthz: a bare liveness answer for anyone, the details with the token
        async with http.get(f"{base}/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with http.get(f"{base}/healthz",
                            headers={"Authorization": "bearer s3cret"}) as r:
            health = await r.json()
        assert health["calls"] == 0 and health["backend"] == "offline"
        assert health["backend_state"] == "up" and health["status"] == "ok"
        assert health["backend_restarts"] == 0
        assert agent.backend_state is not None  # serve wired the supervised child in
        # /config: no ICE servers (TURN credentials) without the token
        async with http.get(f"{base}/config") as r:
            cfg = await r.json()
        assert cfg == {"tokenRequired": True}
        async with http.get(f"{base}/config", headers={"Authorization": "Bearer no"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized")
        async with http.get(f"{base}/config", headers={"Authorization": "BEARER s3cret"}) as r:
            assert await r.json() == {"iceServers": [], "tokenRequired": True,
                                      "resumeWindowS": 30.0, "bargeIn": True}
        async with http.options(f"{base}/offer", headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.get(f"{base}/healthz", headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with http.get(f"{base}/no/such/page") as r:
            assert r.status == 404 and (await r.json())["error"]["code"]
        # The page is ES modules: they need a JavaScript type, and nothing stale.
        async with http.get(f"{base}/") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
            assert 'type="module"' in await r.text()
        async with http.get(f"{base}/main.js") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    await pc.close()
    await pc2.close()


async def test_the_bearer_scheme_is_case_insensitive(agent: SignalingServer) -> None:
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        status, data, _ = await post(agent, None, raw=b"{nope",
                                     headers={"Authorization": f"{scheme} s3cret"})
        assert (status, data["error"]["code"]) == (400, "invalid_json"), scheme
    for header in ("Basic s3cret", "Bearer", "Bearers3cret", "Token s3cret"):
        status, data, _ = await post(agent, None, raw=b"{nope",
                                     headers={"Authorization": header})
        assert status == 401, header


async def test_https_serves_the_local_ca_for_phones(tmp_path) -> None:
    import ssl

    async with running(server_config(https=True, cert_dir=tmp_path)) as server:
        assert server.scheme == "https"
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with aiohttp.ClientSession() as http:
            base = f"https://127.0.0.1:{server.config.port}"
            async with http.get(f"{base}/ca.pem", ssl=ctx) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/x-x509-ca-cert"
                pem = await r.read()
            assert pem == (tmp_path / "ca.pem").read_bytes()
            assert b"PRIVATE" not in pem
            async with http.get(f"{base}/healthz", ssl=ctx) as r:
                assert (await r.json())["ok"] is True
            async with http.get(f"{base}/", ssl=ctx, headers={"Host": "agent.example.org"}) as r:
                assert r.headers["Strict-Transport-Security"] == "max-age=15552000"


# ---------------------------------------------------------------- TURN credentials


async def test_config_mints_short_lived_turn_credentials_per_caller() -> None:
    import time

    from tests.signaling.rawhttp import cloud_server

    async with cloud_server(token="tok", turn_urls=["turn:turn.example:3478"],
                            turn_secret="shh", allow_origins=["https://app.example"]) as server:
        base = f"http://127.0.0.1:{server.config.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/config") as r:
                assert await r.json() == {"tokenRequired": True}  # no credentials
            async with http.get(f"{base}/config?token=tok",
                                headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403
            users = []
            for _ in range(2):
                async with http.get(f"{base}/config",
                                    headers={"Authorization": "bearer tok"}) as r:
                    assert r.headers["Cache-Control"] == "no-store"
                    turn = (await r.json())["iceServers"][0]
                assert turn["urls"] == ["turn:turn.example:3478"] and turn["credential"]
                expiry, user = turn["username"].split(":", 1)
                assert abs(int(expiry) - (time.time() + 600)) < 5  # 10 minutes by default
                users.append(user)
            assert users[0] != users[1] and all(u.startswith("web-") for u in users)
        server.config.turn_ttl_s = 60
        servers = server.ice_servers(user="call-x")
        assert servers[0]["username"].endswith(":call-x")
        assert int(servers[0]["username"].split(":")[0]) - time.time() < 65


async def test_config_says_whether_the_callers_voice_cuts_the_agent_off() -> None:
    """The page mutes a reply's stale rest on `user_speaking` only when it was cut."""
    import dataclasses

    from tests.signaling.rawhttp import cloud_server

    async with cloud_server() as server:
        base = f"http://127.0.0.1:{server.config.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/config") as r:
                assert (await r.json())["bargeIn"] is True
            session = server.config.session
            assert session.turn_detection is not None
            server.config.session = dataclasses.replace(session, turn_detection=dataclasses.replace(
                session.turn_detection, interrupt_response=False))  # --no-barge-in
            async with http.get(f"{base}/config") as r:
                assert (await r.json())["bargeIn"] is False
            server.config.session = dataclasses.replace(session, turn_detection=None)  # --no-vad
            async with http.get(f"{base}/config") as r:
                assert (await r.json())["bargeIn"] is False


# ---------------------------------------------------------------- backend supervision


async def test_backend_state_gates_healthz_and_offers() -> None:
    from tests.signaling.rawhttp import cloud_server

    state = {"now": "up", "restarts": 0}
    async with cloud_server(token="tok") as server:
        server.backend_state = lambda: state["now"]
        server.backend_restarts = lambda: state["restarts"]
        base = f"http://127.0.0.1:{server.config.port}"
        auth = {"Authorization": "Bearer tok"}
        pc, sdp = await offer_sdp()
        await pc.close()
        offer = json.dumps({"type": "offer", "sdp": sdp})
        async with aiohttp.ClientSession() as http:
            for now, restarts in [("restarting", 1), ("down", 1)]:
                state.update(now=now, restarts=restarts)
                async with http.get(f"{base}/healthz") as r:
                    assert (r.status, await r.json()) == (503, {"status": "unavailable"})
                async with http.get(f"{base}/healthz", headers=auth) as r:
                    health = await r.json()
                assert r.status == 503 and health["backend"] == "custom"
                assert (health["backend_state"], health["backend_restarts"]) == (now, 1)
                async with http.post(f"{base}/offer", data=offer, headers=auth) as r:
                    error = (await r.json())["error"]
                    assert (r.status, error["code"]) == (503, "backend_unavailable")
                    assert now in error["message"]
                    assert int(r.headers["Retry-After"]) > 0
                assert server.calls == {}
            state["now"] = "up"
            async with http.get(f"{base}/healthz", headers=auth) as r:
                assert r.status == 200 and (await r.json())["backend_state"] == "up"
            async with http.post(f"{base}/offer", data=offer, headers=auth) as r:
                assert r.status == 200, await r.text()
