"""Backend selection and settings precedence."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rtc_agent import config
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
