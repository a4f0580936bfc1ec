"""Hostile paths get a 404 (or a 400), never a 500; every response carries the
security headers; the page still loads under its Content-Security-Policy (that
part is checked in real Chromium by tests/web/test_page.py)."""

from __future__ import annotations

import pytest

from rtc_agent.signaling.app import CONTENT_SECURITY_POLICY
from tests.signaling.rawhttp import cloud_server, head, request

HOSTILE = [
    "/app.js%00.html",
    "/main.js%00",
    "/%00",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/..%5c..%5cetc%5cpasswd",
    "/../../../../etc/passwd",
    "/main.js/../../../etc/passwd",
    "//etc/passwd",
    "/.git/config",
    "/.%2e/pyproject.toml",
    "/%ff%fe%fd",
    "/%c0%ae%c0%ae/etc/passwd",
    "/main.js%20",
    "/" + "a" * 300,
    "/" + "a/" * 2000 + "main.js",
    "/" + "%41" * 2500,
    "/calls/%00",
]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
async def test_hostile_paths_never_get_a_500(method: str) -> None:
    async with cloud_server() as server:
        port = server.config.port
        for path in HOSTILE:
            body = b"{}" if method == "POST" else b""
            reply = await request(port, head(method, path, len(body)) + body)
            assert reply.status in (400, 404, 405), (path, reply.status, reply.body[:200])
            if reply.status != 400:
                assert reply.json()["error"]["code"], path
        # a request line past aiohttp's limit is refused by its parser: a 400
        reply = await request(port, head("GET", "/" + "a" * 9000))
        assert reply.status == 400
        # and the server is still fine
        reply = await request(port, head("GET", "/main.js"))
        assert reply.status == 200


async def test_security_headers_on_the_page_files_and_errors() -> None:
    async with cloud_server() as server:
        port = server.config.port
        for path, status in [("/", 200), ("/main.js", 200), ("/style.css", 200),
                             ("/healthz", 200), ("/config", 200), ("/nope", 404)]:
            reply = await request(port, head("GET", path))
            assert reply.status == status, path
            assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["referrer-policy"] == "no-referrer"
            assert "strict-transport-security" not in reply.headers  # plain http
        csp = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
        assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'"
        assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_hsts_under_https(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    async with cloud_server(https=True, cert_dir=tmp_path) as server:
        tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        port = server.config.port
        reply = await request(port, head("GET", "/", host="agent.example.org:8443"), tls=tls)
        assert reply.status == 200
        assert reply.headers["strict-transport-security"] == "max-age=15552000"
        # not on names a developer's machine also serves over plain http, nor on
        # addresses (which browsers ignore it on anyway)
        for host in ("localhost:8443", "pi.local:8443", "127.0.0.1:8443", "[::1]:8443"):
            reply = await request(port, head("GET", "/", host=host), tls=tls)
            assert "strict-transport-security" not in reply.headers, host
    async with cloud_server(https=True, cert_dir=tmp_path, hsts_max_age_s=0) as server:
        reply = await request(server.config.port, head("GET", "/", host="agent.example.org"),
                              tls=tls)
        assert "strict-transport-security" not in reply.headers
