"""Configuration mistakes end `rtc-agent` with one line naming them and exit status 2.

The subprocess tests run the real command (what a user sees, tracebacks included
if any escaped); the in-process ones go through `cli.main` for the many shapes a
config file or a variable can get wrong, which is the same code without the cost
of starting Python each time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_agent import ConfigError, cli
from rtc_agent.cluster.supervisor import NodeSupervisor
from rtc_agent.config import ServeConfig, check_port

ROOT = Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    """No RTC_AGENT_* setting nor cloud key of the machine running the tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RTC_AGENT_") and not k.endswith("_API_KEY")
           and not k.startswith("AZURE_OPENAI")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rtc_agent(*argv: str, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtc_agent.cli", *argv], cwd=cwd,
                          env={**_clean_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (and nothing started: stdout is empty)."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == "", proc.stdout
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# ------------------------------------------------------------ the real command


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    f = tmp_path / "rtc-agent.toml"
    f.write_text('[session]\nvoise = "marin"\n')
    line = one_line(rtc_agent("serve", "--config", str(f)))
    assert line == (f'rtc-agent: config file {f}: unknown key "voise" in [session] '
                    '(did you mean "voice"?)')


def test_file_without_a_table_of_settings(tmp_path: Path) -> None:
    f = tmp_path / "agent.json"
    f.write_text('["voice", "marin"]')
    line = one_line(rtc_agent("serve", "--config", str(f)))
    assert line == f"rtc-agent: config file {f}: expected a table of settings, found a list"


def test_value_of_the_wrong_type_in_the_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.json"
    f.write_text('{"serve": {"max_calls": "ten"}}')
    line = one_line(rtc_agent("serve", "--config", str(f)))
    assert line == (f'rtc-agent: config file {f}: [serve] max_calls = "ten" is text, '
                    "not a whole number")


def test_missing_file(tmp_path: Path) -> None:
    line = one_line(rtc_agent("serve", "--config", str(tmp_path / "nowhere.toml")))
    assert line == f"rtc-agent: config file {tmp_path / 'nowhere.toml'}: not found"


def test_non_numeric_variable() -> None:
    line = one_line(rtc_agent("serve", env={"RTC_AGENT_MAX_CALLS": "ten"}))
    assert line == 'rtc-agent: RTC_AGENT_MAX_CALLS="ten" is not a whole number'


@pytest.mark.parametrize("workers", ["1", "2"])
def test_busy_port(busy_port: int, workers: str) -> None:
    line = one_line(rtc_agent("serve", "--port", str(busy_port), "--workers", workers))
    assert line == f"rtc-agent: port {busy_port} on 127.0.0.1 is in use (--port)"


def test_busy_port_of_the_realtime_server(busy_port: int) -> None:
    line = one_line(rtc_agent("realtime-server", "--port", str(busy_port), "--tts", "espeak"))
    assert line == f"rtc-agent: port {busy_port} on 127.0.0.1 is in use (--port)"


def test_a_bad_flag_is_one_line_too() -> None:
    proc = rtc_agent("serve", "--vad-threshold", "loud")
    line = one_line(proc)
    assert line == ('rtc-agent serve: argument --vad-threshold: "loud" is not a number '
                    "(see rtc-agent serve --help)")


# ------------------------------------------------------------ the many shapes, in process


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RTC_AGENT_"):
            monkeypatch.delenv(name)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """cli.main's exit status and its one stderr line, for `serve argv`."""
    assert cli.main(["serve", *argv]) == 2
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert len(lines) == 1 and out.out == "", out
    assert lines[0].startswith("rtc-agent: ")
    return lines[0].removeprefix("rtc-agent: ")


FILES = [
    ("a.toml", '[serve]\nvoice = "marin"\n', '"voice" belongs in [session], not in [serve]'),
    ("a.toml", 'voise = "marin"\n', 'unknown key "voise" (did you mean "voice"?)'),
    ("a.toml", "[sesion]\nvoice = 1\n", 'unknown key "sesion" (did you mean "session"?)'),
    ("a.toml", "[serve]\nflux_capacitor = 1\n",
     'unknown key "flux_capacitor" in [serve] (`rtc-agent serve --help` names every key)'),
    ("a.toml", 'session = "marin"\n', '"session" must be a table ([session]), not text'),
    ("a.toml", "", "holds no settings (expected keys in a [session] or [serve] table)"),
    ("a.toml", "[session]\n", "holds no settings"),
    ("a.toml", "[session\nvoice=1", "not valid TOML: "),
    ("a.json", '{"voice": "a", "voice": "b"}', 'not valid JSON: key "voice" appears twice'),
    ("a.json", '{"voice": "a", "session": {"voice": "b"}}',
     '"voice" is given twice (voice and [session] voice)'),
    ("a.json", '{"session": {"vad_silence_ms": 7.5}}',
     "[session] vad_silence_ms = 7.5 is a decimal number, not a whole number"),
    ("a.json", '{"session": {"vad_silence_ms": true}}',
     "[session] vad_silence_ms = true is true/false, not a whole number"),
    ("a.json", '{"session": {"vad_threshold": 1.5}}',
     "[session] vad_threshold = 1.5 must be between 0 and 1"),
    ("a.json", '{"session": {"no_vad": "yes"}}',
     '[session] no_vad = "yes" is text, not true or false'),
    ("a.json", '{"session": {"tool_choice": "sometimes"}}',
     '[session] tool_choice = "sometimes" is not one of auto, none, required'),
    ("a.json", '{"session": {"max_output_tokens": "lots"}}',
     '[session] max_output_tokens = "lots" is text, not a whole number or "inf"'),
    ("a.json", '{"serve": {"ice_servers": "stun:x"}}',
     '[serve] ice_servers = "stun:x" is text, not a list of text'),
    ("a.json", '{"serve": {"trusted_proxies": ["10.0.0.0/8", 3]}}',
     "holds a whole number, not only text"),
    ("a.json", '{"serve": {"port": 70000}}', "[serve] port = 70000 is not a port (0-65535)"),
    ("a.json", '{"serve": {"temperature": null}}', '"temperature" belongs in [session]'),
    ("a.json", '{"session": {"temperature": null}}',
     "[session] temperature = null is null, not a number"),
    ("a.json", '{"session": {"no_barge_in": true, "interrupt_response": true}}',
     "give no_barge_in or interrupt_response, not both"),
    ("a.json", "[1, 2", "not valid JSON: "),
    ("a.json", "7", "expected a table of settings, found a whole number"),
    ("a.yaml", "voice: marin\n", "expected a .toml or .json file"),
]


@pytest.mark.parametrize(("name", "text", "expected"), FILES)
@pytest.mark.usefixtures("no_settings_env")
def test_config_file_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              name: str, text: str, expected: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    line = refused(capsys, "--config", str(f))
    assert line.startswith(f"config file {f}: ") and expected in line, line


@pytest.mark.usefixtures("no_settings_env")
def test_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    assert refused(capsys, "--config", str(folder)) == (
        f"config file {folder}: is a directory, not a file")
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"voice = \"\xff\xfe\"\n")
    assert refused(capsys, "--config", str(binary)) == f"config file {binary}: not UTF-8 text"
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    assert refused(capsys, "--config", str(big)) == f"config file {big}: larger than 1 MiB"


VARIABLES = [
    ("RTC_AGENT_PORT", "80 80", 'RTC_AGENT_PORT="80 80" is not a whole number'),
    ("RTC_AGENT_PORT", "99999", 'RTC_AGENT_PORT="99999" is not a port (0-65535)'),
    ("RTC_AGENT_MAX_CALLS", "-1", 'RTC_AGENT_MAX_CALLS="-1" must be >= 0'),
    ("RTC_AGENT_VAD_THRESHOLD", "high", 'RTC_AGENT_VAD_THRESHOLD="high" is not a number'),
    ("RTC_AGENT_MAX_CALL_S", "nan", 'RTC_AGENT_MAX_CALL_S="nan" is not a finite number'),
    ("RTC_AGENT_HTTPS", "maybe",
     'RTC_AGENT_HTTPS="maybe" is not true or false (1/0, true/false, yes/no, on/off)'),
    ("RTC_AGENT_TOOL_CHOICE", "sometimes",
     'RTC_AGENT_TOOL_CHOICE="sometimes" is not one of auto, none, required'),
    ("RTC_AGENT_TTS", "festival", 'RTC_AGENT_TTS="festival" is not one of piper, espeak'),
    ("RTC_AGENT_LOG_LEVEL", "LOUD", 'RTC_AGENT_LOG_LEVEL="LOUD" is not one of DEBUG'),
    ("RTC_AGENT_WORKERS", "many", 'RTC_AGENT_WORKERS="many" is not a whole number or "auto"'),
    ("RTC_AGENT_WORKERS", "0", 'RTC_AGENT_WORKERS="0" must be >= 1 or "auto"'),
    ("RTC_AGENT_UDP_PORTS", "40000", 'RTC_AGENT_UDP_PORTS="40000" is not a port range'),
    ("RTC_AGENT_TRUSTED_PROXIES", "10.0.0.0/8,proxy.example",
     'RTC_AGENT_TRUSTED_PROXIES="10.0.0.0/8,proxy.example" has "proxy.example", which is '
     "not an address or network"),
    ("RTC_AGENT_ICE_SERVERS", "stun.l.google.com:19302",
     'RTC_AGENT_ICE_SERVERS="stun.l.google.com:19302" has "stun.l.google.com:19302", which '
     "is not a stun/stuns/turn/turns URL"),
    ("RTC_AGENT_REALTIME_URL", "https://api.openai.com/v1/realtime?api-key=sk-abc",
     'RTC_AGENT_REALTIME_URL="https://api.openai.com/v1/realtime" is not a ws:// or wss:// '
     "URL"),
    ("RTC_AGENT_PUBLIC_ADDRESS", "my.vm", 'RTC_AGENT_PUBLIC_ADDRESS="my.vm" is not an IP'),
    ("RTC_AGENT_CONFIG", "/nowhere/agent.toml", "config file /nowhere/agent.toml: not found"),
    # A hostile value cannot add a line to the error, nor show a secret.
    ("RTC_AGENT_PORT", "1\n2\rTraceback", r'RTC_AGENT_PORT="1\n2\rTraceback" is not a whole'),
]


@pytest.mark.parametrize(("name", "value", "expected"), VARIABLES)
@pytest.mark.usefixtures("no_settings_env")
def test_variable_mistakes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    line = refused(capsys)
    assert line.startswith(expected), line
    assert "sk-abc" not in line


@pytest.mark.usefixtures("no_settings_env")
def test_settings_that_need_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(capsys, "--turn-url", "turn:t.example:3478") == (
        'TURN URL "turn:t.example:3478" needs --turn-secret (coturn\'s static-auth-secret)')
    assert refused(capsys, "--cert", str(tmp_path / "c.pem")) == "--cert and --key go together"
    assert refused(capsys, "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")
                   ) == f'--cert "{tmp_path / "c.pem"}": no such file'
    monkeypatch.setenv("RTC_AGENT_REDIS_URL", "redis://:hunter2@10.0.0.9/0")
    line = refused(capsys, "--cluster-secret", "s", "--internal-host", "0.0.0.0")
    assert line.startswith("--internal-host must be an address other nodes can reach")
    line = refused(capsys)
    assert line == "RTC_AGENT_REDIS_URL needs --cluster-secret (the same on every node)"
    monkeypatch.delenv("RTC_AGENT_REDIS_URL")
    f = tmp_path / "a.toml"
    f.write_text('[serve]\nudp_ports = "40000-40001"\nworkers = 4\n')
    line = refused(capsys, "--config", str(f))
    assert line == f"udp_ports in config file {f}: 2 ports cannot be split between 4 workers"


@pytest.mark.usefixtures("no_settings_env")
def test_a_secret_of_the_wrong_type_is_not_shown(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.json"
    f.write_text('{"serve": {"token": 123456789}}')
    line = refused(capsys, "--config", str(f))
    assert line.endswith("[serve] token = (hidden) is a whole number, not text")
    assert "123456789" not in line


@pytest.mark.usefixtures("no_settings_env")
def test_unusable_paths_are_config_errors(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = refused(capsys, "--record-dir", str(blocker / "rec"), "--port", "0")
    assert line.startswith(f"--record-dir {blocker / 'rec'}: cannot be created (")
    line = refused(capsys, "--call-log", str(tmp_path / "no" / "calls.jsonl"), "--port", "0")
    assert line == (f"--call-log {tmp_path / 'no' / 'calls.jsonl'}: cannot be opened "
                    "(No such file or directory)")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    line = refused(capsys, "--cert", str(cert), "--key", str(key), "--port", "0")
    assert line.startswith(f"--cert {cert} / --key {key}: ")


def test_check_port(busy_port: int) -> None:
    with pytest.raises(ConfigError, match=f"^port {busy_port} on 127.0.0.1 is in use"):
        check_port("127.0.0.1", busy_port)
    with pytest.raises(ConfigError, match="is not an address of this machine"):
        check_port("198.51.100.254", 8080)  # TEST-NET-2: nobody's
    check_port("127.0.0.1", 0)  # any free port: nothing to check


def test_the_supervisor_names_a_port_taken_meanwhile(busy_port: int) -> None:
    """Between serve's check and the supervisor's bind another process may take the port:
    the supervisor says so the same way, and leaves nothing behind."""
    supervisor = NodeSupervisor(ServeConfig(port=busy_port, workers=2, node_id="n"))
    with pytest.raises(ConfigError) as refusal:
        asyncio.run(supervisor.run())
    assert str(refusal.value) == f"port {busy_port} on 127.0.0.1 is in use (--port)"
    assert not os.path.exists(supervisor._metrics_dir)
