"""Fixtures: a namespace with a server (rtc-agent serve or the contract peer),
optionally coturn, and headless Chromium launched inside it.

Typical use::

    def test_x(stack_factory, browser_factory):
        stack = stack_factory("rtc-agent")
        page = browser_factory(stack).new_page()
        page.goto(stack.url("/"))
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import sys
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.web.netns import REPO, NetNS, free_port, missing_tools, rtc_agent_cmd

ARTIFACTS = REPO / "artifacts"
UPSTREAM_KEY = "right-key"  # the key a stack's own offline backend takes (upstream_key)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclass
class Stack:
    """A namespace holding a running server (and maybe coturn)."""

    ns: NetNS
    port: int
    server: Any
    turn_url: str | None = None
    turn_secret: str | None = None
    turn_log: Path | None = None
    certs: Any = None  # rtc_agent.signaling.certs.CertPaths when serving HTTPS
    token: str | None = None  # --token, presented where the server wants it
    extra: dict = field(default_factory=dict)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        # 127.0.0.1 is a secure origin, so getUserMedia works over plain http;
        # ICE still runs over the veth address given to --ice-address.
        scheme = "https" if self.certs else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def healthz(self) -> dict:
        """The details; with --token they need the token (the bare answer is public)."""
        return self.ns.get_json(self.url("/healthz"), token=self.token)

    def server_log(self) -> str:
        return self.ns.tail(self.server, 20000)


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"browser tests need {', '.join(missing)}")


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Make stacks; each is torn down (processes stopped, namespace deleted) after the test."""
    require_tools()
    made: list[NetNS] = []

    def make(
        server: str = "rtc-agent",
        args: Sequence[str] = (),
        turn: bool = False,
        max_calls: int | None = 4,
        https: bool = False,
        upstream_key: str | None = None,
    ) -> Stack:
        """`upstream_key`: serve calls through a separate offline backend that only
        takes the key UPSTREAM_KEY, presenting this one (a wrong one: a refused key)."""
        ns = NetNS.create()
        made.append(ns)
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        upstream_args: list[str] = []
        if upstream_key is not None:
            upstream_port = free_port()
            backend = ns.spawn(
                [sys.executable, "-m", "rtc_agent.offline.command", "--host", "127.0.0.1",
                 "--port", str(upstream_port), "--api-key", UPSTREAM_KEY, "--tts", "espeak"],
                tmp_path / f"backend-{ns.name}.log", env=env,
            )
            ns.wait_http(f"http://127.0.0.1:{upstream_port}/", backend, timeout_s=60)
            upstream_args = ["--realtime-url", f"ws://127.0.0.1:{upstream_port}/v1/realtime"]
            env["REALTIME_API_KEY"] = upstream_key
        turn_url = turn_secret = turn_log = None
        if turn:
            if shutil.which("turnserver") is None:
                pytest.skip("needs coturn's turnserver")
            turn_secret = secrets.token_hex(16)
            turn_port = free_port()
            turn_log = tmp_path / f"turnserver-{ns.name}.log"
            # TURN listens and relays on the veth end that the server does not
            # use, so a relayed path really crosses two addresses.
            ns.spawn(
                [
                    "turnserver",
                    "-n",
                    "--listening-ip",
                    ns.peer_ip,
                    "--relay-ip",
                    ns.peer_ip,
                    "--listening-port",
                    str(turn_port),
                    "--min-port",
                    "49152",
                    "--max-port",
                    "49352",
                    "--use-auth-secret",
                    "--static-auth-secret",
                    turn_secret,
                    "--realm",
                    "rtc-agent.test",
                    "--no-tls",
                    "--no-dtls",
                    "--no-cli",
                    "--log-file",
                    str(turn_log),
                    "--simple-log",
                    "--no-stdout-log",
                    "--pidfile",
                    str(tmp_path / f"turn-{ns.name}.pid"),
                    "--verbose",
                ],
                tmp_path / f"turnserver-{ns.name}.out",
            )
            turn_url = f"turn:{ns.peer_ip}:{turn_port}?transport=udp"
        if server == "rtc-agent":
            cmd = [
                *rtc_agent_cmd(),
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--ice-address",
                ns.server_ip,
            ]
        elif server == "contract":
            cmd = [
                sys.executable,
                "-m",
                "tests.web.contract_server",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--ice-address",
                ns.server_ip,
            ]
        else:
            raise ValueError(server)
        if max_calls is not None:
            cmd += ["--max-calls", str(max_calls)]
        if turn_url:
            cmd += ["--turn-url", turn_url, "--turn-secret", str(turn_secret)]
        cert_paths = None
        if https:
            from rtc_agent.signaling.certs import generate

            # like `rtc-agent certs --ip <veth address>`: the namespace's
            # address is not one of this machine's, so it is added by hand
            cert_paths = generate(tmp_path / f"certs-{ns.name}", addresses=[ns.server_ip])
            cmd += ["--cert", str(cert_paths.cert), "--key", str(cert_paths.key)]
        cmd += upstream_args + list(args)
        proc = ns.spawn(cmd, tmp_path / f"{server}-{ns.name}.log", env=env)
        token = next((b for a, b in itertools.pairwise(args) if a == "--token"), None)
        stack = Stack(ns, port, proc, turn_url, turn_secret, turn_log, cert_paths, token)
        ns.wait_http(stack.url("/healthz"), proc, timeout_s=60)
        return stack

    yield make
    for ns in made:
        ns.delete()


@pytest.fixture
def roaming_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Make a server and a browser namespace joined by two links (tests/web/roaming.py);
    each is torn down after the test. Launch Chromium with browser_factory(stack,
    args=stack.browser_args())."""
    require_tools()
    from tests.web.roaming import roaming

    with contextlib.ExitStack() as cleanup:

        def make(args: Sequence[str] = (), turn: bool = False) -> Any:
            if turn and shutil.which("turnserver") is None:
                pytest.skip("needs coturn's turnserver")
            return cleanup.enter_context(roaming(tmp_path, args=args, turn=turn))

        yield make


@pytest.fixture
def browser_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Launch Chromium inside a stack's namespace: browser_factory(stack, audio=...)."""
    require_tools()
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as cleanup:
        pw = cleanup.enter_context(sync_playwright())

        def launch(
            stack: Stack,
            audio: Path | None = None,
            fake_ui: bool = True,
            fake_device: bool = True,
            args: Sequence[str] = (),
        ) -> Any:
            flags = list(CHROMIUM_ARGS)
            if fake_ui:
                flags.append("--use-fake-ui-for-media-stream")
            if fake_device:
                flags.append("--use-fake-device-for-media-stream")
            if audio is not None:
                flags.append(f"--use-file-for-fake-audio-capture={audio}")
            flags += list(args)
            browser = pw.chromium.launch(
                executable_path=str(stack.ns.chromium_wrapper(tmp_path)),
                headless=True,
                args=flags,
                timeout=60_000,
            )
            cleanup.callback(browser.close)
            return browser

        yield launch


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A piper-spoken question followed by long silence (Chromium loops the file,
    so the silence leaves the agent time to answer before the question repeats)."""
    from tests.speech import read_wav, speak_wav

    spoken = speak_wav("what is twelve times seven", rate=48000)
    pcm, rate = read_wav(spoken)
    out = tmp_path_factory.mktemp("audio") / "question.wav"
    padded = np.concatenate([pcm, np.zeros(rate * 12, np.int16)])
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(padded.tobytes())
    return out


@pytest.fixture(scope="session")
def silence_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A silent microphone: the agent hears nothing, so only typed messages get replies."""
    out = tmp_path_factory.mktemp("audio") / "silence.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(np.zeros(48000 * 10, np.int16).tobytes())
    return out


# Every Content-Security-Policy violation the page meets, for tests to assert on
# (init scripts run outside the page's CSP).
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def watch_csp(page: Any) -> Any:
    page.add_init_script(CSP_WATCH)
    return page


def csp_violations(page: Any) -> list[str]:
    return page.evaluate("window.__cspViolations || []")


def artifact_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
