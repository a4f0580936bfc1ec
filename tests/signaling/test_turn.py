"""TURN REST credentials as coturn's use-auth-secret checks them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rtc_agent.signaling.turn import ice_servers, turn_credentials


def openssl_hmac_sha1_b64(secret: str, message: str) -> str:
    """base64(HMAC-SHA1) computed by the openssl CLI, independently of Python."""
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
        input=message.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return (
        subprocess.run(["base64"], input=digest, capture_output=True, check=True)
        .stdout.decode()
        .strip()
    )


def test_credentials_match_a_vector_computed_with_openssl_by_hand() -> None:
    # printf '%s' "1700003600:alice" | openssl dgst -sha1 -hmac s3cret -binary | base64
    username, password = turn_credentials("s3cret", ttl_s=3600, user="alice", now=1_700_000_000)
    assert username == "1700003600:alice"
    assert password == "YAFdW/YDZewZsR1QSgUk2IrfbRI="


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
@pytest.mark.parametrize(
    ("secret", "ttl", "user", "now"),
    [("north-wind", 60, "rtc-agent", 1_750_000_000.7), ("ünïcode secret", 86400, "bob", 0)],
)
def test_credentials_match_live_openssl(secret: str, ttl: int, user: str, now: float) -> None:
    username, password = turn_credentials(secret, ttl_s=ttl, user=user, now=now)
    assert username == f"{int(now) + ttl}:{user}"
    assert password == openssl_hmac_sha1_b64(secret, username)


def test_credentials_expire_relative_to_now() -> None:
    import time

    before = int(time.time())
    username, _ = turn_credentials("x", ttl_s=600)
    expiry = int(username.split(":", 1)[0])
    assert before + 600 <= expiry <= int(time.time()) + 600


@pytest.mark.parametrize(
    "kwargs", [{"secret": ""}, {"secret": "x", "ttl_s": 0}, {"secret": "x", "user": "a:b"}]
)
def test_credentials_reject_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        turn_credentials(**kwargs)


def test_ice_servers_stun_plain_turn_with_credentials() -> None:
    servers = ice_servers(
        ["stun:stun.example.org:3478", "turn:a.example.org:3478"],
        ["turn:b.example.org:3478?transport=tcp", "turn:a.example.org:3478"],
        "shared",
        ttl_s=120,
    )
    assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
    turn = servers[1]
    assert turn["urls"] == ["turn:a.example.org:3478", "turn:b.example.org:3478?transport=tcp"]
    user = turn["username"]
    assert user.endswith(":rtc-agent") and int(user.split(":", 1)[0]) > 0
    assert turn["credential"] == openssl_hmac_sha1_b64("shared", user)
    assert len(servers) == 2


def test_ice_servers_empty_and_errors() -> None:
    assert ice_servers([], [], None) == []
    assert ice_servers(["stun:s:3478"], [], None) == [{"urls": ["stun:s:3478"]}]
    with pytest.raises(ValueError, match="secret"):
        ice_servers([], ["turn:t:3478"], None)
    with pytest.raises(ValueError, match="not a STUN or TURN"):
        ice_servers(["http://x"], [], None)


def test_ice_servers_convert_for_aiortc() -> None:
    """The same list feeds the server's own peer via rtc_agent.ice."""
    from rtc_agent.ice import rtc_configuration

    config = rtc_configuration(ice_servers(["stun:s:3478"], ["turn:t:3478"], "k"))
    assert [s.urls for s in config.iceServers] == [["stun:s:3478"], ["turn:t:3478"]]
    assert config.iceServers[1].username and config.iceServers[1].credential
