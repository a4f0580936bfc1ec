"""Backend selection and settings precedence."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from rtc_agent import ConfigError, config
from rtc_agent.protocol import Dialect
from rtc_agent.realtime.service import service_from_settings


def parse(*argv: str) -> config.ServeConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_args(parser.parse_args(list(argv)))


def test_no_key_means_offline() -> None:
    assert service_from_settings({}) is None


def test_openai_ga_has_no_beta_header() -> None:
    b = service_from_settings({"OPENAI_API_KEY": "sk-x"})
    assert b is not None and b.kind == "openai" and b.dialect is Dialect.GA
    assert b.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert b.headers == {"Authorization": "Bearer sk-x"}
    assert "sk-x" not in b.describe() and "sk-x" not in repr(b)


def test_azure_ga_and_preview() -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
           "AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_DEPLOYMENT": "dep"}
    ga = service_from_settings(env)
    assert ga is not None and ga.kind == "azure" and ga.dialect is Dialect.GA
    assert ga.url == "wss://res.openai.azure.com/openai/v1/realtime?model=dep"
    assert "api-version" not in ga.url and ga.headers == {"api-key": "k"}
    preview = service_from_settings({**env, "AZURE_OPENAI_API_VERSION": "2025-04-01-preview"})
    assert preview is not None and preview.dialect is Dialect.BETA
    assert preview.url == ("wss://res.openai.azure.com/openai/realtime?"
                           "api-version=2025-04-01-preview&deployment=dep")


def test_custom_url_wins() -> None:
    b = service_from_settings({"OPENAI_API_KEY": "sk"}, realtime_url="ws://127.0.0.1:9/v1/realtime",
                              beta=True)
    assert b is not None and b.kind == "custom" and b.dialect is Dialect.BETA
    assert b.headers["OpenAI-Beta"] == "realtime=v1"


def test_flags_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse()
    assert (cfg.host, cfg.port, cfg.max_calls, cfg.ice_servers) == ("127.0.0.1", 8080, 20, [])
    td = cfg.session.turn_detection
    assert td is not None and (td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (
        0.5, 300, 500)
    assert cfg.session.transcription_model
    f = tmp_path / "agent.toml"
    f.write_text('[session]\nvoice = "marin"\nvad_silence_ms = 700\ninstructions = "Be terse."\n')
    monkeypatch.setenv("RTC_AGENT_VOICE", "cedar")
    monkeypatch.setenv("RTC_AGENT_MAX_CALLS", "7")
    cfg = parse("--config", str(f), "--no-transcription", "--ice-address", "127.0.0.1")
    assert cfg.session.voice == "cedar"  # environment beats the file
    assert cfg.session.instructions == "Be terse."
    assert cfg.session.turn_detection is not None
    assert cfg.session.turn_detection.silence_duration_ms == 700
    assert cfg.session.transcription_model is None
    assert cfg.max_calls == 7 and cfg.ice_addresses == ["127.0.0.1"]
    assert parse("--voice", "ash").session.voice == "ash"
    td = parse("--no-barge-in").session.turn_detection
    assert td is not None and td.interrupt_response is False
    assert parse("--no-vad").session.turn_detection is None


# ------------------------------------------------------------ sources and the summary

SECRETS = {"token": "tok-3f9a1c", "turn_secret": "turn-7b2e4d", "cluster_secret": "clu-91c0aa",
           "metrics_token": "met-5d6e7f"}


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RTC_AGENT_"):
            monkeypatch.delenv(name)


def test_each_value_keeps_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    f = tmp_path / "agent.toml"
    f.write_text('voice = "marin"\n[session]\nvad_silence_ms = 700\n[serve]\nmax_calls = 3\n'
                 'ice_servers = ["stun:stun.example:3478"]\n')
    monkeypatch.setenv("RTC_AGENT_CONFIG", str(f))
    monkeypatch.setenv("RTC_AGENT_MAX_CALLS", "7")
    monkeypatch.setenv("RTC_AGENT_TOOL_CHOICE", "NONE")
    monkeypatch.setenv("RTC_AGENT_NO_VAD", "off")
    cfg = parse("--voice", "ash")
    assert cfg.config_file == f and cfg.sources["config"] == config.Source(
        "env", "RTC_AGENT_CONFIG")
    assert cfg.session.voice == "ash" and cfg.sources["voice"] == config.Source("flag", "--voice")
    assert cfg.max_calls == 7 and str(cfg.sources["max_calls"]) == "RTC_AGENT_MAX_CALLS"
    assert cfg.session.tool_choice == "none"
    td = cfg.session.turn_detection
    assert td is not None and td.silence_duration_ms == 700  # "off" is false: VAD stays on
    assert cfg.sources["vad_silence_ms"] == config.Source("file", str(f))
    assert cfg.ice_servers == ["stun:stun.example:3478"]
    assert "port" not in cfg.sources and cfg.port == 8080  # the default
    assert cfg.warnings == []
    monkeypatch.setenv("RTC_AGENT_VOISE", "x")
    assert parse().warnings == [
        "RTC_AGENT_VOISE is not a setting of serve (did you mean RTC_AGENT_VOICE?): ignored"]


def test_the_file_holds_every_setting_but_the_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown-key detection comes from the table: each setting of a table is a key."""
    clear_settings_env(monkeypatch)
    assert set(config.FILE_KEYS) == {s.name for s in config.SETTINGS if s.name != "config"}
    f = tmp_path / "agent.json"
    f.write_text(json.dumps({"serve": {"port": 0, "workers": 2, "limit_exempt": ["none"],
                                       "record_max_s": 60, "https": True},
                             "session": {"interrupt_response": False,
                                         "transcription_model": "gpt-4o-transcribe",
                                         "max_output_tokens": 300}}))
    cfg = parse("--config", str(f))
    assert (cfg.port, cfg.workers, cfg.limit_exempt, cfg.record_max_s, cfg.https) == (
        0, 2, [], 60.0, True)
    td = cfg.session.turn_detection
    assert td is not None and td.interrupt_response is False
    assert cfg.session.transcription_model == "gpt-4o-transcribe"
    assert cfg.session.max_output_tokens == 300


def test_describe_names_sources_and_never_a_secret(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    f = tmp_path / "agent.toml"
    f.write_text('[session]\nvoice = "marin"\n')
    monkeypatch.setenv("RTC_AGENT_MAX_CALLS", "7")
    monkeypatch.setenv("RTC_AGENT_TURN_SECRET", SECRETS["turn_secret"])
    cfg = parse("--config", str(f), "--token", SECRETS["token"], "--cluster-secret",
                SECRETS["cluster_secret"], "--metrics-token", SECRETS["metrics_token"],
                "--redis-url", "redis://:redis-pw-0c1d@10.0.0.9:6379/0",
                "--internal-host", "10.0.0.5", "--turn-url", "turn:turn.example:3478",
                "--workers", "2", "--instructions", "Speak like a pirate.")
    env = {"OPENAI_API_KEY": "sk-proj-0123456789abcdef"}
    lines = config.describe(cfg, config.Backend.from_url(
        "openai", "wss://api.openai.com/v1/realtime?model=gpt-realtime"), env)
    text = "\n".join(lines)
    for secret in [*SECRETS.values(), "redis-pw-0c1d", "sk-proj-0123456789abcdef"]:
        assert secret not in text
    by_label = {line[2:17].strip(): line for line in lines[1:] if line[2:17].strip()}
    assert by_label["config file"].endswith(f"{f}  [--config]")
    assert by_label["environment"].endswith("RTC_AGENT_MAX_CALLS, RTC_AGENT_TURN_SECRET")
    assert "openai wss://api.openai.com/v1/realtime, key OPENAI_API_KEY set" in by_label[
        "service"]
    assert by_label["model"].endswith("gpt-realtime")
    assert by_label["voice"].endswith(f"marin  [{f}]")
    assert '"Speak like a pirate." (20 characters)  [--instructions]' in by_label["instructions"]
    assert by_label["calls"].endswith("[RTC_AGENT_MAX_CALLS]")
    assert "token set, metrics token set" in by_label["access"]
    assert "secret set" in by_label["ICE"] and "RTC_AGENT_TURN_SECRET" in by_label["ICE"]
    assert "cluster on redis://10.0.0.9:6379/0, secret set" in by_label["workers"]
    assert "2, node " in by_label["workers"]


def test_describe_says_what_the_offline_backend_ignores(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    offline = config.Backend("offline")
    lines = config.describe(parse("--voice", "cedar", "--model", "gpt-x"), offline, {})
    text = "\n".join(lines)
    assert "cedar (ignored by the offline backend)  [--voice]" in text
    assert "none: the offline backend ignores --model" in text
    plain = "\n".join(config.describe(parse(), offline, {}))
    assert "ignored" not in plain  # only what was asked for and will not happen
    assert "no RTC_AGENT_* variables" in plain and "config file     none" in plain


OFFLINE_IGNORES = {"--voice", "--instructions", "--temperature", "--max-output-tokens",
                   "--model", "--reasoning-effort"}


def test_every_serve_flag_has_help_naming_its_variable() -> None:
    from rtc_agent.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    by_flag = {s.flag: s for s in config.SETTINGS if s.flag}
    seen = set()
    for action in serve._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        seen.add(flag)
        assert action.help and action.help != argparse.SUPPRESS, flag
        setting = by_flag[flag]
        assert setting.env and f"(env {setting.env}" in action.help, flag
        if setting.table in config.TABLES:
            assert f"[{setting.table}] {setting.name} in --config" in action.help, flag
        assert ("ignored by the offline backend" in action.help) == (flag in OFFLINE_IGNORES), (
            flag)
    assert seen == set(by_flag)
    assert "(env RTC_AGENT_MAX_CALLS;" in " ".join(serve.format_help().split())


def test_pricing_from_a_file_table_or_text(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    f = tmp_path / "agent.toml"
    f.write_text("[serve.pricing]\ninput_audio = 32\noutput_audio = 64.5\ncached = 0.4\n")
    cfg = parse("--config", str(f))
    assert cfg.pricing == {"input_audio": 32.0, "output_audio": 64.5, "cached": 0.4}
    assert "input_audio $32, output_audio $64.5, cached $0.4" in "\n".join(
        config.describe(cfg, config.Backend.from_url("offline", "ws://x"), {}))
    monkeypatch.setenv("RTC_AGENT_PRICING", "output_text=16, input_text=4")
    assert parse().pricing == {"output_text": 16.0, "input_text": 4.0}
    for bad, why in (("[serve.pricing]\nvideo = 1\n", 'names "video"'),
                     ("[serve.pricing]\ninput_text = -1\n", "not a price of 0 or more"),
                     ("[serve.pricing]\ninput_text = \"cheap\"\n", "not a price"),
                     ("[serve]\npricing = 3\n", "not prices per million tokens")):
        f.write_text(bad)
        with pytest.raises(ConfigError, match=why):
            parse("--config", str(f))


def test_the_configuration_reference_is_current() -> None:
    """docs/configuration.md is generated from SETTINGS: every setting, with its flag,
    variable, file key and default, and who honours it."""
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == config.reference(), (
        "regenerate: python -m rtc_agent.config > docs/configuration.md")
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| ")][1:]
    named = {row.split("|")[1].strip() for row in rows}
    assert named == {s.name for s in config.SETTINGS if s.table != ""}
    for row in rows:  # the pass-through settings say which dialect carries them
        if row.startswith(("| prompt ", "| include ", "| truncation ")):
            assert "not sent in the beta dialect" in row, row


def test_the_example_config_and_the_readme_example_are_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    root = Path(__file__).parents[2]
    cfg = parse("--config", str(root / "agent.example.toml"))
    assert cfg.session.voice == "marin" and cfg.max_calls == 50
    assert cfg.pricing["output_audio"] == 64.0 and cfg.resume_window_s == 30
    readme = (root / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "agent.toml").write_text(block)
    assert parse("--config", str(tmp_path / "agent.toml")).max_calls == 50
