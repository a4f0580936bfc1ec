"""Requests one worker hands to another: the offer it placed there, or a call's request.

A worker's internal address takes only requests carrying the cluster secret, so
nobody outside can reach a worker directly and skip the public port's checks
(`--token`, rate limits, `--max-calls`): the worker that received the request
ran them already. The client's address travels along for the owner's logs.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Rtc-Agent-Cluster"
CLIENT_HEADER = "X-Rtc-Agent-Client"
USER_AGENT_HEADER = "X-Rtc-Agent-User-Agent"  # the caller's, for the owner's call record
# Answering an offer gathers ICE candidates; a worker that takes longer is stuck.
FORWARD_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 1.0
MAX_RESPONSE_BYTES = 256 * 1024  # an answer SDP is a few kilobytes
PASSED_HEADERS = ("Retry-After", "Content-Type")


class ForwardFailed(Exception):
    """The other worker could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Forwarded:
    """What the other worker answered, to be passed on unchanged."""

    status: int
    body: bytes
    headers: dict[str, str]


def authentic(given: str | None, secret: str) -> bool:
    """Whether a request presents the cluster secret (compared in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


class Forwarder:
    """One pooled HTTP client for a worker's requests to its peers."""

    def __init__(self, secret: str, *, timeout_s: float = FORWARD_TIMEOUT_S) -> None:
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64),
                skip_auto_headers=("User-Agent",))
        return self._session

    async def send(self, method: str, url: str, *, client: str | None,
                   body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Forwarded:
        headers = {**(headers or {}), SECRET_HEADER: self._secret}
        if client:
            headers[CLIENT_HEADER] = client
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._client().request(method, url, data=body, headers=headers,
                                              allow_redirects=False) as response:
                data = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(data) > MAX_RESPONSE_BYTES:
                    raise ForwardFailed(f"{url}: answer too large")
                passed = {k: v for k in PASSED_HEADERS if (v := response.headers.get(k))}
                return Forwarded(response.status, data, passed)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ForwardFailed(f"{method} {url}: {type(exc).__name__}: {exc}"[:300]) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
