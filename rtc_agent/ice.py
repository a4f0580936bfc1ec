"""Which local addresses ICE offers, and the ICE server list a peer uses.

aioice gathers host candidates from every interface except 127.0.0.1. A server
with several interfaces, or a test that must keep its packets on loopback,
needs to choose: `restrict_host_addresses` narrows gathering process-wide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_original_get_host_addresses = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: Iterable[str] | None) -> None:
    """Offer only `addresses` as host candidates (None restores aioice's default)."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    chosen = [a for a in addresses if a]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def rtc_configuration(ice_servers: Sequence[dict] = ()) -> RTCConfiguration:
    """An RTCConfiguration from browser-style dicts; empty means no STUN at all.

    aiortc falls back to a public STUN server when given no configuration, which
    only stalls gathering on a machine without internet; an explicit empty list
    avoids that.
    """
    servers = [
        RTCIceServer(
            urls=s["urls"], username=s.get("username"), credential=s.get("credential")
        )
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
