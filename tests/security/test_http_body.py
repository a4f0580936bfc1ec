"""The offer's body: read whole however it arrives, within a size and a time, and an
SDP whose shape (m-lines, lines, candidates) is bounded before aiortc parses it."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

import pytest

from rtc_agent.signaling import app as app_module
from rtc_agent.signaling.offer import (
    MAX_CANDIDATES,
    MAX_OFFER_BYTES,
    MAX_SDP_LINE_CHARS,
    MAX_SDP_LINES,
    Refusal,
    read_body,
)
from tests.signaling.rawhttp import closed_by_server, cloud_server, connect, head, request
from tests.signaling.test_app import offer_sdp


async def browser_like_offer() -> str:
    pc, sdp = await offer_sdp()
    await pc.close()
    return sdp


def chunked(*pieces: bytes) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


async def test_an_offer_in_several_segments_and_in_chunks_is_read_whole() -> None:
    sdp = await browser_like_offer()
    body = json.dumps({"type": "offer", "sdp": sdp, "pad": "x" * 1000}).encode()
    assert len(body) > 2000
    async with cloud_server() as server:
        port = server.config.port
        # two writes 50 ms apart: the second half arrives after the handler started
        half = len(body) // 2
        reply = await request(port, head("POST", "/offer", len(body)) + body[:half],
                              body[half:], pause_s=0.05)
        assert reply.status == 200, reply.body
        assert reply.json()["type"] == "answer"
        # chunked, in three chunks, each its own segment
        third = len(body) // 3
        parts = chunked(body[:third], body[third:2 * third], body[2 * third:])
        reply = await request(port, head("POST", "/offer", Transfer_Encoding="chunked"),
                              *parts, pause_s=0.05)
        assert reply.status == 200, reply.body
        assert reply.json()["type"] == "answer"


async def test_too_large_slow_encoded_and_broken_bodies_get_a_json_reason() -> None:
    async with cloud_server(body_timeout_s=0.5) as server:
        port = server.config.port
        big = b"x" * (MAX_OFFER_BYTES + 10)
        # past the limit without a Content-Length: 413, and the connection ends
        reply = await request(port, head("POST", "/offer", Transfer_Encoding="chunked"),
                              *chunked(big[:40000], big[40000:]))
        assert (reply.status, reply.json()["error"]["code"]) == (413, "too_large")
        assert reply.headers["connection"].lower() == "close"
        # a body that stops arriving: 408 once the body timeout passes, then the end
        reader, writer = await connect(port)
        started = time.monotonic()
        writer.write(head("POST", "/offer", 2000) + b'{"type": "offer"')
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 408 ")
        assert 0.4 < time.monotonic() - started < 1.5
        rest = await asyncio.wait_for(reader.read(-1), 5)  # lingering is short
        assert b'"body_timeout"' in rest
        writer.close()
        # compressed bodies are refused, not inflated
        reply = await request(port, head("POST", "/offer", 4, Content_Encoding="gzip") + b"abcd")
        assert (reply.status, reply.json()["error"]["code"]) == (415, "unsupported_encoding")
        # a broken chunked encoding is the caller's error, not the server's
        reply = await request(port, head("POST", "/offer", Transfer_Encoding="chunked"),
                              b"zz\r\nnot hex\r\n0\r\n\r\n")
        assert reply.status == 400
        assert server.calls == {} and server.pending == 0


class FakeContent:
    """A request body that would go on forever, in 1000-byte pieces; counts what it gave."""

    def __init__(self) -> None:
        self.given = 0

    async def read(self, n: int) -> bytes:
        await asyncio.sleep(0)
        self.given += min(n, 1000)
        return b"y" * min(n, 1000)


class FakeRequest:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.content_length = None
        self.content = FakeContent()


async def test_read_body_never_holds_more_than_the_limit_plus_one() -> None:
    fake: Any = FakeRequest()
    with pytest.raises(Refusal) as refused:
        await read_body(fake, limit=5000, timeout_s=5)
    assert refused.value.status == 413
    assert fake.content.given == 5001  # taken from the stream: the limit + 1, no more


def with_sections(sdp: str, extra: str, times: int) -> str:
    return sdp.rstrip("\r\n") + "\r\n" + extra * times


AUDIO = ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{n}\r\n"
         "a=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n")


def hundreds_of_audio_sections(sdp: str) -> tuple[str, int]:
    """The adversarial offer: as many small, valid audio sections as fit in 64 KiB,
    sharing the session's ICE and DTLS parameters (aiortc answered 521 of them)."""
    lines = sdp.replace("\r\n", "\n").strip().split("\n")
    first_m = next(i for i, line in enumerate(lines) if line.startswith("m="))
    out = [line for line in lines[:first_m] if not line.startswith("a=group:BUNDLE")]
    shared: dict[str, str] = {}
    for line in lines[first_m:]:
        name = line.split(":", 1)[0]
        if name in ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"):
            shared.setdefault(name, line)
    out += shared.values()
    n = 0
    while True:
        section = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=mid:{n}",
                   "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=sendrecv"]
        trial = "\r\n".join([*out, *section]) + "\r\n"
        if len(json.dumps({"type": "offer", "sdp": trial})) > MAX_OFFER_BYTES - 100:
            return "\r\n".join(out) + "\r\n", n
        out += section
        n += 1


class NoCall:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("aiortc must not see an offer past the caps")


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda sdp: with_sections(sdp, AUDIO, 3), "too_many_m_lines"),  # 5 in all
        (lambda sdp: hundreds_of_audio_sections(sdp)[0], "too_many_m_lines"),
        (lambda sdp: with_sections(sdp, "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
                                   1), "too_many_m_lines"),  # a second data section
        (lambda sdp: with_sections(sdp, "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n",
                                   MAX_CANDIDATES + 1), "too_many_candidates"),
        (lambda sdp: with_sections(sdp, "a=x\r\n", MAX_SDP_LINES), "too_many_lines"),
        (lambda sdp: with_sections(sdp, "a=" + "x" * MAX_SDP_LINE_CHARS + "\r\n", 1),
         "line_too_long"),
        (lambda sdp: "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "no_audio"),
    ],
)
async def test_offers_past_the_caps_are_refused_before_aiortc(
    monkeypatch: pytest.MonkeyPatch, mutate: Any, code: str
) -> None:
    sdp = mutate(await browser_like_offer())
    monkeypatch.setattr(app_module, "Call", NoCall)
    async with cloud_server() as server:
        body = json.dumps({"type": "offer", "sdp": sdp}).encode()
        assert len(body) <= MAX_OFFER_BYTES
        started = time.monotonic()
        reply = await request(server.config.port, head("POST", "/offer", len(body)) + body)
        assert (reply.status, reply.json()["error"]["code"]) == (400, code)
        assert reply.json()["error"]["message"]
        assert time.monotonic() - started < 1.0


async def test_concurrent_hostile_offers_cost_little() -> None:
    """The adversarial run: 19 offers of 500 m-lines at once held the loop for seconds
    and grew the process by hundreds of MB (here, without the caps: 6 s and 300 MB)."""
    sdp, sections = hundreds_of_audio_sections(await browser_like_offer())
    assert sections >= 500
    body = json.dumps({"type": "offer", "sdp": sdp}).encode()
    async with cloud_server() as server:
        port = server.config.port
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        started = time.monotonic()
        replies = await asyncio.gather(*(
            request(port, head("POST", "/offer", len(body)) + body, timeout_s=60)
            for _ in range(19)))
        elapsed = time.monotonic() - started
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert {(r.status, r.json()["error"]["code"]) for r in replies} == {
            (400, "too_many_m_lines")}
        assert elapsed < 1.5, elapsed
        assert grown_mb < 50, grown_mb
        assert server.calls == {}


async def test_a_stalled_body_does_not_hold_the_connection_past_the_timeout() -> None:
    async with cloud_server(body_timeout_s=0.3) as server:
        reader, writer = await connect(server.config.port)
        writer.write(head("POST", "/offer", 5000) + b"{")
        assert await closed_by_server(reader, within_s=3)
        writer.close()
