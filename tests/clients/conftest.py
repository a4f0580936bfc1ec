"""Runs each third-party client's driver against the offline backend, once per client.

The backend is a RealtimeServer in this process on 127.0.0.1:0, with a tap on every
session (the frames the client sent, the events the server sent back), so the tests
see both sides of the conversation. The driver runs in the client's own venv
(tests/clients/venvs.py) as a subprocess of its own process group, bounded in time
and killed (that group only) if it overruns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rtc_agent.offline.driver import Engines, SessionDriver
from rtc_agent.offline.server import OfflineServerConfig, RealtimeServer, build_engines
from tests.clients.drivers.common import RESULT_PREFIX
from tests.clients.venvs import CLIENTS, Client, VenvBuildError, ensure
from tests.speech import speak_wav

QUESTION = "what is twelve times seven"  # spoken by piper for the audio turn
DRIVER_TIMEOUT_S = 240.0  # all three turns; each turn is bounded by the driver at 60 s


@dataclass
class SessionTap:
    """One WebSocket session as the backend saw it."""

    dialect: str  # the dialect the backend chose for the connection
    model: str  # the model named in the URL
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, appends elided
    appended_bytes: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # server events, audio elided
    audio_sent_bytes: int = 0

    def sent_types(self) -> list[str]:
        return [e["type"] for e in self.sent]

    def received_of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == type_]


@dataclass
class ClientRun:
    """What one driver run printed, and what the backend saw meanwhile."""

    client: Client
    result: dict[str, Any]  # the driver's JSON: {"client", "version", "turns": {...}}
    sessions: list[SessionTap]
    stderr: str
    seconds: float
    venv_built_s: float | None  # seconds the venv took to build, None when reused

    def turn(self, name: str) -> dict[str, Any]:
        turn: dict[str, Any] = self.result["turns"][name]
        return turn


def _tap(session: SessionDriver, taps: list[SessionTap]) -> None:
    """Wrap a session's input and output so the test can read both."""
    tap = SessionTap(session.conv.dialect.value, session.conv.session["model"])
    taps.append(tap)
    handle, send = session.handle_frame, session.send

    async def handle_frame(frame: str | bytes) -> None:
        with contextlib.suppress(ValueError, TypeError):
            event = json.loads(frame)
            if isinstance(event, dict):
                if event.get("type") == "input_audio_buffer.append":
                    tap.appended_bytes += len(base64.b64decode(event.get("audio") or ""))
                else:
                    tap.received.append(event)
        await handle(frame)

    async def send_events(events: list[dict[str, Any]]) -> None:
        for event in events:
            if event.get("type") == "response.output_audio.delta":
                tap.audio_sent_bytes += len(base64.b64decode(event["delta"]))
                event = {**event, "delta": "..."}
            tap.sent.append(event)
        await send(events)

    session.handle_frame = handle_frame  # type: ignore[method-assign]
    session.send = send_events


def _driver_env() -> dict[str, str]:
    """This environment less what could point a client elsewhere than the URL it is given
    (its vendor's variables, proxies: websockets and httpx honour *_PROXY)."""
    dropped = ("OPENAI_", "AZURE_", "LIVEKIT_", "LK_")
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(dropped) and not k.lower().endswith("_proxy")}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into.extend(chunk)


async def _run_driver(client: Client, python: Path, engines: Engines, speech: Path,
                      out_dir: Path) -> tuple[dict[str, Any], list[SessionTap], str]:
    taps: list[SessionTap] = []
    config = OfflineServerConfig(host="127.0.0.1", port=0)
    async with RealtimeServer(config, engines) as server:
        server.on_session = lambda session: _tap(session, taps)
        url = client.url.format(port=server.port)
        proc = await asyncio.create_subprocess_exec(
            str(python), str(client.driver), "--url", url, "--speech", str(speech),
            "--out-dir", str(out_dir), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env=_driver_env())
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = bytearray(), bytearray()
        readers = [asyncio.ensure_future(_drain(proc.stdout, stdout)),
                   asyncio.ensure_future(_drain(proc.stderr, stderr))]
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), DRIVER_TIMEOUT_S)
        except TimeoutError:
            timed_out = True
        finally:
            # The group this test started, and only it: the driver if it overran, and
            # anything of its own it left behind either way.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            await asyncio.wait_for(asyncio.gather(*readers), 10)
    text = stderr.decode(errors="replace")
    if timed_out:
        pytest.fail(f"{client.name} driver still running after {DRIVER_TIMEOUT_S:g} s: "
                    f"killed\n{text[-4000:]}")
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, \
        f"{client.name} driver exited with {proc.returncode}:\n{text[-4000:]}"
    return json.loads(lines[-1][len(RESULT_PREFIX):]), taps, text


@pytest.fixture(scope="session")
def engines() -> Engines:
    """The real engines (piper, pocketsphinx, silero, rules), loaded once per run."""
    return build_engines("piper", tts_cache=256)


@pytest.fixture(scope="module", params=sorted(CLIENTS))
def client_run(request: pytest.FixtureRequest, engines: Engines,
               tmp_path_factory: pytest.TempPathFactory) -> ClientRun:
    """The client's venv (built if need be), then its driver's run against the backend."""
    client = CLIENTS[request.param]
    try:
        built = ensure(client)
    except VenvBuildError as exc:
        message = f"cannot build the {client.name} venv: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if built.built_now:
        print(f"built {client.venv} in {built.seconds:.0f} s")
    speech = speak_wav(QUESTION, rate=24000)
    out_dir = tmp_path_factory.mktemp(client.name)
    started = time.monotonic()
    result, taps, stderr = asyncio.run(_run_driver(client, built.python, engines, speech,
                                                   out_dir))
    return ClientRun(client, result, taps, stderr, time.monotonic() - started,
                     built.seconds if built.built_now else None)
