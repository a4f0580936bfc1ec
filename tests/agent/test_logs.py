"""Secrets never reach a log line, whoever logs them and at whatever level."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

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


async def test_websockets_debug_handshake_logs_carry_no_key(
        capfd: pytest.CaptureFixture[str]) -> None:
    """The real case: websockets at DEBUG logs the Authorization header of the handshake."""
    import asyncio
    import json

    from websockets.asyncio.server import ServerConnection, serve

    from rtc_agent import logs
    from rtc_agent.protocol import Dialect
    from rtc_agent.realtime.client import RealtimeClient
    from rtc_agent.realtime.service import RealtimeService

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {"id": "s"}}))
        await ws.wait_closed()

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("DEBUG")
    try:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            seen: list[str] = []
            client = RealtimeClient(
                RealtimeService("custom", f"ws://127.0.0.1:{port}/v1/realtime?api-key={KEY}",
                                Dialect.GA, {"Authorization": f"Bearer {AZURE_KEY}"}),
                on_event=lambda e: seen.append(e["type"]), on_connected=lambda again: None,
                on_disconnected=lambda reason: None)
            task = asyncio.create_task(client.run())
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.02)
            await client.close()
            task.cancel()
    finally:
        for handler_ in list(root.handlers):
            root.removeHandler(handler_)
        for handler_ in saved[0]:
            root.addHandler(handler_)
        root.setLevel(saved[1])
    err = capfd.readouterr().err
    assert seen == ["session.created"]
    assert "Authorization" in err, "websockets logged no handshake: the test proves nothing"
    assert KEY not in err and AZURE_KEY not in err
    assert REDACTED in err


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """logs.configure changes process-wide state: put it back."""
    from rtc_agent.logs import NOISY_LOGGERS

    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in NOISY_LOGGERS})
    yield
    for handler_ in list(root.handlers):
        root.removeHandler(handler_)
    for handler_ in saved[0]:
        root.addHandler(handler_)
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_chatty_libraries_log_warnings_only_unless_debug(
        capfd: pytest.CaptureFixture[str]) -> None:
    from rtc_agent import logs

    pair = logging.getLogger("aioice.ice")  # where aioice logs every candidate pair
    access = logging.getLogger("aiohttp.access")
    ours = logging.getLogger("rtc_agent.call")
    logs.configure("INFO")
    pair.info("check pair-info")
    access.info("access-info")
    pair.warning("pair-warning")
    ours.info("ours-info")
    err = capfd.readouterr().err
    assert "pair-info" not in err and "access-info" not in err
    assert "pair-warning" in err and "ours-info" in err
    logs.configure("ERROR")  # never more than asked for, from a library either
    pair.warning("pair-warning-2")
    logging.getLogger("websockets.client").warning("ws-warning")
    ours.error("ours-error")
    err = capfd.readouterr().err
    assert "pair-warning-2" not in err and "ws-warning" not in err and "ours-error" in err
    logs.configure("debug")
    pair.debug("pair-debug")
    logging.getLogger("aiortc.rtcpeerconnection").info("pc-info")
    err = capfd.readouterr().err
    assert "pair-debug" in err and "pc-info" in err


def test_an_unknown_level_is_a_config_error() -> None:
    from rtc_agent import ConfigError, logs

    with pytest.raises(ConfigError, match="log level 'LOUD' is not one of DEBUG"):
        logs.configure("LOUD")
