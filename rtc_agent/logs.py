"""Logging set-up for every command, with secrets redacted at every level.

At DEBUG, websockets logs each handshake header, `Authorization: Bearer <key>`
included; exceptions and URLs can carry keys too (Azure's `api-key`, the
browser's `openai-insecure-api-key.` subprotocol, `?token=`). A filter on the
handlers rewrites every record before it is written, whoever logged it.
"""

from __future__ import annotations

import logging
import re
import sys

from rtc_agent import ConfigError

REDACTED = "[redacted]"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Libraries that say a lot at INFO (aioice: every candidate pair, 181 of a call's 209
# lines) or per request (aiohttp.access, httpx, httpx2 and mcp for MCP tools): WARNING and
# up unless DEBUG is asked.
NOISY_LOGGERS = ("aioice", "aiortc", "aiohttp", "websockets", "httpx", "httpx2", "httpcore",
                 "urllib3", "mcp")

_PATTERNS = [
    # Header lines and dict reprs: Authorization / api-key / OpenAI-... keys.
    re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?(?:bearer|basic)\s+)[^\s'\",}]+"),
    re.compile(r"(?i)((?:api-key|x-api-key|openai-api-key)['\"]?\s*[:=,]\s*['\"]?)[^\s'\",}&]+"),
    # Query parameters: ?api-key=..., &token=..., &key=...
    re.compile(r"(?i)([?&](?:api-key|api_key|key|token|access_token)=)[^&\s'\"]+"),
    # The browser-style subprotocol that carries a key.
    re.compile(r"(openai-insecure-api-key\.)[^\s,'\"]+"),
    # Bare OpenAI-style keys anywhere.
    re.compile(r"()\bsk-[A-Za-z0-9_\-]{8,}"),
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure(level: str = "INFO", process: str | None = None) -> None:
    """Log to stderr at `level`, with redaction on the handler (so every logger is covered).

    `process` names the process in every line (`[a/1]`): a node's workers share
    one stderr. The chatty libraries (NOISY_LOGGERS) say only warnings and errors
    unless `level` is DEBUG."""
    if level.upper() not in LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    tag = f"[{process}] " if process else ""
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {tag.replace('%', '%%')}%(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # A record that passes its own logger's level reaches the root's handler whatever
    # the root's level, so a library's loggers get the higher of WARNING and `level`;
    # at DEBUG they inherit the root's level again.
    library_level = max(logging.WARNING, root.level) if root.level > logging.DEBUG else (
        logging.NOTSET)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
