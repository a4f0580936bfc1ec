"""What one offer may cost: its body (size, time, encoding) and its SDP's shape.

Both are checked before aiortc sees the offer. aiortc builds a transceiver,
codecs and transports for every m-line and an ICE check list from every
candidate: 19 offers of 500 audio m-lines (62 KB each) at once held the loop
for seconds and grew the process by 440 MB. A caller's page offers one audio and one
application (data channel) section; the caps leave room for other clients
while bounding the worst case.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

MAX_OFFER_BYTES = 64 * 1024
MAX_M_LINES = 4  # in all, of any kind
MAX_AUDIO_M_LINES = 2
MAX_APPLICATION_M_LINES = 1
MAX_SDP_LINES = 512  # a browser's offer has ~40-150
MAX_SDP_LINE_CHARS = 2048  # the longest real lines (candidates, fingerprints) are ~200
MAX_CANDIDATES = 128  # a=candidate lines in all sections


class Refusal(Exception):
    """Why a request is refused: an HTTP status and the JSON error's code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message


async def read_body(request: web.Request, limit: int = MAX_OFFER_BYTES,
                    timeout_s: float = 10.0) -> bytes:
    """The whole body, however it arrives (segments, chunks), within `timeout_s`.

    Never holds more than `limit + 1` bytes of it. Raises `Refusal`: 413 past
    `limit`, 408 when it does not arrive in time, 415 when it is compressed
    (a small compressed body can expand without bound), 400 when malformed.
    """
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Refusal(415, "unsupported_encoding", "send the offer uncompressed")
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "too_large", f"offers are limited to {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                # read(n) returns what has arrived (up to n), b"" only at the end
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise Refusal(413, "too_large", f"offers are limited to {limit} bytes")
    except TimeoutError:
        raise Refusal(408, "body_timeout",
                      f"the offer did not arrive within {timeout_s:g} s") from None
    except web.RequestPayloadError:  # a broken chunked encoding, a short body
        raise Refusal(400, "invalid_body", "the request body is malformed") from None
    return bytes(body)


def sdp_refusal(sdp: str) -> Refusal | None:
    """Why this offer's SDP is refused before parsing, or None when it is within bounds.

    One pass over the lines (the body is at most 64 KiB), then the most telling
    reason first.
    """
    lines = sdp.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1]:
        lines.pop()
    kinds: list[str] = []
    candidates = 0
    longest = 0
    for line in lines:
        longest = max(longest, len(line))
        if line.startswith("m="):
            kinds.append(line[2:].split(" ", 1)[0].lower())
        elif line.startswith("a=candidate:"):
            candidates += 1
    if len(kinds) > MAX_M_LINES:
        return Refusal(400, "too_many_m_lines",
                       f"an offer may have at most {MAX_M_LINES} m-lines "
                       "(one audio and one data channel are enough)")
    if kinds.count("audio") > MAX_AUDIO_M_LINES:
        return Refusal(400, "too_many_m_lines",
                       f"an offer may have at most {MAX_AUDIO_M_LINES} audio m-lines")
    if kinds.count("application") > MAX_APPLICATION_M_LINES:
        return Refusal(400, "too_many_m_lines",
                       f"an offer may have at most {MAX_APPLICATION_M_LINES} data m-line")
    if "audio" not in kinds:
        return Refusal(400, "no_audio", "the offer has no audio m-line")
    if candidates > MAX_CANDIDATES:
        return Refusal(400, "too_many_candidates",
                       f"an offer may carry at most {MAX_CANDIDATES} candidates")
    if len(lines) > MAX_SDP_LINES:
        return Refusal(400, "too_many_lines", f"an offer may have at most {MAX_SDP_LINES} lines")
    if longest > MAX_SDP_LINE_CHARS:
        return Refusal(400, "line_too_long",
                       f"an SDP line may have at most {MAX_SDP_LINE_CHARS} characters")
    return None
