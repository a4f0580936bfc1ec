"""The URLs `serve --host 0.0.0.0` prints for phones, and the certificate check under HTTPS."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from rtc_agent.signaling import addresses, certs
from rtc_agent.signaling.addresses import HostAddress, lan_addresses, phone_urls

IP_JSON = json.dumps([
    {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [
        {"family": "inet", "local": "127.0.0.1"}, {"family": "inet6", "local": "::1"}]},
    {"ifname": "wlan0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "addr_info": [
        {"family": "inet", "local": "192.168.1.20"},
        {"family": "inet6", "local": "fe80::1"},
        {"family": "inet6", "local": "2001:db8::20"},
        {"family": "inet6", "local": "2001:db8::99", "tentative": True}]},
    {"ifname": "eth1", "flags": ["BROADCAST"], "addr_info": [  # down
        {"family": "inet", "local": "10.9.9.9"}]},
    {"ifname": "docker0", "flags": ["UP"], "addr_info": [
        {"family": "inet", "local": "172.17.0.1"}]},
    {"ifname": "tun0", "flags": ["UP"], "addr_info": [
        {"family": "inet", "local": "100.64.0.7"}, {"local": "not-an-address"}]},
])

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.168.1.0/24 2 0 2
           |-- 192.168.1.0
              /24 link UNICAST
           |-- 192.168.1.20
              /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
Local:
           |-- 192.168.1.20
              /32 host LOCAL
"""

IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 80     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
20010db8000000000000000000000077 04 40 00 c0     eth0
00000000000000000000000000000001 01 80 10 80       lo
garbage line
"""


def ips(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(t) for t in texts]


def test_ip_json_keeps_interfaces_that_are_up() -> None:
    found = addresses.parse_ip_json(IP_JSON)
    assert [str(a.address) for a in found] == [
        "127.0.0.1", "::1", "192.168.1.20", "fe80::1", "2001:db8::20", "172.17.0.1",
        "100.64.0.7"]
    assert found[2] == HostAddress(ipaddress.ip_address("192.168.1.20"), "wlan0")
    assert addresses.parse_ip_json("not json") == [] and addresses.parse_ip_json("{}") == []


def test_proc_tables() -> None:
    assert [a.address for a in addresses.parse_fib_trie(FIB_TRIE)] == ips(
        "127.0.0.1", "192.168.1.20")
    found = addresses.parse_if_inet6(IF_INET6)
    assert [a.address for a in found] == ips("fd00::2", "fe80::fc:ff:fe00:1", "::1")  # 0xc0: DAD
    assert found[0].interface == "eth0"


def test_what_a_phone_can_open() -> None:
    found = addresses.parse_ip_json(IP_JSON)
    # Loopback, link-local, the docker bridge and the down interface are left out;
    # the private (LAN) address comes first.
    assert lan_addresses(found, "0.0.0.0") == ips("192.168.1.20", "100.64.0.7")
    assert lan_addresses(found, "::") == ips("2001:db8::20")
    assert lan_addresses(found, "192.168.1.20") == []  # the listening line names it already
    assert phone_urls("https", 8443, ips("192.168.1.20", "2001:db8::20")) == [
        "https://192.168.1.20:8443/", "https://[2001:db8::20]:8443/"]


def test_host_addresses_of_this_machine() -> None:
    """Whatever the machine has, loopback is among them and nothing is duplicated."""
    found = addresses.host_addresses()
    assert ipaddress.ip_address("127.0.0.1") in [a.address for a in found]
    assert len(found) == len(set(found))


def test_certificate_coverage(tmp_path: Path) -> None:
    ca_cert, ca_key = certs.create_ca()
    leaf, _ = certs.create_server_cert(ca_cert, ca_key, ["localhost"],
                                       ["127.0.0.1", "192.168.1.20"])
    assert certs.uncovered(leaf, ips("192.168.1.20", "10.0.0.5", "2001:db8::20")) == ips(
        "10.0.0.5", "2001:db8::20")
    paths = certs.generate(tmp_path / "certs", addresses=["203.0.113.9"])
    assert certs.certificate_gaps(paths.cert, ips("203.0.113.9", "198.51.100.1")) == ips(
        "198.51.100.1")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ValueError):
        certs.certificate_gaps(tmp_path / "junk.pem", ips("10.0.0.5"))


def test_serve_announces_phone_urls_and_certificate_gaps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from rtc_agent import serve
    from rtc_agent.config import ServeConfig

    lan = [HostAddress(ipaddress.ip_address("127.0.0.1"), "lo"),
           HostAddress(ipaddress.ip_address("192.168.77.20"), "wlan0")]
    monkeypatch.setattr(addresses, "host_addresses", lambda: lan)
    certs.generate(tmp_path / "certs")  # this machine's addresses, not 192.168.77.20
    cfg = ServeConfig(host="0.0.0.0", https=True, cert_dir=tmp_path / "certs")
    serve.announce(cfg, "https", 8443)
    assert capsys.readouterr().out == (
        "phones on the same network can open https://192.168.77.20:8443/\n")
    assert [r.getMessage() for r in caplog.records] == [
        f"the certificate {tmp_path / 'certs' / 'server.pem'} does not cover 192.168.77.20: "
        "a phone opening that address will refuse the page; run `rtc-agent certs --dir "
        f"{tmp_path / 'certs'}` to make one that does (the CA stays, so phones keep trusting "
        "it)"]
    caplog.clear()
    certs.generate(tmp_path / "certs", addresses=["192.168.77.20"])
    serve.announce(cfg, "https", 8443)
    assert caplog.records == []  # covered now
    serve.announce(ServeConfig(host="0.0.0.0"), "http", 8080)
    assert "add --https" in capsys.readouterr().out
    serve.announce(ServeConfig(host="127.0.0.1"), "http", 8080)
    assert capsys.readouterr().out == ""  # the listening line says it all
