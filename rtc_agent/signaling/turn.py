"""TURN credentials and the ICE server list handed to browsers and to aiortc.

Credentials follow the "TURN REST API" convention (draft-uberti-behave-turn-rest)
that coturn checks with `use-auth-secret`: the username is
`<expiry unix time>:<user>` and the password is base64(HMAC-SHA1(secret,
username)). The server never stores per-user passwords; whoever knows the
shared secret can mint short-lived credentials, and coturn rejects them once
the expiry has passed. coturn checks the expiry when a relay session is
created and does not tear down a session already running when it passes, so a
short lifetime costs a call nothing; the page fetches `/config` afresh for
each call.

The `<user>` part names who the pair was minted for (a caller's request id, a
call id): coturn logs it with every allocation, and the operator can match it
to the signaling server's log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence

DEFAULT_TTL_S = 600


def turn_credentials(
    secret: str, ttl_s: int = DEFAULT_TTL_S, user: str = "rtc-agent", now: float | None = None
) -> tuple[str, str]:
    """Return (username, password) valid for `ttl_s` seconds from `now`."""
    if not secret:
        raise ValueError("a TURN shared secret is required")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if ":" in user:
        # coturn splits the username on the first ':' to find the expiry.
        raise ValueError("user must not contain ':'")
    expiry = int(now if now is not None else time.time()) + int(ttl_s)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _is_turn(url: str) -> bool:
    return url.lower().startswith(("turn:", "turns:"))


def ice_servers(
    ice_server_urls: Sequence[str],
    turn_urls: Sequence[str],
    turn_secret: str | None,
    ttl_s: int = DEFAULT_TTL_S,
    user: str = "rtc-agent",
) -> list[dict]:
    """Browser-style RTCIceServer dicts: STUN urls as given, TURN urls with fresh credentials.

    `ice_server_urls` may hold STUN and TURN urls (`--ice-server`); `turn_urls`
    are TURN urls (`--turn-url`). Every TURN url needs `turn_secret`: a TURN
    server without credentials would only fail the call later, so it fails here.
    All TURN urls share one credential pair, grouped in one entry, as a browser
    tries each url of an entry with the same username. `user` goes into the
    username (see the module's docstring).
    """
    stun: list[str] = []
    turn: list[str] = []
    for url in [*ice_server_urls, *turn_urls]:
        url = url.strip()
        if not url:
            continue
        if _is_turn(url):
            if url not in turn:
                turn.append(url)
        elif url.lower().startswith(("stun:", "stuns:")):
            if url not in stun:
                stun.append(url)
        else:
            raise ValueError(f"not a STUN or TURN url: {url!r}")
    servers: list[dict] = [{"urls": stun}] if stun else []
    if turn:
        if not turn_secret:
            raise ValueError("TURN urls need a shared secret (--turn-secret)")
        username, credential = turn_credentials(turn_secret, ttl_s, user)
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers
