"""Settings -> the agent's `session.update`, in both dialects: what each setting
becomes, checked against the openai SDK's event models and accepted by the offline
backend (which validates as strictly as the service)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from openai.types.beta.realtime.session_update_event import SessionUpdateEvent as BetaUpdate
from openai.types.realtime.session_update_event import SessionUpdateEvent as GAUpdate

from rtc_agent import config
from rtc_agent.offline.validation import apply_session_update, default_session
from rtc_agent.protocol import Dialect
from rtc_agent.realtime.dialect import session_update


def settings(*argv: str) -> Any:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_args(parser.parse_args(list(argv)), env={}).session


def both(*argv: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The GA and beta session.update for these flags, each valid for the SDK's model
    and accepted by the offline backend."""
    s = settings(*argv)
    ga, beta = session_update(Dialect.GA, s, []), session_update(Dialect.BETA, s, [])
    GAUpdate.model_validate(ga)
    BetaUpdate.model_validate(beta)
    apply_session_update(Dialect.GA, default_session("m"), ga["session"])
    apply_session_update(Dialect.BETA, default_session("m"), beta["session"])
    return ga["session"], beta["session"]


def test_semantic_vad_with_its_eagerness() -> None:
    ga, beta = both("--vad", "semantic", "--vad-eagerness", "low", "--no-barge-in")
    expected = {"type": "semantic_vad", "eagerness": "low", "create_response": True,
                "interrupt_response": False}
    assert ga["audio"]["input"]["turn_detection"] == expected
    assert beta["turn_detection"] == expected  # no threshold or silence: it has none


def test_server_vad_is_the_default() -> None:
    ga, _ = both()
    assert ga["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert ga["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert ga["audio"]["input"]["noise_reduction"] is None


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_noise_reduction(kind: str) -> None:
    ga, beta = both("--noise-reduction", kind)
    assert ga["audio"]["input"]["noise_reduction"] == {"type": kind}
    assert beta["input_audio_noise_reduction"] == {"type": kind}


def test_pass_through_settings_go_as_given(tmp_path: Any) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[session]\ninclude = ["item.input_audio_transcription.logprobs"]\n'
                 '[session.prompt]\nid = "pmpt_123"\nversion = "4"\n'
                 '[session.prompt.variables]\ncity = "Lyon"\n')
    ga, beta = both("--config", str(f), "--reasoning-effort", "low", "--truncation", "0.7",
                    "--tracing", '{"workflow_name": "calls"}')
    assert ga["prompt"] == {"id": "pmpt_123", "version": "4", "variables": {"city": "Lyon"}}
    assert ga["reasoning"] == {"effort": "low"}
    assert ga["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.7}
    assert ga["tracing"] == {"workflow_name": "calls"}
    assert ga["include"] == ["item.input_audio_transcription.logprobs"]
    # beta has tracing only: the rest would be refused as unknown there
    assert beta["tracing"] == {"workflow_name": "calls"}
    assert not {"prompt", "reasoning", "truncation", "include"} & set(beta)
    ga, _ = both("--truncation", "disabled", "--tracing", "auto")
    assert ga["truncation"] == "disabled" and ga["tracing"] == "auto"
    ga, beta = both()
    assert not {"prompt", "reasoning", "truncation", "tracing", "include"} & (set(ga) | set(beta))


@pytest.mark.parametrize(("name", "value", "why"), [
    ("TRUNCATION", "1.5", "retention ratio"),
    ("TRACING", "[1, 2]", "is a list, not a table"),
    ("TRACING", "{not json", "is not a table"),
    ("VAD", "magic", "one of server, semantic"),
    ("VAD_EAGERNESS", "eager", "one of low, medium, high, auto"),
    ("NOISE_REDUCTION", "loud", "one of off, near_field, far_field"),
])
def test_bad_session_settings_are_refused(name: str, value: str, why: str) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    with pytest.raises(config.ConfigError, match=why):
        config.from_args(parser.parse_args([]), env={f"RTC_AGENT_{name}": value})


def test_a_prompt_needs_its_id(tmp_path: Any) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[session.prompt]\nversion = "4"\n')
    with pytest.raises(config.ConfigError, match='needs an "id"'):
        settings("--config", str(f))
