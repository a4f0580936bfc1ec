"""The HTTP server's limits as flags and RTC_AGENT_* environment, with their defaults."""

from __future__ import annotations

import argparse

import pytest

from rtc_agent import config


def parse(*argv: str) -> config.ServeConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_args(parser.parse_args(list(argv)))


def test_defaults() -> None:
    cfg = parse()
    assert cfg.turn_ttl_s == 600
    assert (cfg.header_timeout_s, cfg.body_timeout_s) == (10.0, 10.0)
    assert (cfg.max_connections, cfg.max_connections_per_address) == (512, 32)
    assert (cfg.offers_per_minute, cfg.max_pending_per_address) == (10, 4)
    assert cfg.limit_exempt == ["127.0.0.0/8", "::1/128"]
    assert cfg.hsts_max_age_s == 15_552_000


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse("--turn-ttl-s", "120", "--header-timeout-s", "5", "--body-timeout-s", "3",
                "--max-connections", "100", "--max-connections-per-address", "8",
                "--offers-per-minute", "0", "--max-pending-per-address", "2",
                "--limit-exempt", "10.0.0.0/8", "--limit-exempt", "fd00::/8",
                "--hsts-max-age-s", "0")
    assert (cfg.turn_ttl_s, cfg.header_timeout_s, cfg.body_timeout_s) == (120, 5.0, 3.0)
    assert (cfg.max_connections, cfg.max_connections_per_address) == (100, 8)
    assert (cfg.offers_per_minute, cfg.max_pending_per_address) == (0, 2)
    assert cfg.limit_exempt == ["10.0.0.0/8", "fd00::/8"] and cfg.hsts_max_age_s == 0
    for name, value in [("TURN_TTL_S", "90"), ("HEADER_TIMEOUT_S", "2.5"),
                        ("MAX_CONNECTIONS_PER_ADDRESS", "4"), ("OFFERS_PER_MINUTE", "3"),
                        ("LIMIT_EXEMPT", "none")]:
        monkeypatch.setenv(f"RTC_AGENT_{name}", value)
    cfg = parse()
    assert (cfg.turn_ttl_s, cfg.header_timeout_s) == (90, 2.5)
    assert (cfg.max_connections_per_address, cfg.offers_per_minute) == (4, 3)
    assert cfg.limit_exempt == []
    assert parse("--turn-ttl-s", "30").turn_ttl_s == 30  # the flag beats the environment


@pytest.mark.parametrize("argv", [
    ["--turn-ttl-s", "0"], ["--header-timeout-s", "0"], ["--body-timeout-s", "-1"],
    ["--max-connections", "-1"], ["--offers-per-minute", "-5"],
    ["--limit-exempt", "not-a-network"],
])
def test_bad_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        parse(*argv)
