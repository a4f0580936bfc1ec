"""Settings of `rtc-agent serve`, from flags, environment and a config file.

Every setting is declared once, in `SETTINGS`: its flag, its environment
variable (`RTC_AGENT_*`), its key in a TOML or JSON config file (`--config`), its
type and its checks. The flags and their help, the reading of each source, the
refusal of unknown keys and the start-up summary (`describe`) all come from that
table, so they cannot drift apart. Precedence: flag > environment > config file >
default, and the source of every value is kept (`ServeConfig.sources`).

Nothing that does not fit passes quietly: a value of the wrong type, an unknown
key, a file that cannot be read raise `ConfigError` with one line naming the
flag, variable or key and the value, which `rtc-agent` prints before exiting with
status 2.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import ipaddress
import json
import math
import os
import secrets
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from rtc_agent import ConfigError
from rtc_agent.ice import parse_port_range
from rtc_agent.protocol import TOKEN_KINDS
from rtc_agent.realtime.settings import EAGERNESS, NOISE_REDUCTION, SessionSettings, TurnDetection

__all__ = ["SETTINGS", "Backend", "ConfigError", "ServeConfig", "Setting", "Source",
           "add_arguments", "check_port", "describe", "from_args", "listen_error"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB_DIR = PROJECT_ROOT / "web"
DEFAULT_SEARCH_DIR = PROJECT_ROOT / "docs"
DEFAULT_LIMIT_EXEMPT = ("127.0.0.0/8", "::1/128")
ENV_PREFIX = "RTC_AGENT_"
TABLES = ("session", "serve")  # a config file's tables; keys may also sit at its top
MAX_FILE_BYTES = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: "flag", "env", "file" or "default", and the
    flag, variable or file by name."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.name or self.kind


DEFAULT = Source("default")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_calls: int = 20
    ice_servers: list[str] = field(default_factory=list)
    ice_addresses: list[str] = field(default_factory=list)
    token: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    realtime_url: str | None = None
    realtime_beta: bool = False
    model: str | None = None
    session: SessionSettings = field(default_factory=SessionSettings)
    search_dir: Path = DEFAULT_SEARCH_DIR
    tool_timeout_s: float = 10.0
    mcp_servers: list[str] = field(default_factory=list)  # streamable HTTP URLs
    web_dir: Path = DEFAULT_WEB_DIR
    https: bool = False
    cert: Path | None = None
    key: Path | None = None
    cert_dir: Path = Path("certs")
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    tts: str = "piper"
    offline_args: list[str] = field(default_factory=list)
    connect_timeout_s: float = 30.0
    max_call_s: float = 0.0  # a call's longest life (0: no limit); ends with max_duration
    resume_window_s: float = 30.0  # how long a call whose path died waits for a resume
    idle_timeout_s: float = 0.0  # caller silence before the idle prompt (0: never)
    idle_prompt: str = "Are you still there?"
    goodbye: str = "Thank you for calling. Goodbye!"
    session_renew_s: float = 3300.0  # replace the Realtime session before the service's cap
    tool_ack_ms: int = 1500  # a tool running longer gets a spoken acknowledgement (0: none)
    # US dollars per million tokens by kind, for an estimated cost per call (none: no cost)
    pricing: dict[str, float] = field(default_factory=dict)
    decode_on_loop: bool = True
    ptime_ms: int = 20  # the agent's audio packets: 20 ms, or 10 ms (less delay, more packets)
    dtx: bool = False  # send (almost) nothing while the agent is silent, as Opus DTX does
    # TURN credentials live this long; coturn checks expiry only when a relay is
    # allocated, so a call outlives them, but a leaked pair soon stops working.
    turn_ttl_s: int = 600
    # Abuse limits of the HTTP server (docs/deployment.md, "Limits"); 0 turns one off.
    header_timeout_s: float = 10.0  # TLS handshake + request head; also idle keep-alive
    body_timeout_s: float = 10.0  # the whole body of an offer
    max_connections: int = 512
    max_connections_per_address: int = 32
    offers_per_minute: int = 10  # per address
    max_pending_per_address: int = 4  # calls not yet connected, per address
    # Per-address limits skip these networks: loopback is the operator's own tools
    # or a reverse proxy that carries every caller (which must do its own limiting).
    limit_exempt: list[str] = field(default_factory=lambda: list(DEFAULT_LIMIT_EXEMPT))
    # Reverse proxies whose X-Forwarded-Proto/-Host/-For are believed (none by default):
    # the client's scheme, host and address then come from those headers.
    trusted_proxies: list[str] = field(default_factory=list)
    hsts_max_age_s: int = 15_552_000  # 180 days; sent only over HTTPS
    # Scale-out (docs/deployment.md, "Many workers, many nodes").
    workers: int = 1  # worker processes of this node; from_args resolves "auto"
    node_id: str = ""  # from_args picks "<hostname>-<random>" when not given
    redis_url: str | None = None
    cluster_secret: str | None = None  # authenticates forwarding between workers
    internal_host: str = "127.0.0.1"  # where workers take forwarded requests
    internal_port: int = 0  # worker i listens on internal_port + i (0: any free port)
    public_address: str | None = None  # announced in ICE instead of the local address
    udp_ports: tuple[int, int] | None = None  # media ports, split between the workers
    drain_timeout_s: float = 600.0
    # Observability (docs/observability.md).
    metrics_token: str | None = None  # /metrics needs it when set (open otherwise)
    call_log: Path | None = None  # one JSON line per ended call
    metrics: bool = True  # off only to measure what metrics cost (bench/)
    record_dir: Path | None = None  # opt-in call recordings
    record_max_s: float = 3600.0
    log_level: str = "INFO"
    # Where the values came from (setting name -> source; absent: the default), the
    # config file read, and what was noticed but not fatal (unknown RTC_AGENT_* names).
    config_file: Path | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------ value kinds


class _Invalid(Exception):
    """A value that does not fit; the text says why ("is not a whole number")."""


def _type_name(value: object) -> str:
    """What a config file's value is, in its author's words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    return "a date or time"  # TOML's remaining scalars


def _quote(text: str, limit: int = 80) -> str:
    """`text` in double quotes, shortened, every unprintable character escaped: a hostile
    value cannot add a line to the one-line error or hide its own end."""
    if len(text) > limit:
        text = text[:limit] + "…"
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return '"' + "".join(out) + '"'


def _no_nul(text: str) -> str:
    """No setting has a use for NUL, and the OS refuses it in paths and names."""
    if "\0" in text:
        raise _Invalid("holds a NUL character")
    return text


class Kind:
    """How a setting's value is read: from text (a flag, a variable) and from a config
    file, whose TOML/JSON value already has a type that must be the right one."""

    what = "text"

    def text(self, raw: str) -> Any:
        return _no_nul(raw)

    def file(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        raise self.mismatch(value)

    def mismatch(self, value: Any) -> _Invalid:
        return _Invalid(f"is {_type_name(value)}, not {self.what}")

    def argtype(self, raw: str) -> Any:
        """For argparse: the same reading, its complaint in argparse's terms."""
        try:
            return self.text(raw)
        except _Invalid as exc:
            raise argparse.ArgumentTypeError(f"{_quote(raw)} {exc}") from None


class _Int(Kind):
    what = "a whole number"

    def text(self, raw: str) -> int:
        try:
            return int(raw.strip())
        except ValueError:
            raise _Invalid("is not a whole number") from None

    def file(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.mismatch(value)


class _Float(Kind):
    what = "a number"

    def text(self, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _Invalid("is not a number") from None
        if not math.isfinite(value):
            raise _Invalid("is not a finite number")
        return value

    def file(self, value: Any) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Invalid("is not a finite number")
            return float(value)
        raise self.mismatch(value)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Bool(Kind):
    what = "true or false"

    def text(self, raw: str) -> bool:
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Invalid("is not true or false (1/0, true/false, yes/no, on/off)")

    def file(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise self.mismatch(value)


class _Choice(Kind):
    def __init__(self, *options: str, fold: Callable[[str], str] = str.lower) -> None:
        self.options, self.fold = options, fold
        self.what = "one of " + ", ".join(options)

    def text(self, raw: str) -> str:
        word = self.fold(raw.strip())
        if word not in self.options:
            raise _Invalid(f"is not {self.what}")
        return word


class _Path(Kind):
    what = "a path"

    def text(self, raw: str) -> Path:
        if not raw.strip():
            raise _Invalid("is empty, not a path")
        return Path(_no_nul(raw))


class _List(Kind):
    """Repeatable flags; a comma-separated variable; a list of text in a file."""

    what = "a list of text"

    def text(self, raw: str) -> list[str]:
        return [part.strip() for part in _no_nul(raw).split(",") if part.strip()]

    def file(self, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise self.mismatch(value)
        for item in value:
            if not isinstance(item, str):
                raise _Invalid(f"holds {_type_name(item)}, not only text")
        return [_no_nul(item).strip() for item in value if item.strip()]


class _Either(Kind):
    """A whole number or one word ("inf" output tokens, "auto" workers)."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.what = f'a whole number or "{word}"'

    def text(self, raw: str) -> int | str:
        if raw.strip().lower() == self.word:
            return self.word
        try:
            return int(raw.strip())
        except ValueError:
            raise _Invalid(f"is not {self.what}") from None

    def file(self, value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() == self.word:
            return self.word
        raise self.mismatch(value)


class _Prices(Kind):
    """US dollars per million tokens, by kind: a table in a file, `kind=usd,...` as text."""

    what = f"prices per million tokens ({', '.join(TOKEN_KINDS)})"

    def text(self, raw: str) -> dict[str, float]:
        table: dict[str, Any] = {}
        for part in _no_nul(raw).split(","):
            if part.strip():
                kind, sep, price = part.partition("=")
                if not sep:
                    raise _Invalid(f'has "{part.strip()}", not kind=price')
                table[kind.strip()] = _Float().text(price)
        return self.file(table)

    def file(self, value: Any) -> dict[str, float]:
        if not isinstance(value, dict):
            raise self.mismatch(value)
        prices: dict[str, float] = {}
        for kind, price in value.items():
            if kind not in TOKEN_KINDS:
                raise _Invalid(f"names {_quote(str(kind))}, not one of {', '.join(TOKEN_KINDS)}")
            if isinstance(price, bool) or not isinstance(price, int | float) \
                    or not math.isfinite(price) or price < 0:
                raise _Invalid(f"gives {kind} {_type_name(price)}, not a price of 0 or more")
            prices[kind] = float(price)
        return prices


MAX_OBJECT_CHARS = 16_384  # a pass-through object's JSON (prompt variables, tracing)


class _Object(Kind):
    """A JSON object passed to the service as given (a stored prompt, a tracing
    configuration): a table in a file, JSON text in a flag or variable; `word` is
    a string the setting also takes ("auto")."""

    def __init__(self, word: str | None = None) -> None:
        self.word = word
        self.what = "a table" + (f' or "{word}"' if word else "")

    def text(self, raw: str) -> Any:
        if self.word is not None and raw.strip() == self.word:
            return self.word
        try:
            value = json.loads(_no_nul(raw))
        except (ValueError, RecursionError):
            raise _Invalid(f"is not {self.what} (JSON)") from None
        return self.file(value)

    def file(self, value: Any) -> Any:
        if self.word is not None and value == self.word:
            return self.word
        if not isinstance(value, dict):
            raise self.mismatch(value)
        try:
            size = len(json.dumps(value, allow_nan=False))
        except (ValueError, RecursionError):
            raise _Invalid("holds a value JSON cannot carry") from None
        if size > MAX_OBJECT_CHARS:
            raise _Invalid(f"is {size} characters of JSON, over {MAX_OBJECT_CHARS}")
        return value


class _Truncation(Kind):
    """How the service trims a long conversation: "auto", "disabled", or the share of
    the context kept when it trims (a retention ratio, 0-1)."""

    what = '"auto", "disabled" or a retention ratio between 0 and 1'

    def text(self, raw: str) -> str | float:
        word = raw.strip().lower()
        if word in ("auto", "disabled"):
            return word
        try:
            return self.file(float(word))
        except ValueError:
            raise _Invalid(f"is not {self.what}") from None

    def file(self, value: Any) -> str | float:
        if value in ("auto", "disabled"):
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 < value <= 1:
            raise _Invalid(f"is not {self.what}")
        return float(value)


def _prompt(value: Any) -> str | None:
    if not isinstance(value.get("id"), str) or not value["id"]:
        return 'needs an "id" (the stored prompt\'s, pmpt_...)'
    extra = set(value) - {"id", "version", "variables"}
    return f"has unknown keys {sorted(extra)}" if extra else None


class _PortRange(Kind):
    what = 'a port range "LOW-HIGH"'

    def text(self, raw: str) -> tuple[int, int]:
        try:
            return parse_port_range(raw)
        except ValueError as exc:
            raise _Invalid("is not a port range: " + str(exc).rsplit(": ", 1)[-1]) from None


# ------------------------------------------------------------ checks

Check = Callable[[Any], str | None]  # the value -> why it is refused, or None


def _at_least(low: float, note: str = "") -> Check:
    return lambda v: None if v >= low else f"must be >= {low:g}{note}"


def _above(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low:g}"


def _between(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low:g} and {high:g}"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "is not a port (0-65535)"


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address(value: str) -> str | None:
    return None if _is_address(value) else "is not an IP address"


def _addresses(values: list[str]) -> str | None:
    bad = next((v for v in values if not _is_address(v)), None)
    return None if bad is None else f"has {_quote(bad)}, which is not an IP address"


def _networks(allow_none: bool) -> Check:
    def check(values: list[str]) -> str | None:
        for value in values:
            if allow_none and value.lower() == "none":
                continue
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"has {_quote(value)}, which is not an address or network"
        return None

    return check


def _urls(*schemes: str) -> Check:
    def check(values: list[str]) -> str | None:
        bad = next((v for v in values if not v.lower().startswith(schemes)), None)
        if bad is None:
            return None
        return f"has {_quote(bad)}, which is not a {'/'.join(s[:-1] for s in schemes)} URL"

    return check


def _http_urls(values: list[str]) -> str | None:
    for value in values:
        try:
            parts = urlsplit(value)
            ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            return f"has {_quote(_safe_url(value))}, which is not an http:// or https:// URL"
    return None


def _websocket_url(value: str) -> str | None:
    if value.lower().startswith(("ws://", "wss://")) and urlsplit(value).hostname:
        return None
    return "is not a ws:// or wss:// URL"


def _redis_url(value: str) -> str | None:
    ok = value.lower().startswith(("redis://", "rediss://", "unix://"))
    return None if ok else "is not a redis://, rediss:// or unix:// URL"


# ------------------------------------------------------------ the table


@dataclass(frozen=True)
class Setting:
    """One setting of `serve`: where it can be given, its type, and what it must be."""

    name: str  # argparse dest and the config file's key
    kind: Kind
    default: Any
    help: str
    flag: str | None  # None: the config file only
    env: str | None  # the RTC_AGENT_* variable (None: none)
    table: str | None  # "session" or "serve": its config file table (None: not in a file)
    check: Check | None = None
    hide: str = ""  # "secret": never shown; "url": shown without credentials or query
    metavar: str | None = None
    offline: str = ""  # why the offline backend ignores it (said in the help)
    services: str = ""  # which services honour it, when not all (docs/configuration.md)


def _setting(name: str, kind: Kind, default: Any, help: str, *, table: str = "serve",
             flag: str | None = "", env: str | None = "", **extra: Any) -> Setting:
    """A setting whose flag is --name-with-dashes and variable RTC_AGENT_NAME unless given."""
    return Setting(
        name, kind, default, help,
        flag=f"--{name.replace('_', '-')}" if flag == "" else flag,
        env=f"{ENV_PREFIX}{name.upper()}" if env == "" else env, table=table, **extra)


def _file_only(name: str, kind: Kind, default: Any, help: str, **extra: Any) -> Setting:
    return Setting(name, kind, default, help, flag=None, env=None, table="session", **extra)


_SERVE = ServeConfig()
_SESSION = SessionSettings()
_VAD = TurnDetection()
_INT, _FLOAT, _BOOL, _TEXT, _PATH, _LIST = _Int(), _Float(), _Bool(), Kind(), _Path(), _List()
_RULES = "its replies come from rules"
_GA = "GA services (OpenAI, Azure GA, the offline backend); not sent in the beta dialect"

SETTINGS: tuple[Setting, ...] = (
    _setting("config", _PATH, None,
             "TOML or JSON file of settings: each key named below, at the top of the file "
             "or in its [session] or [serve] table", table="", metavar="FILE"),
    _setting("host", _TEXT, _SERVE.host,
             "address to listen on (default 127.0.0.1; 0.0.0.0 or :: takes calls from "
             "phones on the LAN, whose URLs are printed at start)"),
    _setting("port", _INT, _SERVE.port, "port to listen on (default 8080; 0: any free port)",
             check=_port),
    _setting("max_calls", _INT, _SERVE.max_calls,
             "concurrent calls before answering 503 (default 20)", check=_at_least(0)),
    _setting("ice_servers", _LIST, [], "STUN/TURN URL for ICE (repeatable; none by default, "
             "so loopback works offline)", flag="--ice-server", metavar="URL",
             check=_urls("stun:", "stuns:", "turn:", "turns:")),
    _setting("ice_addresses", _LIST, [], "local address ICE offers as a host candidate "
             "(repeatable; default: all but loopback)", flag="--ice-address", metavar="ADDR",
             check=_addresses),
    _setting("token", _TEXT, None, "access token callers must present to place a call "
             "(default: none, anyone who reaches the page may call)", hide="secret"),
    _setting("allow_origins", _LIST, [], "cross-origin page allowed to place calls "
             "(repeatable, or *; default: the page's own origin only)",
             flag="--allow-origin", metavar="ORIGIN"),
    _setting("realtime_url", _TEXT, None, "Realtime WebSocket URL of any compatible service "
             "(key from REALTIME_API_KEY or OPENAI_API_KEY)", check=_websocket_url, hide="url",
             metavar="URL"),
    _setting("realtime_beta", _BOOL, False,
             "speak the beta dialect to --realtime-url (only used with it)"),
    _setting("model", _TEXT, None,
             "OpenAI Realtime model (default: OPENAI_REALTIME_MODEL, else gpt-realtime); "
             "Azure uses its deployment and --realtime-url its own URL instead",
             offline="it has its own speech engines and replies", services="OpenAI"),
    _setting("search_dir", _PATH, DEFAULT_SEARCH_DIR, "folder the search tool reads when "
             "TAVILY_API_KEY is not set (default: this project's docs/)", metavar="DIR"),
    _setting("tool_timeout_s", _FLOAT, _SERVE.tool_timeout_s,
             "seconds a tool call may take (default 10)", flag="--tool-timeout",
             env=f"{ENV_PREFIX}TOOL_TIMEOUT", check=_above(0), metavar="S"),
    _setting("mcp_servers", _LIST, [], "MCP server (streamable HTTP) whose tools the model "
             "is offered next to search, as `prefix__tool`, listed at each call's start "
             "(repeatable; none by default; configure only servers you trust: their tool "
             "descriptions reach the model)", flag="--mcp-server",
             env=f"{ENV_PREFIX}MCP_SERVER", check=_http_urls, hide="url",
             metavar="URL"),
    _setting("web_dir", _PATH, DEFAULT_WEB_DIR,
             "folder of the web client (default: this project's web/)", metavar="DIR"),
    _setting("https", _BOOL, False, "serve HTTPS with the local CA's certificate in "
             "--cert-dir, made if missing (see `rtc-agent certs`)"),
    _setting("cert", _PATH, None, "TLS certificate chain (PEM), with --key: HTTPS with a "
             "real certificate", metavar="PEM"),
    _setting("key", _PATH, None, "TLS private key (PEM) of --cert", metavar="PEM"),
    _setting("cert_dir", _PATH, _SERVE.cert_dir,
             "where --https keeps the local CA and its certificate (default ./certs)",
             metavar="DIR"),
    _setting("turn_urls", _LIST, [], "TURN URL handed to callers with short-lived "
             "credentials; needs --turn-secret (repeatable)", flag="--turn-url",
             metavar="URL", check=_urls("turn:", "turns:", "stun:", "stuns:")),
    _setting("turn_secret", _TEXT, None,
             "coturn static-auth-secret for TURN REST credentials", hide="secret"),
    _setting("turn_ttl_s", _INT, _SERVE.turn_ttl_s,
             "lifetime of minted TURN credentials, seconds (default 600)", check=_above(0)),
    _setting("header_timeout_s", _FLOAT, _SERVE.header_timeout_s,
             "seconds for the TLS handshake and a request head; idle connections close "
             "after it too (default 10)", check=_above(0)),
    _setting("body_timeout_s", _FLOAT, _SERVE.body_timeout_s,
             "seconds to receive an offer's body (default 10)", check=_above(0)),
    _setting("max_connections", _INT, _SERVE.max_connections,
             "open HTTP connections in all (default 512; 0: off)",
             check=_at_least(0, " (0 turns it off)")),
    _setting("max_connections_per_address", _INT, _SERVE.max_connections_per_address,
             "open HTTP connections per client address (default 32; 0: off)",
             check=_at_least(0, " (0 turns it off)")),
    _setting("offers_per_minute", _INT, _SERVE.offers_per_minute,
             "POST /offer per client address and minute (default 10; 0: off)",
             check=_at_least(0, " (0 turns it off)")),
    _setting("max_pending_per_address", _INT, _SERVE.max_pending_per_address,
             "calls per client address still connecting (ICE) (default 4; 0: off)",
             check=_at_least(0, " (0 turns it off)")),
    _setting("limit_exempt", _LIST, list(DEFAULT_LIMIT_EXEMPT),
             "network the per-address limits skip (repeatable; default loopback; 'none': "
             "no exemption)", metavar="CIDR", check=_networks(allow_none=True)),
    _setting("trusted_proxies", _LIST, [], "reverse proxy whose X-Forwarded-Proto, -Host "
             "and -For are believed (repeatable; default none)", flag="--trusted-proxy",
             metavar="ADDR_OR_CIDR", check=_networks(allow_none=False)),
    _setting("hsts_max_age_s", _INT, _SERVE.hsts_max_age_s,
             "Strict-Transport-Security max-age under HTTPS (default 15552000; 0: no header)",
             check=_at_least(0, " (0: no header)")),
    _setting("tts", _Choice("piper", "espeak"), _SERVE.tts,
             "the offline backend's voice engine (default piper)"),
    _setting("decode_thread", _BOOL, False,
             "decode caller audio on aiortc's per-call thread (for A/B benchmarks)"),
    _setting("ptime", _INT, _SERVE.ptime_ms, "milliseconds of the agent's audio per packet: "
             "20 (default) or 10 (a shorter wait in the caller's jitter buffer, twice the "
             "packets; see docs/benchmarks.md)",
             check=lambda v: None if v in (10, 20) else "must be 10 or 20", metavar="MS"),
    _setting("dtx", _BOOL, False, "while the agent is quiet send Opus DTX (one tiny packet "
             "every 400 ms) instead of a silence packet every frame: less traffic, and a "
             "reply's first packet leaves the moment its audio comes; it is not heard sooner "
             "in Chromium (docs/benchmarks.md)"),
    _setting("workers", _Either("auto"), "auto", "worker processes, each with its own event "
             "loop: a number, or 'auto' for the cores this process may use (default auto)",
             check=lambda v: None if v == "auto" or v >= 1 else "must be >= 1 or \"auto\"",
             metavar="N"),
    _setting("node_id", _TEXT, "", "this node's name in /healthz and the cluster (default: "
             "the host name and a random suffix)"),
    _setting("redis_url", _TEXT, None, "redis://host:port/db of the cluster registry (many "
             "nodes); needs --cluster-secret", check=_redis_url, hide="url", metavar="URL"),
    _setting("cluster_secret", _TEXT, None, "shared secret that authenticates requests "
             "forwarded between workers and nodes (default: random, for one node)",
             hide="secret"),
    _setting("internal_host", _TEXT, _SERVE.internal_host,
             "address workers listen on for forwarded requests; other nodes must reach it "
             "under --redis-url (default 127.0.0.1)"),
    _setting("internal_port", _INT, _SERVE.internal_port,
             "first internal port: worker i listens on PORT+i (default 0: any free port)",
             check=_port, metavar="PORT"),
    _setting("public_address", _TEXT, None, "address ICE announces instead of the local one, "
             "for a node behind 1:1 NAT (cloud VMs)", check=_address, metavar="ADDR"),
    _setting("udp_ports", _PortRange(), None, "UDP ports for media (host candidates), split "
             "between the workers (default: any)", metavar="LOW-HIGH"),
    _setting("drain_timeout_s", _FLOAT, _SERVE.drain_timeout_s, "on SIGTERM, seconds current "
             "calls may go on before they are ended (default 600)", flag="--drain-timeout",
             env=f"{ENV_PREFIX}DRAIN_TIMEOUT", check=_at_least(0), metavar="S"),
    _setting("metrics_token", _TEXT, None, "bearer token /metrics requires (default: none, "
             "/metrics is open; it holds no call content)", hide="secret"),
    _setting("no_metrics", _BOOL, False,
             "collect no per-call metrics (for A/B benchmarks of their cost)"),
    _setting("max_call_s", _FLOAT, _SERVE.max_call_s, "end calls after this many seconds, "
             "telling the caller why (default 0: no limit)", check=_at_least(0, " (0: no limit)")),
    _setting("resume_window_s", _FLOAT, _SERVE.resume_window_s, "how long a call whose "
             "media path died (a phone changing networks) waits for the caller to resume it "
             "before ending (default 30; 0: end at once)", check=_at_least(0)),
    _setting("pricing", _Prices(), {}, "US dollars per million Realtime tokens, to estimate "
             "each call's cost (the caller's usage messages, the call log): "
             "kind=price,... with kinds " + ", ".join(TOKEN_KINDS) + " (default: no estimate; "
             "in a file, a [serve.pricing] table)", metavar="KIND=USD,..."),
    _setting("record_dir", _PATH, None, "record every call there: <call_id>.ogg (caller left, "
             "agent right) and .json (default: no recordings; callers see a 'Recorded' notice "
             "when on)", metavar="DIR"),
    _setting("record_max_s", _FLOAT, _SERVE.record_max_s,
             "longest recording per call, seconds (default 3600)", check=_above(0)),
    _setting("call_log", _PATH, None, "append one JSON line per ended call to this file "
             "(default: none)", metavar="PATH"),
    _setting("log_level", _Choice(*LOG_LEVELS, fold=str.upper), "INFO",
             "how much to log (default INFO; aioice, aiortc, aiohttp and websockets log "
             "warnings and errors only, unless DEBUG)"),
    # The session the agent asks of the Realtime service.
    _setting("instructions", _TEXT, _SESSION.instructions, "system instructions for the "
             "model", table="session", metavar="TEXT",
             offline=_RULES),
    _setting("voice", _TEXT, _SESSION.voice, "voice name (default alloy)", table="session",
             offline="it speaks with the one voice of its --tts engine"),
    _setting("vad_threshold", _FLOAT, _VAD.threshold, "server VAD: speech probability that "
             "starts a turn, 0-1 (default 0.5)", table="session", check=_between(0, 1),
             metavar="P"),
    _setting("vad_prefix_ms", _INT, _VAD.prefix_padding_ms, "server VAD: audio kept from "
             "before the speech started, ms (default 300)", table="session",
             check=_at_least(0), metavar="MS"),
    _setting("vad_silence_ms", _INT, _VAD.silence_duration_ms, "server VAD: silence that "
             "ends the caller's turn, ms (default 500)", table="session", check=_at_least(0),
             metavar="MS"),
    _setting("no_vad", _BOOL, False, "turn server VAD off (the page then commits turns)",
             table="session"),
    _setting("vad", _Choice("server", "semantic"), "server", "how the service finds the end "
             "of the caller's turn: server (a silence after speech; the vad_* settings) or "
             "semantic (a model judges whether the caller has finished; --vad-eagerness; "
             "the offline backend approximates it by a silence that is longer after words "
             "that leave a sentence open) (default server)", table="session"),
    _setting("vad_eagerness", _Choice(*EAGERNESS), "auto", "semantic VAD: how soon it "
             "answers, low (lets the caller finish) to high (answers quickly) (default auto)",
             table="session"),
    _setting("noise_reduction", _Choice("off", *NOISE_REDUCTION), "off", "the service's "
             "input noise reduction: near_field (headsets, phones held close), far_field "
             "(laptops, speakerphones) or off (default off; the offline backend accepts it "
             "and hears the audio as it is)", table="session"),
    _setting("no_barge_in", _BOOL, False, "the caller's voice does not interrupt the agent "
             "(interrupt_response off)", table="session"),
    _file_only("interrupt_response", _BOOL, _VAD.interrupt_response,
               "the caller's voice interrupts the agent (the opposite of no_barge_in)"),
    _file_only("create_response", _BOOL, _VAD.create_response,
               "the service answers when the caller's turn ends"),
    _setting("no_transcription", _BOOL, False, "turn input transcription off",
             table="session"),
    _file_only("transcription_model", _TEXT, _SESSION.transcription_model,
               "model that transcribes the caller (default whisper-1)",
               offline="it transcribes with pocketsphinx"),
    _setting("tool_choice", _Choice("auto", "none", "required"), _SESSION.tool_choice,
             "whether the model may call tools (default auto)", table="session"),
    _setting("temperature", _FLOAT, _SESSION.temperature, "sampling temperature (default "
             "0.8)", table="session", check=_at_least(0), offline=_RULES),
    _setting("max_output_tokens", _Either("inf"), _SESSION.max_output_tokens,
             'longest reply, in tokens: a number or "inf" (default inf)', table="session",
             check=lambda v: None if v == "inf" or v >= 1 else 'must be >= 1 or "inf"',
             metavar="N", offline=_RULES),
    # What the agent does at the edges of a call.
    _setting("idle_timeout_s", _FLOAT, _SERVE.idle_timeout_s, "after this many seconds with "
             "nothing from the caller, the agent asks --idle-prompt; after as long again it "
             "says --goodbye and ends the call (end reason idle) (default 0: never)",
             check=_at_least(0, " (0: never)")),
    _setting("idle_prompt", _TEXT, _SERVE.idle_prompt, "what the agent says to a silent "
             'caller (default "Are you still there?")', table="session", metavar="TEXT",
             services="the server, asking every service's model to say it"),
    _setting("goodbye", _TEXT, _SERVE.goodbye, "what the agent says before it ends a call "
             'itself (--idle-timeout-s, --max-call-s) (default "Thank you for calling. '
             'Goodbye!")', table="session", metavar="TEXT",
             services="the server, asking every service's model to say it"),
    _setting("session_renew_s", _FLOAT, _SERVE.session_renew_s, "replace the Realtime "
             "session after this many seconds, at a quiet moment, replaying the conversation "
             "(the service caps a session at 60 minutes) (default 3300; 0: only when the "
             "service closes it)", check=_at_least(0, " (0: never)")),
    _setting("tool_ack_ms", _INT, _SERVE.tool_ack_ms, "a tool still running after this "
             "many ms gets a short spoken acknowledgement (\"let me look that up\") while "
             "the caller waits (default 1500; 0: none)", check=_at_least(0, " (0: none)"),
             metavar="MS"),
    # Passed to the service as given (GA; beta has tracing only).
    _file_only("prompt", _Object(), None, "a stored prompt: a table {id, version, "
               "variables}", check=_prompt, offline=_RULES, services=_GA),
    _setting("reasoning_effort", _Choice("minimal", "low", "medium", "high"), None,
             "how hard a reasoning model thinks before it answers (default: the service's)",
             table="session", offline=_RULES, services=_GA),
    _setting("truncation", _Truncation(), None, 'how the service trims a long '
             'conversation: "auto", "disabled" or the share of it kept, 0-1 (default: the '
             "service's)", table="session", metavar="HOW", services=_GA),
    _setting("tracing", _Object("auto"), None, 'the service\'s tracing: "auto" or a table '
             "{workflow_name, group_id, metadata} (default: none)", table="session",
             metavar="JSON"),
    _file_only("include", _LIST, [], "extra fields the service adds to its events, e.g. "
               "item.input_audio_transcription.logprobs", services=_GA),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
FILE_KEYS: dict[str, Setting] = {s.name: s for s in SETTINGS if s.table in TABLES}
ENV_NAMES: dict[str, Setting] = {s.env: s for s in SETTINGS if s.env}


def _help(s: Setting) -> str:
    """The flag's help: what it does, what the offline backend makes of it, and where
    else it can be given."""
    text = s.help
    if s.offline:
        text += f"; ignored by the offline backend ({s.offline})"
    where = [f"env {s.env}" + (", comma-separated" if isinstance(s.kind, _List) else "")]
    if s.table in TABLES:
        where.append(f"[{s.table}] {s.name} in --config")
    return f"{text} ({'; '.join(where)})".replace("%", "%%")


def _default_text(s: Setting) -> str:
    value = s.default
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Path):
        # the project's own folders, as the project names them, not this checkout's path
        project = Path(__file__).resolve().parents[1]
        if value.is_absolute() and value.is_relative_to(project):
            return f"`{value.relative_to(project)}/` of the project"
        return f"`{value}`"
    return f"`{json.dumps(value) if isinstance(value, str) else value}`"


def reference() -> str:
    """docs/configuration.md: every setting of `serve`, from SETTINGS (a test keeps the
    file equal to this; regenerate with `python -m rtc_agent.config > docs/configuration.md`)."""
    lines = [
        "# Configuration",
        "",
        "Every setting of `rtc-agent serve`, generated from `rtc_agent/config.py`",
        "(`python -m rtc_agent.config > docs/configuration.md`; a test keeps the two",
        "equal). A value comes from its flag, else its `RTC_AGENT_*` variable, else the",
        "config file (`--config FILE`, TOML or JSON: the key in its table, or at the top),",
        "else the default. Anything that does not fit ends `serve` with one line naming",
        "it and exit status 2. The Realtime service itself is chosen by `OPENAI_API_KEY`,",
        "`AZURE_OPENAI_*` or `--realtime-url` (see the README).",
        "",
        "\"Honoured by\" says who acts on a setting: the server itself, or the Realtime",
        "service the session settings are sent to (OpenAI GA, Azure GA, Azure preview",
        "(beta dialect), the offline backend).",
        "",
        "| setting | flag | variable | file | default | honoured by | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in SETTINGS:
        if st.table == "":
            continue  # --config itself
        honoured = st.services or ("every service" if st.table == "session" else "the server")
        if st.offline:
            honoured += f"; the offline backend ignores it ({st.offline})"
        flag = f"`{st.flag}`" if st.flag else "—"
        env = f"`{st.env}`" if st.env else "—"
        where = f"`[{st.table}] {st.name}`" if st.table in TABLES else "—"
        what = st.help.replace("|", "\\|")
        lines.append(f"| {st.name} | {flag} | {env} | {where} | {_default_text(st)} "
                     f"| {honoured} | {what} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `rtc-agent serve`, from SETTINGS; values are resolved in `from_args`."""
    for s in SETTINGS:
        if s.flag is None:
            continue
        options: dict[str, Any] = {"dest": s.name, "help": _help(s)}
        if isinstance(s.kind, _Bool):
            options.update(action="store_true", default=None)
        elif isinstance(s.kind, _List):
            options.update(action="append", metavar=s.metavar or "VALUE")
        else:
            options.update(type=s.kind.argtype, metavar=s.metavar)
            if isinstance(s.kind, _Choice):
                options.update(choices=s.kind.options, metavar=None)
        parser.add_argument(s.flag, **options)


# ------------------------------------------------------------ reading the sources


def _shown(s: Setting, value: Any) -> str:
    """A value for an error message: quoted and escaped; a secret never."""
    if s.hide == "secret":
        return "(hidden)"
    if isinstance(value, list):
        value = ",".join(_safe_url(str(v)) if s.hide == "url" else str(v) for v in value)
        return _quote(value)
    if not isinstance(value, str):  # a number, true/false, null: as the file writes it
        return _quote(json.dumps(value, default=str))[1:-1]
    return _quote(_safe_url(value) if s.hide == "url" else value)


def _refuse(s: Setting, value: Any, reason: str, where: str) -> ConfigError:
    return ConfigError(f"{where}={_shown(s, value)} {reason}" if where.startswith(ENV_PREFIX)
                       else f"{where} {_shown(s, value)} {reason}")


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(args, s.name, None) if s.flag else None
        if isinstance(s.kind, _List) and value is not None:
            value = [v.strip() for v in value if v.strip()] or None
        if value is None:
            continue
        reason = s.check(value) if s.check else None
        if reason:
            raise _refuse(s, value, reason, s.flag or s.name)
        found[s.name] = value
    return found


def _env_values(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The RTC_AGENT_* variables that are set (an empty one counts as unset), read and
    checked; and warnings about those no setting has."""
    found: dict[str, Any] = {}
    for name, s in ENV_NAMES.items():
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = s.kind.text(raw)
        except _Invalid as exc:
            raise _refuse(s, raw, str(exc), name) from None
        reason = s.check(value) if s.check else None
        if reason:
            raise _refuse(s, raw, reason, name)
        found[s.name] = value
    warnings = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in ENV_NAMES:
            close = difflib.get_close_matches(name, list(ENV_NAMES), n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{_quote(name)[1:-1]} is not a setting of serve{hint}: ignored")
    return found, warnings


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys; a config file must not say two things."""
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise ValueError(f"key {_quote(key)} appears twice")
        table[key] = value
    return table


def _unknown_key(key: str, table: str | None) -> str:
    text = f"unknown key {_quote(key)}" + (f" in [{table}]" if table else "")
    close = difflib.get_close_matches(key, [*FILE_KEYS, *TABLES], n=1, cutoff=0.7)
    if not close:
        return text + " (`rtc-agent serve --help` names every key)"
    s = FILE_KEYS.get(close[0])
    elsewhere = f" in [{s.table}]" if s and table and s.table != table else ""
    return text + f' (did you mean "{close[0]}"{elsewhere}?)'


def _read_document(path: Path) -> dict[str, Any]:
    """The file's TOML or JSON as a table, or ConfigError saying why it is not one."""

    def fail(why: str) -> ConfigError:
        return ConfigError(f"config file {_quote(str(path))[1:-1]}: {why}")

    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise fail("expected a .toml or .json file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise fail("not found") from None
    except IsADirectoryError:
        raise fail("is a directory, not a file") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    try:
        if suffix == ".toml":
            document = tomllib.loads(text)
        else:
            document = json.loads(text, object_pairs_hook=_unique_keys)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML: {exc}") from None
    except ValueError as exc:
        raise fail(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise fail("nested too deeply") from None
    if not isinstance(document, dict):
        raise fail(f"expected a table of settings, found {_type_name(document)}")
    return document


def _file_values(path: Path) -> dict[str, Any]:
    """The settings in a config file, each checked like its flag; ConfigError names the
    file, the key and the value of the first that does not fit."""
    document = _read_document(path)

    def fail(why: str) -> ConfigError:
        return ConfigError(f"config file {_quote(str(path))[1:-1]}: {why}")

    placed: dict[str, tuple[Any, str]] = {}

    def place(key: str, value: Any, table: str | None) -> None:
        s = FILE_KEYS.get(key)
        if s is None:
            raise fail(_unknown_key(key, table))
        where = f"[{table}] {key}" if table else key
        if table and s.table != table:
            raise fail(f"{_quote(key)} belongs in [{s.table}], not in [{table}]")
        if key in placed:
            raise fail(f"{_quote(key)} is given twice ({placed[key][1]} and {where})")
        placed[key] = (value, where)

    for key, value in document.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise fail(f"{_quote(key)} must be a table ([{key}]), not {_type_name(value)}")
            for inner, inner_value in value.items():
                place(inner, inner_value, key)
        else:
            place(key, value, None)
    if not placed:
        raise fail("holds no settings (expected keys in a [session] or [serve] table)")
    found: dict[str, Any] = {}
    for key, (raw, where) in placed.items():
        s = FILE_KEYS[key]
        try:
            value = s.kind.file(raw)
        except _Invalid as exc:
            raise fail(f"{where} = {_shown(s, raw)} {exc}") from None
        reason = s.check(value) if s.check else None
        if reason:
            raise fail(f"{where} = {_shown(s, raw)} {reason}")
        found[key] = value
    if "no_barge_in" in found and "interrupt_response" in found:
        raise fail("give no_barge_in or interrupt_response, not both")
    return found


class _Resolved:
    """Each setting's value by precedence (flag > environment > file > default), and
    its source."""

    def __init__(self, flags: dict[str, Any], env: dict[str, Any], file: dict[str, Any],
                 file_name: str) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, Source] = {}
        for s in SETTINGS:
            for layer, source in ((flags, Source("flag", s.flag or "")),
                                  (env, Source("env", s.env or "")),
                                  (file, Source("file", file_name))):
                if s.name in layer:
                    self.values[s.name], self.sources[s.name] = layer[s.name], source
                    break
            else:
                self.values[s.name] = s.default

    def __call__(self, name: str) -> Any:
        return self.values[name]

    def given(self, name: str) -> bool:
        return name in self.sources

    def where(self, name: str) -> str:
        """How to name a setting in a message: as it was given, else by its flag."""
        source = self.sources.get(name)
        s = BY_NAME[name]
        if source is None or source.kind == "flag":
            return s.flag or name
        if source.kind == "env":
            return source.name
        return f"{name} in config file {_quote(source.name)[1:-1]}"


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ServeConfig:
    """The effective settings of `serve`; ConfigError for anything that does not fit."""
    env = os.environ if env is None else env
    flags = _flag_values(args)
    env_values, warnings = _env_values(env)
    config_file: Path | None = flags.get("config", env_values.get("config"))
    file_values = _file_values(config_file) if config_file is not None else {}
    v = _Resolved(flags, env_values, file_values, str(config_file or ""))
    interrupt = (not v("no_barge_in")) if v.given("no_barge_in") else v("interrupt_response")
    turn_detection = None if v("no_vad") else TurnDetection(
        threshold=v("vad_threshold"), prefix_padding_ms=v("vad_prefix_ms"),
        silence_duration_ms=v("vad_silence_ms"), create_response=v("create_response"),
        interrupt_response=interrupt, type=f"{v('vad')}_vad", eagerness=v("vad_eagerness"))
    passthrough: list[tuple[str, Any]] = []
    if v("prompt") is not None:
        passthrough.append(("prompt", v("prompt")))
    if v("reasoning_effort") is not None:
        passthrough.append(("reasoning", {"effort": v("reasoning_effort")}))
    truncation = v("truncation")
    if truncation is not None:
        passthrough.append(("truncation", truncation if isinstance(truncation, str) else
                            {"type": "retention_ratio", "retention_ratio": truncation}))
    if v("tracing") is not None:
        passthrough.append(("tracing", v("tracing")))
    if v("include"):
        passthrough.append(("include", list(v("include"))))
    noise = v("noise_reduction")
    session = SessionSettings(
        instructions=v("instructions"), voice=v("voice"), turn_detection=turn_detection,
        transcription_model=None if v("no_transcription") else v("transcription_model"),
        tool_choice=v("tool_choice"), temperature=v("temperature"),
        max_output_tokens=v("max_output_tokens"),
        noise_reduction=None if noise == "off" else noise, passthrough=tuple(passthrough))
    exempt = v("limit_exempt")
    cfg = ServeConfig(
        host=v("host"), port=v("port"), max_calls=v("max_calls"),
        ice_servers=list(v("ice_servers")), ice_addresses=list(v("ice_addresses")),
        token=v("token"), allow_origins=list(v("allow_origins")),
        realtime_url=v("realtime_url"), realtime_beta=v("realtime_beta"), model=v("model"),
        session=session, search_dir=Path(v("search_dir")), tool_timeout_s=v("tool_timeout_s"),
        mcp_servers=list(v("mcp_servers")),
        web_dir=Path(v("web_dir")), https=v("https"), cert=v("cert"), key=v("key"),
        cert_dir=Path(v("cert_dir")), turn_urls=list(v("turn_urls")),
        turn_secret=v("turn_secret"), tts=v("tts"), decode_on_loop=not v("decode_thread"),
        ptime_ms=v("ptime"), dtx=v("dtx"),
        turn_ttl_s=v("turn_ttl_s"), header_timeout_s=v("header_timeout_s"),
        body_timeout_s=v("body_timeout_s"), max_connections=v("max_connections"),
        max_connections_per_address=v("max_connections_per_address"),
        offers_per_minute=v("offers_per_minute"),
        max_pending_per_address=v("max_pending_per_address"),
        limit_exempt=[] if any(e.lower() == "none" for e in exempt) else list(exempt),
        trusted_proxies=list(v("trusted_proxies")), hsts_max_age_s=v("hsts_max_age_s"),
        workers=_workers(v("workers")), node_id=v("node_id") or _node_id(),
        redis_url=v("redis_url"), cluster_secret=v("cluster_secret"),
        internal_host=v("internal_host"), internal_port=v("internal_port"),
        public_address=v("public_address"), udp_ports=v("udp_ports"),
        drain_timeout_s=v("drain_timeout_s"), metrics_token=v("metrics_token"),
        call_log=v("call_log"), metrics=not v("no_metrics"), max_call_s=v("max_call_s"),
        resume_window_s=v("resume_window_s"), pricing=v("pricing"),
        idle_timeout_s=v("idle_timeout_s"), idle_prompt=v("idle_prompt"),
        goodbye=v("goodbye"), session_renew_s=v("session_renew_s"),
        tool_ack_ms=v("tool_ack_ms"),
        record_dir=v("record_dir"), record_max_s=v("record_max_s"), log_level=v("log_level"),
        config_file=config_file, sources=v.sources, warnings=warnings)
    _check_together(cfg, v)
    return cfg


def _workers(value: int | str) -> int:
    """A number of workers, or "auto": the cores this process may run on."""
    if value != "auto":
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _node_id() -> str:
    """A name unique enough for a cluster: the host's, and a suffix per run."""
    return f"{socket.gethostname() or 'node'}-{secrets.token_hex(3)}"


def _check_together(cfg: ServeConfig, v: _Resolved) -> None:
    """What no single value shows: settings that need each other, files that must exist."""
    if cfg.redis_url and not cfg.cluster_secret:
        raise ConfigError(f"{v.where('redis_url')} needs --cluster-secret (the same on every "
                          "node)")
    if cfg.redis_url and cfg.internal_host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"{v.where('internal_host')} must be an address other nodes can "
                          "reach under --redis-url, not a wildcard")
    if cfg.udp_ports is not None:
        size = cfg.udp_ports[1] - cfg.udp_ports[0] + 1
        if size < cfg.workers:
            raise ConfigError(f"{v.where('udp_ports')}: {size} ports cannot be split between "
                              f"{cfg.workers} workers")
    turn = [u for u in [*cfg.ice_servers, *cfg.turn_urls] if u.lower().startswith("turn")]
    if turn and not cfg.turn_secret:
        raise ConfigError(f"TURN URL {_quote(turn[0])} needs --turn-secret (coturn's "
                          "static-auth-secret)")
    if (cfg.cert is None) != (cfg.key is None):
        raise ConfigError("--cert and --key go together")
    for name in ("cert", "key"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{v.where(name)} {_quote(str(path))}: no such file")
    # Defaults aside (an installed package may lack them), folders must hold what they are
    # for: a wrong one would only show as 404s or empty search results.
    if v.given("web_dir") and not (cfg.web_dir / "index.html").is_file():
        raise ConfigError(f"{v.where('web_dir')} {_quote(str(cfg.web_dir))}: no index.html "
                          "there")
    if v.given("search_dir") and not cfg.search_dir.is_dir():
        raise ConfigError(f"{v.where('search_dir')} {_quote(str(cfg.search_dir))}: no such "
                          "folder")


# ------------------------------------------------------------ listening


def listen_error(exc: OSError, host: str, port: int, what: str = "--port") -> ConfigError:
    """A failed bind, said as the setting that caused it."""
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"--host {_quote(host)} cannot be resolved ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is in use ({what})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{_quote(host)} is not an address of this machine (--host)")
    if exc.errno == errno.EACCES:
        return ConfigError(f"port {port} on {host}: permission denied (ports below 1024 need "
                           f"privileges; {what})")
    return ConfigError(f"cannot listen on {host} port {port} ({what}): {exc.strerror or exc}")


def check_port(host: str, port: int, what: str = "--port") -> None:
    """Bind `host:port` as the server will, and let go: a busy port is one line now,
    not a traceback once the backend has started. (Another process may still take the
    port in between; the real bind reports that too.)"""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        if isinstance(exc, OSError):
            raise listen_error(exc, host, port, what) from None
        raise ConfigError(f"--host {_quote(host)} is not a host name or address") from None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise listen_error(exc, host, port, what) from None


# ------------------------------------------------------------ the start-up summary


@dataclass(frozen=True)
class Backend:
    """The Realtime service as the summary shows it (no credentials)."""

    kind: str  # offline | openai | azure | azure-preview | custom
    url: str | None = None  # without query or credentials
    model: str | None = None  # the model or deployment the service's URL names

    @classmethod
    def from_url(cls, kind: str, url: str) -> Backend:
        query = parse_qs(urlsplit(url).query)
        named = query.get("model") or query.get("deployment")
        return cls(kind, _safe_url(url), named[0] if named else None)


def _safe_url(url: str) -> str:
    """A URL without user, password or query (keys travel there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(unreadable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_KEYS = {"openai": ("OPENAI_API_KEY",), "azure": ("AZURE_OPENAI_API_KEY",),
         "azure-preview": ("AZURE_OPENAI_API_KEY",),
         "custom": ("REALTIME_API_KEY", "OPENAI_API_KEY")}


def describe(cfg: ServeConfig, backend: Backend,
             env: Mapping[str, str] | None = None) -> list[str]:
    """The effective settings, a line per subject, each with the flags, variables or
    file that set it; secrets only as "set" or "not set".

    Printed once when `serve` starts, so a setting that did not take (a variable with
    a typo, a file that was not the one meant) shows before the first call does."""
    env = os.environ if env is None else env
    offline = backend.kind == "offline"

    def origin(*names: str) -> str:
        given = dict.fromkeys(str(cfg.sources[n]) for n in names if n in cfg.sources)
        return f"  [{', '.join(given)}]" if given else ""

    def secret(name: str) -> str:
        return "set" if getattr(cfg, name) else "not set"

    def ignored(name: str) -> str:
        return " (ignored by the offline backend)" if offline and name in cfg.sources else ""

    lines = ["settings (flag > RTC_AGENT_* > config file > default; [ ] says where a value "
             "came from):"]

    def add(label: str, text: str) -> None:
        # Values are the operator's, but a stray newline must not forge a line.
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode()
                       for ch in text)
        lines.append(f"  {label:<15} {text}")

    add("config file", str(cfg.config_file) + origin("config") if cfg.config_file else "none")
    used = sorted({str(s) for s in cfg.sources.values() if s.kind == "env"})
    add("environment", ", ".join(used) if used else "no RTC_AGENT_* variables")
    for warning in cfg.warnings:
        add("", warning)
    add("listen", f"{cfg.host or 'every address'}, port {cfg.port or 'any free one'}"
        + origin("host", "port"))
    if offline:
        add("service", f"offline: the embedded backend, voice engine {cfg.tts}" + origin("tts"))
    else:
        keys = _KEYS.get(backend.kind, ())
        key = next((k for k in keys if env.get(k)), None)
        dialect = " (beta dialect)" if cfg.realtime_beta and backend.kind == "custom" else ""
        add("service", f"{backend.kind} {backend.url or ''}{dialect}, "
            + (f"key {key} set" if key else "no key") + origin("realtime_url", "realtime_beta"))
    if offline:
        model = "none: the offline backend" + (" ignores --model" if cfg.model else "")
    elif backend.kind == "openai":
        model = str(backend.model) + (origin("model") or
                                      ("  [OPENAI_REALTIME_MODEL]"
                                       if env.get("OPENAI_REALTIME_MODEL") else ""))
    elif backend.kind.startswith("azure"):
        model = f"deployment {backend.model}  [AZURE_OPENAI_DEPLOYMENT]"
    else:
        model = "the URL's" + (" (--model is ignored)" if cfg.model else "")
    add("model", model)
    add("voice", cfg.session.voice + ignored("voice") + origin("voice"))
    instructions = cfg.session.instructions
    add("instructions", f"{_quote(instructions, 60)} ({len(instructions)} characters)"
        + ignored("instructions") + origin("instructions"))
    td = cfg.session.turn_detection
    vad_names = ("no_vad", "vad", "vad_eagerness", "vad_threshold", "vad_prefix_ms",
                 "vad_silence_ms", "no_barge_in", "interrupt_response", "create_response",
                 "noise_reduction")
    noise = f"; noise reduction {cfg.session.noise_reduction or 'off'}"
    if td is None:
        add("turn detection", "off" + noise + origin(*vad_names))
    else:
        how = (f"semantic VAD, eagerness {td.eagerness}" + ignored("vad")
               if td.type == "semantic_vad" else
               f"server VAD, threshold {td.threshold:g}, prefix {td.prefix_padding_ms} ms, "
               f"silence {td.silence_duration_ms} ms")
        add("turn detection",
            f"{how}; barge-in {'on' if td.interrupt_response else 'off'}; replies "
            f"{'automatic' if td.create_response else 'on request'}{noise}"
            + origin(*vad_names))
    transcription = cfg.session.transcription_model
    add("transcription", (transcription or "off") + ignored("transcription_model")
        + origin("no_transcription", "transcription_model"))
    s = cfg.session
    temperature = "default" if s.temperature is None else f"{s.temperature:g}"
    add("replies", f"temperature {temperature}, max output tokens {s.max_output_tokens}, "
        f"tool choice {s.tool_choice}" + (ignored("temperature") or ignored("max_output_tokens"))
        + origin("temperature", "max_output_tokens", "tool_choice"))
    search = ("Tavily (TAVILY_API_KEY set)" if env.get("TAVILY_API_KEY")
              else f"local files in {cfg.search_dir}")
    mcp = "".join(f"; MCP {_safe_url(url)}" for url in cfg.mcp_servers)
    add("tools", f"search: {search}{mcp}; {cfg.tool_timeout_s:g} s per call"
        + origin("search_dir", "mcp_servers", "tool_timeout_s"))
    passed = ", ".join(key for key, _ in cfg.session.passthrough)
    add("passed as given", (passed or "nothing")
        + origin("prompt", "reasoning_effort", "truncation", "tracing", "include"))
    idle = (f"asks {_quote(cfg.idle_prompt)} after {cfg.idle_timeout_s:g} s of silence"
            if cfg.idle_timeout_s else "no idle timeout")
    renew = (f"session renewed after {cfg.session_renew_s:g} s" if cfg.session_renew_s
             else "session renewed only when the service closes it")
    ack = f"tools acknowledged after {cfg.tool_ack_ms} ms" if cfg.tool_ack_ms else "no tool ack"
    add("agent", f"{idle}; goodbye {_quote(cfg.goodbye)}; {renew}; {ack}"
        + origin("idle_timeout_s", "idle_prompt", "goodbye", "session_renew_s", "tool_ack_ms"))
    longest = f"{cfg.max_call_s:g} s" if cfg.max_call_s else "no limit"
    add("calls", f"{cfg.max_calls} at once, longest {longest}, drain {cfg.drain_timeout_s:g} s, "
        f"resume window {cfg.resume_window_s:g} s"
        + origin("max_calls", "max_call_s", "drain_timeout_s", "resume_window_s"))
    add("HTTP limits",
        f"{cfg.max_connections} connections ({cfg.max_connections_per_address} per address), "
        f"{cfg.offers_per_minute} offers a minute and {cfg.max_pending_per_address} "
        f"connecting calls per address, head {cfg.header_timeout_s:g} s, body "
        f"{cfg.body_timeout_s:g} s" + origin(
            "max_connections", "max_connections_per_address", "offers_per_minute",
            "max_pending_per_address", "header_timeout_s", "body_timeout_s",
            "limit_exempt"))
    add("access", f"token {secret('token')}, metrics token {secret('metrics_token')}, "
        f"origins {', '.join(cfg.allow_origins) or 'the page only'}, trusted proxies "
        f"{', '.join(cfg.trusted_proxies) or 'none'}"
        + origin("token", "metrics_token", "allow_origins", "trusted_proxies"))
    if cfg.cert:
        https = f"on, certificate {cfg.cert}"
    elif cfg.https:
        https = f"on, local CA in {cfg.cert_dir}"
    else:
        https = "off"
    add("HTTPS", https + origin("https", "cert", "key", "cert_dir"))
    turn = (f"TURN {', '.join(cfg.turn_urls)} (secret {secret('turn_secret')}, "
            f"{cfg.turn_ttl_s} s credentials)" if cfg.turn_urls else "no TURN")
    add("ICE", f"servers {', '.join(cfg.ice_servers) or 'none'}; {turn}; host addresses "
        f"{', '.join(cfg.ice_addresses) or 'all but loopback'}; UDP ports "
        + (f"{cfg.udp_ports[0]}-{cfg.udp_ports[1]}" if cfg.udp_ports else "any")
        + (f"; announced as {cfg.public_address}" if cfg.public_address else "")
        + origin("ice_servers", "turn_urls", "turn_secret", "ice_addresses", "udp_ports",
                 "public_address"))
    add("agent audio", f"{cfg.ptime_ms} ms packets, "
        + ("DTX while quiet" if cfg.dtx else "silence packets while quiet")
        + origin("ptime", "dtx"))
    add("recording", (f"{cfg.record_dir} (up to {cfg.record_max_s:g} s a call)"
                      if cfg.record_dir else "off") + origin("record_dir", "record_max_s"))
    add("call log", (str(cfg.call_log) if cfg.call_log else "off") + origin("call_log"))
    prices = ", ".join(f"{kind} ${price:g}" for kind, price in cfg.pricing.items())
    add("cost estimate", (f"per million tokens: {prices}" if prices else "off")
        + origin("pricing"))
    names = ["workers", "node_id"]
    if cfg.redis_url:
        cluster = f"; cluster on {_safe_url(cfg.redis_url)}, secret {secret('cluster_secret')}"
        names += ["redis_url", "cluster_secret"]
    elif cfg.workers > 1:
        cluster = "; secret between workers " + ("set" if cfg.cluster_secret else "random")
        names += ["cluster_secret"]
    else:
        cluster = ""
    add("workers", f"{cfg.workers}, node {cfg.node_id}{cluster}" + origin(*names))
    add("log level", cfg.log_level + origin("log_level"))
    return lines


if __name__ == "__main__":
    print(reference(), end="")
