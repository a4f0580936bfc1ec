"""Behind a TLS-terminating reverse proxy (--trusted-proxy).

Only a trusted TCP peer may say, with X-Forwarded-Proto/-Host/-For, which
scheme, host and client address a request really had; from anyone else those
headers change nothing. The end-to-end tests put a real nginx (Debian's
package, see tests/security/nginx.py) with TLS in front of `rtc-agent serve`:
the page's own offer (`Origin: https://<proxy>`) is answered, the same set-up
without --trusted-proxy refuses it (the bug this fixes), and the per-address
offer rate limit and pending-call cap count each forwarded client on its own.
Clients reach nginx from 127.0.0.2 and 127.0.0.3; nginx reaches rtc-agent from
127.0.0.1, the only trusted proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from rtc_agent import config
from rtc_agent.signaling.app import SignalingServer
from rtc_agent.signaling.certs import CertPaths, generate
from rtc_agent.signaling.limits import parse_networks
from rtc_agent.signaling.proxy import Forwarded, client_address, parse_address, resolve
from tests.security.nginx import PROXY_BLOCK, nginx_proxy
from tests.security.test_http_limits import keep_alive_get, sockets, wait_until
from tests.signaling.rawhttp import closed_by_server, cloud_server, connect
from tests.signaling.test_app import offer_sdp

CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"  # callers in front of nginx
SPOOF = {  # what a caller might claim about itself
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "agent.example.org",
    "X-Forwarded-For": "198.51.100.1",
    "Forwarded": 'for=198.51.100.1;proto=https;host="agent.example.org"',
}

# ---------------------------------------------------------------- the header rules


def test_addresses_in_x_forwarded_for() -> None:
    assert parse_address("203.0.113.5") == "203.0.113.5"
    assert parse_address(" 203.0.113.5:4711 ") == "203.0.113.5"
    assert parse_address("2001:db8::1") == "2001:db8::1"
    assert parse_address("[2001:DB8::1]:443") == "2001:db8::1"
    assert parse_address("[2001:db8::1]") == "2001:db8::1"
    for bad in ("unknown", "", "_hidden", "[2001:db8::1", "1.2.3", "203.0.113.5:80:90"):
        assert parse_address(bad) is None, bad


def test_the_client_is_the_right_most_hop_not_itself_a_trusted_proxy() -> None:
    trusted = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    chain = ["198.51.100.9", "203.0.113.5", "10.0.0.2"]  # client-written, client, proxy
    assert client_address("10.0.0.1", chain, trusted) == "203.0.113.5"
    assert client_address("127.0.0.1", ["10.0.0.3", "10.0.0.2"], trusted) == "10.0.0.3"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"  # nothing forwarded
    # an entry that is not an address stops the walk at the last good hop
    assert client_address("10.0.0.1", ["203.0.113.5", "unknown"], trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", ["garbage", "203.0.113.5"], trusted) == "203.0.113.5"
    assert client_address("10.0.0.1", ["[2001:db8::7]:1234"], trusted) == "2001:db8::7"
    # from a peer that is no trusted proxy the chain is never read
    assert client_address("203.0.113.9", chain, trusted) == "203.0.113.9"
    assert client_address("203.0.113.9", chain, []) == "203.0.113.9"
    assert client_address(None, chain, trusted) is None


def test_forwarded_headers_count_only_from_a_trusted_peer() -> None:
    trusted = parse_networks(["127.0.0.1"])
    own = Forwarded("http", "127.0.0.1:8080", "127.0.0.1")

    def seen(peer: str | None, *pairs: tuple[str, str], proxies: Any = trusted) -> Forwarded:
        return resolve(peer, "http", "127.0.0.1:8080", CIMultiDict(pairs), proxies)

    headers = tuple(SPOOF.items())
    assert seen("127.0.0.1", *headers) == Forwarded("https", "agent.example.org",
                                                    "198.51.100.1")
    assert seen("127.0.0.1", *headers, proxies=[]) == own  # none trusted (the default)
    assert seen("203.0.113.9", *headers) == Forwarded("http", "127.0.0.1:8080",
                                                      "203.0.113.9")
    assert seen("127.0.0.1") == own
    # RFC 7239 Forwarded alone is never believed
    assert seen("127.0.0.1", ("Forwarded", SPOOF["Forwarded"])) == own
    # the last value is the nearest proxy's; repeated fields read as one list
    assert seen("127.0.0.1", ("X-Forwarded-Proto", "http, HTTPS"),
                ("X-Forwarded-Host", "evil.example, agent.example.org:8443")) == \
        Forwarded("https", "agent.example.org:8443", "127.0.0.1")
    assert seen("127.0.0.1", ("X-Forwarded-For", "198.51.100.1"),
                ("X-Forwarded-For", "203.0.113.5")).remote == "203.0.113.5"
    # values that are not a scheme or a host are not taken
    for proto in ("ftp", "", "https://x", "javascript"):
        assert seen("127.0.0.1", ("X-Forwarded-Proto", proto)).scheme == "http", proto
    for host in ("a/b", "a b", "x@evil.example", "-x", "[::1", "a" * 300, "host:port"):
        assert seen("127.0.0.1", ("X-Forwarded-Host", host)).host == "127.0.0.1:8080", host
    assert seen("127.0.0.1", ("X-Forwarded-Host", "[2001:db8::1]:443")).host == \
        "[2001:db8::1]:443"


def parse(*argv: str) -> config.ServeConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_args(parser.parse_args(list(argv)))


def test_the_flag_and_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().trusted_proxies == []  # none by default
    assert parse("--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8"
                 ).trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]
    monkeypatch.setenv("RTC_AGENT_TRUSTED_PROXIES", "192.0.2.1, fd00::/8,")
    assert parse().trusted_proxies == ["192.0.2.1", "fd00::/8"]
    assert parse("--trusted-proxy", "::1").trusted_proxies == ["::1"]  # the flag wins
    monkeypatch.delenv("RTC_AGENT_TRUSTED_PROXIES")
    with pytest.raises(ValueError, match=r"--trusted-proxy.*proxy\.example"):
        parse("--trusted-proxy", "proxy.example")


def _directives(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def test_the_documented_nginx_block_is_the_tested_one() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    block = re.search(r"```nginx\n.*?(    location / \{\n.*?\n    \})\n.*?```", doc, re.S)
    assert block is not None, "docs/deployment.md has no nginx block with a location /"
    assert _directives(block.group(1)) == _directives(PROXY_BLOCK.format(upstream=8080))


# ---------------------------------------------------------------- a server, no proxy


async def offer_status(http: aiohttp.ClientSession, base: str, body: bytes,
                       headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    async with http.post(f"{base}/offer", data=body, headers=headers) as r:
        return r.status, (await r.json()).get("error", {}).get("code")


async def hsts(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str | None:
    async with http.get(f"{base}/healthz", headers=headers) as r:
        assert r.status == 200
        return r.headers.get("Strict-Transport-Security")


@pytest.mark.parametrize("trusted", [[], ["192.0.2.1"]], ids=["none", "another"])
async def test_spoofed_headers_from_an_untrusted_peer_change_nothing(trusted: list[str]) -> None:
    async with cloud_server(offers_per_minute=1, limit_exempt=[],
                            trusted_proxies=trusted) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.config.port}"
        page = {**SPOOF, "Origin": "https://agent.example.org"}
        assert await offer_status(http, base, b"{nope", page) == (403, "origin_not_allowed")
        assert await hsts(http, base, {**SPOOF, "Host": "agent.example.org"}) is None
        # one budget for the peer, whatever it says it forwards for
        spoof = {"X-Forwarded-For": "198.51.100.1"}
        assert await offer_status(http, base, b"{nope", spoof) == (400, "invalid_json")
        spoof = {"X-Forwarded-For": "198.51.100.2"}
        assert await offer_status(http, base, b"{nope", spoof) == (429, "rate_limited")


async def test_a_trusted_peer_speaks_for_its_client() -> None:
    """An HTTP client on 127.0.0.1 playing the proxy: its forwarded scheme, host and
    client address are what the origin check, HSTS and the rate limit see."""
    async with cloud_server(offers_per_minute=1, limit_exempt=[],
                            trusted_proxies=["127.0.0.1"]) as server, \
            aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.config.port}"
        page = {"Origin": "https://agent.example.org", "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "agent.example.org", "X-Forwarded-For": "198.51.100.1"}
        assert await offer_status(http, base, b"{nope", page) == (400, "invalid_json")
        assert await hsts(http, base, {**page, "Host": "127.0.0.1"}) == "max-age=15552000"
        assert await offer_status(http, base, b"{nope", page) == (429, "rate_limited")
        other = {"X-Forwarded-For": "198.51.100.2"}
        assert await offer_status(http, base, b"{nope", other) == (400, "invalid_json")
        # a client that writes its own X-Forwarded-For does not escape its budget:
        # the proxy appended the address it saw, and that one counts
        spoofed = {"X-Forwarded-For": "203.0.113.77, 198.51.100.1"}
        assert await offer_status(http, base, b"{nope", spoofed) == (429, "rate_limited")


async def test_a_trusted_proxy_is_not_capped_per_address_at_accept() -> None:
    """Connections are counted before any header is read, so only the proxy is seen:
    its connections carry every caller and are not capped per address (only in all)."""
    async with cloud_server(max_connections_per_address=1, limit_exempt=[],
                            trusted_proxies=["127.0.0.1"]) as server:
        port = server.config.port
        async with sockets(port, 3) as held:
            for reader, writer in held:
                assert await keep_alive_get(reader, writer, "/healthz") == 200
            assert server.limits.total == 3
            async with sockets(port, 1, source=CLIENT_A) as [(reader, writer)]:
                assert await keep_alive_get(reader, writer, "/healthz") == 200
                late_reader, late_writer = await connect(port, CLIENT_A)
                assert await closed_by_server(late_reader, 3)  # capped: 429 and closed
                late_writer.close()
        await wait_until(lambda: server.limits.total == 0)


# ---------------------------------------------------------------- a real nginx in front


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate(tmp_path_factory.mktemp("proxy-certs"))  # names 127.0.0.1 among others


@contextlib.asynccontextmanager
async def behind_nginx(folder: Path, certs: CertPaths, **overrides: Any,
                       ) -> AsyncIterator[tuple[SignalingServer, int]]:
    async with cloud_server(**overrides) as server, \
            nginx_proxy(folder, server.config.port, certs.cert, certs.key) as port:
        yield server, port


@contextlib.asynccontextmanager
async def browser(certs: CertPaths, source: str) -> AsyncIterator[aiohttp.ClientSession]:
    """HTTPS from `source` (a loopback address), trusting the local CA."""
    tls = ssl.create_default_context(cafile=str(certs.ca_cert))
    connector = aiohttp.TCPConnector(ssl=tls, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def real_offer(http: aiohttp.ClientSession, base: str, peers: list[Any],
                     ) -> tuple[int, dict[str, Any]]:
    """A real aiortc offer, as the page posts it: same origin, JSON."""
    pc, sdp = await offer_sdp()  # the answer is never applied: the call stays pending
    peers.append(pc)
    async with http.post(f"{base}/offer", data=json.dumps({"type": "offer", "sdp": sdp}),
                         headers={"Origin": base, "Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def test_the_page_s_offer_through_nginx_is_answered(tmp_path: Path,
                                                          certs: CertPaths) -> None:
    peers: list[Any] = []
    async with behind_nginx(tmp_path, certs, trusted_proxies=["127.0.0.1"]) as (server, port):
        base = f"https://127.0.0.1:{port}"
        try:
            async with browser(certs, CLIENT_A) as http:
                status, answer = await real_offer(http, base, peers)
                assert status == 200, answer
                assert answer["type"] == "answer" and "a=candidate" in answer["sdp"]
                # the call is counted under the caller's address, not nginx's
                assert server._call_address == {answer["call_id"]: CLIENT_A}
                # https as the caller used it: HSTS for a DNS name, as without a proxy
                assert await hsts(http, base, {"Host": "agent.example.org"}) == \
                    "max-age=15552000"
                assert await hsts(http, base, {}) is None  # an IP: never
        finally:
            for pc in peers:
                await pc.close()


async def test_without_trusted_proxy_the_page_s_offer_through_nginx_is_refused(
        tmp_path: Path, certs: CertPaths) -> None:
    """The bug: the page's own `Origin: https://<proxy>` is compared with what the
    plain-http server sees (http://127.0.0.1:<its port>) and refused."""
    peers: list[Any] = []
    async with behind_nginx(tmp_path, certs) as (server, port):
        base = f"https://127.0.0.1:{port}"
        try:
            async with browser(certs, CLIENT_A) as http:
                status, answer = await real_offer(http, base, peers)
                assert (status, answer["error"]["code"]) == (403, "origin_not_allowed")
                assert await hsts(http, base, {"Host": "agent.example.org"}) is None
            assert server.calls == {}
        finally:
            for pc in peers:
                await pc.close()


async def test_the_offer_rate_limit_counts_each_forwarded_client(tmp_path: Path,
                                                                 certs: CertPaths) -> None:
    async with behind_nginx(tmp_path, certs, trusted_proxies=["127.0.0.1"],
                            offers_per_minute=2, limit_exempt=[]) as (_, port):
        base = f"https://127.0.0.1:{port}"
        async with browser(certs, CLIENT_A) as a, browser(certs, CLIENT_B) as b:
            assert [await offer_status(a, base, b"{nope") for _ in range(3)] == [
                (400, "invalid_json"), (400, "invalid_json"), (429, "rate_limited")]
            # another caller behind the same proxy has a budget of its own
            assert await offer_status(b, base, b"{nope") == (400, "invalid_json")
            # and a caller naming someone else in X-Forwarded-For is still itself:
            # nginx appends the address it saw, the right-most untrusted hop
            assert await offer_status(a, base, b"{nope", {"X-Forwarded-For": "192.0.2.50"}) \
                == (429, "rate_limited")


async def test_the_pending_call_cap_counts_each_forwarded_client(tmp_path: Path,
                                                                 certs: CertPaths) -> None:
    peers: list[Any] = []
    async with behind_nginx(tmp_path, certs, trusted_proxies=["127.0.0.1"],
                            max_pending_per_address=1, limit_exempt=[]) as (server, port):
        base = f"https://127.0.0.1:{port}"
        try:
            async with browser(certs, CLIENT_A) as a, browser(certs, CLIENT_B) as b:
                assert (await real_offer(a, base, peers))[0] == 200
                status, refused = await real_offer(a, base, peers)
                assert (status, refused["error"]["code"]) == (429, "too_many_pending")
                status, answer = await real_offer(b, base, peers)
                assert status == 200, answer
            assert sorted(server._call_address.values()) == [CLIENT_A, CLIENT_B]
        finally:
            for pc in peers:
                await pc.close()
