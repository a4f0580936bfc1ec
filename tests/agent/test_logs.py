"""Secrets never reach a log line, whoever logs them and at whatever level."""

from __future__ import annotations

import io
import logging

import pytest

from rtc_agent.logs import REDACTED, RedactingFilter, redact

KEY = "sk-proj-abcdefghijklmnop1234"
AZURE_KEY = "0123456789abcdef0123456789abcdef"  # no telltale prefix
SHAPES = [
    "> Authorization: Bearer {}",  # websockets' DEBUG handshake log
    "headers={{'Authorization': 'Bearer {}', 'X': '1'}}",
    "> api-key: {}",
    "wss://example.openai.azure.com/openai/realtime?api-version=2025&api-key={}",
    "GET /offer?token={} HTTP/1.1",
    "subprotocols: realtime, openai-insecure-api-key.{}",
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("key", [KEY, AZURE_KEY])
def test_secret_shapes_are_redacted(shape: str, key: str) -> None:
    out = redact(shape.format(key))
    assert key not in out and REDACTED in out, out


def test_a_bare_openai_key_is_redacted() -> None:
    assert KEY not in redact(f"the key {KEY} was refused")


def test_the_filter_covers_other_libraries_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("websockets.client.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.debug("> %s: %s", "Authorization", f"Bearer {KEY}")
        try:
            raise RuntimeError(f"refused with {KEY}")
        except RuntimeError:
            logger.exception("connect failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert KEY not in text
    assert text.count(REDACTED) >= 2 and "connect failed" in text
