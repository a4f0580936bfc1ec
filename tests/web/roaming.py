"""A browser that changes networks mid-call: two namespaces joined by two links.

The server's namespace holds `rtc-agent serve` (and coturn, for relay-only
calls); the browser's holds Chromium. They are joined by two veth pairs, as a
phone is by Wi-Fi and by the cellular network:

    link a:  rtca0 10.99.N.1/24 (server)  <->  rtca1 10.99.N.2/24 (browser)
    link b:  rtcb0 10.98.N.1/24 (server)  <->  rtcb1 10.98.N.2/24 (browser)

The server is reached at 10.99.N.1 (its ICE address and the page's host) over
either link: on link b the browser routes to it through 10.98.N.1. Only one of
the browser's ends has an address at a time; `leave()` deletes it (the path
the call used dies, with no close sent), `join(link)` gives the browser an
address on a link (a new path exists). coturn listens on 10.97.N.1, an address
of the server's namespace reached over either link. Every packet stays inside
the two namespaces, which are deleted afterwards.

The page is opened at http://10.99.N.1:PORT/ (not localhost), so the signalling
takes the same path as the media and dies with it, as on a phone; Chromium is
told to treat that origin as secure (`browser_args`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.web.netns import NetNS, create_split, free_port, rtc_agent_cmd

LINKS = ("a", "b")


def _ip(ns: NetNS, *args: str, check: bool = True) -> None:
    out = subprocess.run(["ip", "-n", ns.name, *args], capture_output=True, text=True,
                         timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip -n {ns.name} {' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Roaming:
    """The two namespaces and a running server; `ns` is the browser's (for
    conftest's browser_factory, which launches Chromium inside `stack.ns`)."""

    ns: NetNS  # the browser's namespace
    server_ns: NetNS
    port: int
    server: subprocess.Popen
    turn_url: str | None = None
    turn_log: Path | None = None
    joined: list[str] = field(default_factory=lambda: ["a"])  # links with an address, newest last

    @property
    def server_ip(self) -> str:
        return self.server_ns.server_ip

    @property
    def turn_ip(self) -> str:
        return f"10.97.{self.server_ns.subnet}.1"

    @property
    def on(self) -> str | None:
        """The link the browser's traffic takes (its newest), None with no address."""
        return self.joined[-1] if self.joined else None

    def browser_ip(self, link: str) -> str:
        return f"{self._subnet(link)}.2"

    def _subnet(self, link: str) -> str:
        return f"10.{99 if link == 'a' else 98}.{self.server_ns.subnet}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.server_ip}:{self.port}{path}"

    def browser_args(self) -> list[str]:
        # getUserMedia needs a secure context; a phone would use HTTPS here
        return [f"--unsafely-treat-insecure-origin-as-secure={self.url('')}"]

    def healthz(self) -> dict:
        """Asked inside the server's namespace, so it works whatever the browser's links."""
        return self.server_ns.get_json(f"http://127.0.0.1:{self.port}/healthz")

    def server_log(self) -> str:
        return self.server_ns.tail(self.server, 20000)

    def leave(self, link: str | None = None) -> None:
        """The browser loses its address on `link` (default: the one in use): a path
        over it dies, with nothing sent. Traffic moves to the link left, if any."""
        link = link or self.on
        if link is None or link not in self.joined:
            return
        self.joined.remove(link)
        _ip(self.ns, "route", "del", "default", check=False)
        _ip(self.ns, "addr", "del", f"{self.browser_ip(link)}/24", "dev", _DEV[link])
        if self.joined:
            _ip(self.ns, "route", "replace", "default", "via", f"{self._subnet(self.on)}.1")

    def join(self, link: str) -> None:
        """The browser gets an address on `link` and routes to the server over it."""
        assert link in LINKS and link not in self.joined, (link, self.joined)
        _ip(self.ns, "addr", "add", f"{self.browser_ip(link)}/24", "dev", _DEV[link])
        _ip(self.ns, "route", "replace", "default", "via", f"{self._subnet(link)}.1")
        self.joined.append(link)

    def other(self) -> str:
        return "b" if self.on == "a" else "a"


_DEV = {"a": "rtca1", "b": "rtcb1"}


def _link_up(server: NetNS, browser: NetNS) -> None:
    """The second link (b): its server end has an address; the browser's has none yet."""
    _ip(server, "link", "add", "rtcb0", "type", "veth", "peer", "name", "rtcb1")
    _ip(server, "link", "set", "rtcb1", "netns", browser.name)
    _ip(server, "addr", "add", f"10.98.{server.subnet}.1/24", "dev", "rtcb0")
    _ip(server, "link", "set", "rtcb0", "up")
    _ip(browser, "link", "set", "rtcb1", "up")
    _ip(server, "addr", "add", f"10.97.{server.subnet}.1/32", "dev", "lo")
    _ip(browser, "route", "replace", "default", "via", server.server_ip)


@contextlib.contextmanager
def roaming(
    work: Path,
    args: Sequence[str] = (),
    turn: bool = False,
    wait_s: float = 60.0,
) -> Iterator[Roaming]:
    """Two namespaces, two links, `rtc-agent serve` on the offline backend (and
    coturn with `turn`); everything is stopped and deleted on exit."""
    server_ns, browser_ns = create_split()
    try:
        _link_up(server_ns, browser_ns)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        port = free_port()
        turn_args: list[str] = []
        turn_url = turn_log = None
        if turn:
            if shutil.which("turnserver") is None:
                raise RuntimeError("needs coturn's turnserver")
            secret = secrets.token_hex(16)
            turn_port = free_port()
            turn_ip = f"10.97.{server_ns.subnet}.1"
            turn_log = work / f"turnserver-{server_ns.name}.log"
            server_ns.spawn(
                ["turnserver", "-n", "--listening-ip", turn_ip, "--relay-ip", turn_ip,
                 "--listening-port", str(turn_port), "--min-port", "49152", "--max-port", "49352",
                 "--use-auth-secret", "--static-auth-secret", secret, "--realm", "rtc-agent.test",
                 "--no-tls", "--no-dtls", "--no-cli", "--log-file", str(turn_log), "--simple-log",
                 "--no-stdout-log", "--pidfile", str(work / f"turn-{server_ns.name}.pid")],
                work / f"turnserver-{server_ns.name}.out",
            )
            turn_url = f"turn:{turn_ip}:{turn_port}?transport=udp"
            turn_args = ["--turn-url", turn_url, "--turn-secret", secret]
        cmd = [*rtc_agent_cmd(), "serve", "--host", "0.0.0.0", "--port", str(port),
               "--ice-address", server_ns.server_ip, "--max-calls", "4", *turn_args, *args]
        server = server_ns.spawn(cmd, work / f"rtc-agent-{server_ns.name}.log", env=env)
        server_ns.wait_http(f"http://127.0.0.1:{port}/healthz", server, timeout_s=wait_s)
        yield Roaming(browser_ns, server_ns, port, server, turn_url, turn_log)
    finally:
        browser_ns.delete()
        server_ns.delete()


def wait_until(check, timeout_s: float, what: str, step_s: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll `check()` until truthy; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(step_s)


if __name__ == "__main__":  # a quick look by hand: python -m tests.web.roaming
    with roaming(Path("/tmp")) as r:
        print(r, r.healthz())
        r.join("b")
        r.leave("a")
        print("moved to b:", subprocess.run(["ip", "-n", r.ns.name, "-br", "addr"],
                                            capture_output=True, text=True).stdout)
        sys.exit(0)
