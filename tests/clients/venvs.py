"""One virtualenv per third-party Realtime client, built on demand and reused.

Pipecat, the OpenAI Agents SDK and LiveKit Agents pin openai, websockets and
numpy differently from us and from each other, so each gets its own venv under
`.venv-clients/<name>/` (git-ignored; `RTC_AGENT_CLIENT_VENVS` moves it) from a
fully pinned requirements file in tests/clients/requirements/. A stamp in the
venv holds the Python version and that file's text: while they match, the venv
is reused as it is; when either changes it is rebuilt from scratch. A lock file
keeps two test runs from building the same venv at once.

`python -m tests.clients.venvs [name ...]` builds them ahead of a run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_ROOT = Path(os.environ.get("RTC_AGENT_CLIENT_VENVS") or REPO / ".venv-clients")
PIP_TIMEOUT_S = 1200.0  # a cold build of the largest (pipecat) takes one to two minutes


@dataclass(frozen=True)
class Client:
    """A third-party client: its venv, the driver script run in it, the URL it is given."""

    name: str
    package: str  # the distribution under test ...
    version: str  # ... and its pinned version (the driver reports what it imported)
    url: str  # the base URL the client is configured with; {port} is the backend's

    @property
    def requirements(self) -> Path:
        return HERE / "requirements" / f"{self.name}.txt"

    @property
    def driver(self) -> Path:
        return HERE / "drivers" / f"{self.name}_driver.py"

    @property
    def venv(self) -> Path:
        return VENV_ROOT / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


# Each client gets its base URL in the form its documentation asks for.
CLIENTS = {c.name: c for c in (
    Client("pipecat", "pipecat-ai", "1.14.0", "ws://127.0.0.1:{port}/v1/realtime"),
    Client("agents", "openai-agents", "0.24.0",
           "ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"),
    Client("livekit", "livekit-plugins-openai", "1.8.9", "http://127.0.0.1:{port}/v1"),
)}


class VenvBuildError(RuntimeError):
    """The venv could not be built (no network to PyPI, a pin gone, a timeout)."""


@dataclass(frozen=True)
class Built:
    python: Path
    built_now: bool
    seconds: float  # how long the build took (0 when reused)


def _stamp(client: Client) -> str:
    return f"python {sys.version_info[0]}.{sys.version_info[1]}\n" + \
        client.requirements.read_text()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # held until the with block ends
        yield


def _run(cmd: list[str], timeout_s: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise VenvBuildError(f"{' '.join(cmd[:4])} ... timed out after {timeout_s:g} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-3000:]
        raise VenvBuildError(f"{' '.join(cmd[:4])} ... exited with {done.returncode}:\n{tail}")


def ensure(client: Client, timeout_s: float = PIP_TIMEOUT_S) -> Built:
    """The client's venv, built unless its stamp matches; raises VenvBuildError."""
    stamp = client.venv / ".installed"
    wanted = _stamp(client)
    with _locked(VENV_ROOT / f".{client.name}.lock"):
        if stamp.is_file() and stamp.read_text() == wanted and client.python.exists():
            return Built(client.python, False, 0.0)
        started = time.monotonic()
        shutil.rmtree(client.venv, ignore_errors=True)  # never half-reuse a stale venv
        try:
            _run([sys.executable, "-m", "venv", str(client.venv)], 120)
            _run([str(client.python), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", "--no-input",
                  "-r", str(client.requirements)], timeout_s)
        except BaseException:
            shutil.rmtree(client.venv, ignore_errors=True)
            raise
        stamp.write_text(wanted)  # last: a build cut short leaves no stamp
        return Built(client.python, True, time.monotonic() - started)


def main(argv: list[str]) -> int:
    for name in argv or sorted(CLIENTS):
        built = ensure(CLIENTS[name])
        how = f"built in {built.seconds:.0f} s" if built.built_now else "up to date"
        print(f"{name}: {built.python} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
