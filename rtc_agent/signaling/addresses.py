"""This machine's addresses, and the URLs a phone on the LAN can open.

`serve --host 0.0.0.0` listens on every address, but "0.0.0.0" is no URL a
phone can open; the operator needs the machine's own addresses. They are read
without sending anything: from `ip -j addr` where iproute2 is installed (it names
each address's interface, so the host side of container and VM bridges, which no
phone reaches, can be left out), else from Linux's /proc/net tables, else from
resolving the host name (which /etc/hosts may answer with a stale address, so it
is the last resort).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Interfaces on the host's side of container and VM networks: a phone cannot reach them.
VIRTUAL_PREFIXES = ("docker", "br-", "veth", "virbr", "vnet", "cni", "flannel", "podman",
                    "lxcbr", "lxdbr", "vboxnet", "vmnet")
IP_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class HostAddress:
    """One address of this machine and its interface (None when the source does not say)."""

    address: IPAddress
    interface: str | None = None


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0].strip())
    except ValueError:
        return None


def parse_ip_json(text: str) -> list[HostAddress]:
    """`ip -j addr show`'s output: the addresses of interfaces that are up."""
    try:
        links = json.loads(text or "[]")
    except ValueError:
        return []
    found = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or "UP" not in link.get("flags", []):
            continue
        name = link.get("ifname") if isinstance(link.get("ifname"), str) else None
        for info in link.get("addr_info") or []:
            if not isinstance(info, dict) or info.get("tentative") or info.get("dadfailed"):
                continue
            address = _ip(str(info.get("local", "")))
            if address is not None:
                found.append(HostAddress(address, name))
    return found


def parse_fib_trie(text: str) -> list[HostAddress]:
    """/proc/net/fib_trie: an IPv4 address of this host is a leaf followed by
    "/32 host LOCAL" (the file names no interfaces)."""
    found: list[HostAddress] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last is not None:
            address = _ip(last)
            if address is not None and HostAddress(address) not in found:
                found.append(HostAddress(address))
    return found


def parse_if_inet6(text: str) -> list[HostAddress]:
    """/proc/net/if_inet6: 32 hex digits, index, prefix, scope, flags, interface."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
            flags = int(fields[4], 16)
        except ValueError:
            continue
        if flags & 0x40 or flags & 0x08:  # tentative, or duplicate address detection failed
            continue
        found.append(HostAddress(address, fields[5]))
    return found


def _run_ip() -> str:
    if shutil.which("ip") is None:
        return ""
    try:
        return subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                              timeout=IP_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


def _by_host_name() -> list[HostAddress]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [HostAddress(a) for a in (_ip(str(info[4][0])) for info in infos) if a is not None]


def host_addresses() -> list[HostAddress]:
    """Every address of this machine, loopback included, as one source sees them."""
    found = parse_ip_json(_run_ip())
    if not found:
        found = parse_fib_trie(_read("/proc/net/fib_trie")) + parse_if_inet6(
            _read("/proc/net/if_inet6"))
    if not any(_reachable(a) for a in found):
        found += _by_host_name()
    return list(dict.fromkeys(found))


def _reachable(entry: HostAddress) -> bool:
    """Could a device on another machine use this address?"""
    a = entry.address
    if a.is_loopback or a.is_link_local or a.is_unspecified or a.is_multicast:
        return False
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return False
    return not (entry.interface or "").startswith(VIRTUAL_PREFIXES)


def lan_addresses(found: Iterable[HostAddress], host: str) -> list[IPAddress]:
    """The addresses a phone may open when the server listens on `host`: none for a
    specific address (the listening line names it), IPv4 ones for 0.0.0.0 (or no host),
    IPv6 ones for "::" (the single-process server listens on IPv6 only there). Private
    IPv4 first: the LAN's."""
    if host in ("0.0.0.0", ""):
        version = 4
    elif host == "::":
        version = 6
    else:
        return []
    chosen = list(dict.fromkeys(e.address for e in found
                                if _reachable(e) and e.address.version == version))
    return sorted(chosen, key=lambda a: not a.is_private)  # stable: keeps the source's order


def phone_urls(scheme: str, port: int, addresses: Iterable[IPAddress]) -> list[str]:
    """`scheme://address:port/` for each address (IPv6 in brackets)."""
    return [f"{scheme}://{f'[{a}]' if a.version == 6 else a}:{port}/" for a in addresses]
