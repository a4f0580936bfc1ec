"""A private network namespace holding rtc-agent, Chromium (and coturn) for a test.

Chromium gathers no loopback ICE candidates, so a browser call needs a real
interface. Each `NetNS` is a fresh namespace with `lo` up and a veth pair
(10.99.N.1 <-> 10.99.N.2) whose both ends stay inside it: every packet of the
test stays on hosts the test made, and the namespace is deleted afterwards.

Processes are put inside with `ip netns exec`; Playwright launches Chromium
through a small wrapper script that does the same, and keeps talking to it
over the pipe it inherited (pipes do not care about namespaces).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/lib/chromium/chromium"
REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count(1)

# argv: method url timeout cacert header...; prints the status, a newline, the body
_HTTP_SCRIPT = """
import ssl, sys, urllib.error, urllib.request
method, url, timeout, cacert, *headers = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cacert) if cacert else ssl._create_unverified_context()
req = urllib.request.Request(url, method=method)
for h in headers:
    k, _, v = h.partition(":")
    req.add_header(k.strip(), v.strip())
try:
    # no proxies: every request of a test stays inside its namespace
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(req, timeout=float(timeout)) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except Exception:
    status, body = 0, b""
sys.stdout.write(f"{status}\\n" + body.decode("utf-8", "replace"))
"""


def missing_tools() -> list[str]:
    """What this machine lacks for namespace browser tests (empty when ready)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (for ip netns)")
    if shutil.which("ip") is None:
        missing.append("iproute2")
    if not Path(CHROMIUM).exists():
        missing.append("chromium")
    return missing


def _run(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


@dataclass
class NetNS:
    """One namespace; `server_ip`/`peer_ip` are the two veth ends."""

    name: str
    subnet: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def server_ip(self) -> str:
        return f"10.99.{self.subnet}.1"

    @property
    def peer_ip(self) -> str:
        return f"10.99.{self.subnet}.2"

    @classmethod
    def create(cls) -> NetNS:
        # pid and a counter keep concurrent test runs and fixtures apart
        n = next(_counter)
        subnet = (os.getpid() * 7 + n) % 250 + 1
        ns = cls(name=f"rtca-{os.getpid()}-{n}", subnet=subnet)
        _run("ip", "netns", "add", ns.name)
        try:
            ip = ("ip", "-n", ns.name)
            # No IPv6: link-local addresses appearing after the links come up are a
            # network change to Chromium, which aborts a load in flight with
            # ERR_NETWORK_CHANGED (seen once in this suite).
            _run("ip", "netns", "exec", ns.name, "sysctl", "-qw",
                 "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            _run(*ip, "link", "set", "lo", "up")
            _run(*ip, "link", "add", "rtca0", "type", "veth", "peer", "name", "rtca1")
            _run(*ip, "addr", "add", f"{ns.server_ip}/24", "dev", "rtca0")
            _run(*ip, "addr", "add", f"{ns.peer_ip}/24", "dev", "rtca1")
            _run(*ip, "link", "set", "rtca0", "up")
            _run(*ip, "link", "set", "rtca1", "up")
        except Exception:
            ns.delete()
            raise
        return ns

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def spawn(
        self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start `cmd` inside the namespace, output to `log`, in its own process group."""
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "wb")  # closed in stop()
        proc = subprocess.Popen(
            [*self.exec_prefix(), *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=REPO,
        )
        proc._rtca_log = fh  # type: ignore[attr-defined]
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def http(
        self,
        method: str,
        url: str,
        timeout: float = 5.0,
        headers: Sequence[str] = (),
        cacert: Path | None = None,
    ) -> tuple[int, str]:
        """An HTTP request from inside the namespace: (status, body); status 0 = no answer.

        HTTPS is verified against `cacert` when given, else not verified.
        Runs this interpreter in the namespace (no curl needed on the machine).
        """
        cmd = [
            *self.exec_prefix(),
            sys.executable,
            "-c",
            _HTTP_SCRIPT,
            method,
            url,
            str(timeout),
            str(cacert or ""),
            *headers,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        code, _, body = out.stdout.partition("\n")
        return (int(code) if code.isdigit() else 0), body

    def get_json(self, url: str, token: str | None = None) -> dict:
        headers = [f"Authorization: Bearer {token}"] if token else []
        status, body = self.http("GET", url, headers=headers)
        if status != 200:
            raise RuntimeError(f"GET {url}: HTTP {status} {body[:200]}")
        return json.loads(body)

    def wait_http(self, url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
        """Wait until `url` answers (any status), or fail with the process log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}:\n{self.tail(proc)}")
            status, _ = self.http("GET", url, timeout=2)
            if status:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{url} did not answer in {timeout_s} s:\n{self.tail(proc)}")

    def tail(self, proc: subprocess.Popen, n: int = 4000) -> str:
        idx = self.procs.index(proc)
        try:
            return self.logs[idx].read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group we started, SIGKILL if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout_s)
        fh = getattr(proc, "_rtca_log", None)
        if fh is not None:
            fh.close()

    def delete(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=20)

    def chromium_wrapper(self, directory: Path) -> Path:
        """An executable that runs Chromium inside this namespace, for Playwright."""
        path = directory / f"chromium-{self.name}.sh"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {CHROMIUM} "$@"\n')
        path.chmod(0o755)
        return path


def create_split() -> tuple[NetNS, NetNS]:
    """Two namespaces joined by one veth pair: the first keeps rtca0 (`server_ip`),
    the second gets rtca1 (`peer_ip`).

    Inside one namespace both addresses are local and traffic between them
    never crosses the link; across two, a packet from the peer enters the
    first namespace through its netfilter hooks, as from another host (a NAT
    in front of the server can then be emulated there). Delete the second
    before the first.
    """
    ns = NetNS.create()
    peer = NetNS(name=f"{ns.name}p", subnet=ns.subnet)
    try:
        _run("ip", "netns", "add", peer.name)
        _run("ip", "netns", "exec", peer.name, "sysctl", "-qw",
             "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        _run("ip", "-n", peer.name, "link", "set", "lo", "up")
        _run("ip", "-n", ns.name, "link", "set", "rtca1", "netns", peer.name)
        _run("ip", "-n", peer.name, "addr", "add", f"{peer.peer_ip}/24", "dev", "rtca1")
        _run("ip", "-n", peer.name, "link", "set", "rtca1", "up")
    except Exception:
        peer.delete()
        ns.delete()
        raise
    return ns, peer


@contextlib.contextmanager
def split_netns() -> Iterator[tuple[NetNS, NetNS]]:
    """`create_split`, deleted afterwards."""
    ns, peer = create_split()
    try:
        yield ns, peer
    finally:
        peer.delete()
        ns.delete()


@contextlib.contextmanager
def netns() -> Iterator[NetNS]:
    ns = NetNS.create()
    try:
        yield ns
    finally:
        ns.delete()


def descendants(pid: int) -> list[int]:
    """The processes under `pid` (children, their children...), deepest first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name is in parentheses and may hold spaces: split after it
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found[::-1]


def crash(proc: subprocess.Popen) -> None:
    """SIGKILL a process we started and everything under it, children first (a
    parent killed first would have its children told, by their parent-death signal,
    to shut down cleanly): a crash, with nothing closed on the way."""
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    """A port number for a server inside a fresh namespace: any will do there,
    but pid-derived values keep logs of parallel runs apart."""
    return 20000 + (os.getpid() * 13 + next(_counter)) % 20000


def rtc_agent_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("rtc-agent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rtc_agent.cli"]
