"""Settings of `rtc-agent serve`, from flags, environment and a config file.

Every flag has an environment variable (RTC_AGENT_<FLAG>), and the session
settings (instructions, voice, VAD, transcription, tool choice, temperature,
max output tokens) can also come from a TOML or JSON file given by --config.
Precedence: flag > environment > config file > default.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtc_agent.ice import parse_port_range
from rtc_agent.realtime.settings import SessionSettings, TurnDetection

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEB_DIR = PROJECT_ROOT / "web"
DEFAULT_SEARCH_DIR = PROJECT_ROOT / "docs"
DEFAULT_LIMIT_EXEMPT = ("127.0.0.0/8", "::1/128")


def _env(name: str) -> str | None:
    return os.environ.get(f"RTC_AGENT_{name.upper().replace('-', '_')}")


def _env_list(name: str) -> list[str]:
    value = _env(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


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
    decode_on_loop: bool = True
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `rtc-agent serve`; defaults are resolved in `from_args`."""
    a = parser.add_argument
    a("--host", help="address to listen on (default 127.0.0.1)")
    a("--port", type=int, help="port to listen on (default 8080)")
    a("--max-calls", type=int, help="concurrent calls before answering 503 (default 20)")
    a("--ice-server", action="append", dest="ice_servers", metavar="URL",
      help="STUN/TURN URL for ICE (repeatable; none by default, so loopback works offline)")
    a("--ice-address", action="append", dest="ice_addresses", metavar="ADDR",
      help="local address ICE offers as a host candidate (repeatable; default: all but loopback)")
    a("--token", help="access token callers must present to place a call")
    a("--allow-origin", action="append", dest="allow_origins", metavar="ORIGIN",
      help="cross-origin page allowed to place calls (repeatable, or *)")
    a("--realtime-url", help="Realtime WebSocket URL of any compatible service")
    a("--realtime-beta", action="store_true", default=None,
      help="speak the beta dialect to --realtime-url")
    a("--model", help="OpenAI Realtime model (default gpt-realtime)")
    a("--config", type=Path, help="TOML or JSON file with session settings")
    a("--instructions", help="system instructions for the model")
    a("--voice", help="voice name")
    a("--vad-threshold", type=float)
    a("--vad-prefix-ms", type=int)
    a("--vad-silence-ms", type=int)
    a("--no-vad", action="store_true", default=None, help="turn server VAD off")
    a("--no-barge-in", action="store_true", default=None,
      help="the caller's voice does not interrupt the agent (interrupt_response off)")
    a("--no-transcription", action="store_true", default=None,
      help="turn input transcription off")
    a("--tool-choice", choices=["auto", "none", "required"])
    a("--temperature", type=float)
    a("--max-output-tokens", help='integer or "inf"')
    a("--search-dir", type=Path, help="folder the offline search tool reads")
    a("--tool-timeout", type=float, dest="tool_timeout_s", help="seconds per tool call")
    a("--web-dir", type=Path, help="folder of the web client")
    a("--https", action="store_true", default=None,
      help="serve HTTPS with the certificate in certs/ (see `rtc-agent certs`)")
    a("--cert", type=Path, help="TLS certificate (PEM)")
    a("--key", type=Path, help="TLS private key (PEM)")
    a("--cert-dir", type=Path, help="where --https keeps the local CA (default ./certs)")
    a("--turn-url", action="append", dest="turn_urls", metavar="URL",
      help="TURN URL handed to callers with short-lived credentials (repeatable)")
    a("--turn-secret", help="coturn static-auth-secret for TURN REST credentials")
    a("--turn-ttl-s", type=int, help="lifetime of minted TURN credentials (default 600)")
    a("--header-timeout-s", type=float,
      help="seconds for the TLS handshake and a request head; idle connections close "
           "after it too (default 10)")
    a("--body-timeout-s", type=float, help="seconds to receive an offer's body (default 10)")
    a("--max-connections", type=int, help="open HTTP connections in all (default 512; 0: off)")
    a("--max-connections-per-address", type=int,
      help="open HTTP connections per client address (default 32; 0: off)")
    a("--offers-per-minute", type=int,
      help="POST /offer per client address and minute (default 10; 0: off)")
    a("--max-pending-per-address", type=int,
      help="calls per client address still connecting (ICE) (default 4; 0: off)")
    a("--limit-exempt", action="append", dest="limit_exempt", metavar="CIDR",
      help="network the per-address limits skip (repeatable; default loopback; 'none': no "
           "exemption)")
    a("--trusted-proxy", action="append", dest="trusted_proxies", metavar="ADDR_OR_CIDR",
      help="reverse proxy whose X-Forwarded-Proto, -Host and -For are believed (repeatable; "
           "default none)")
    a("--hsts-max-age-s", type=int,
      help="Strict-Transport-Security max-age under HTTPS (default 15552000; 0: no header)")
    a("--tts", choices=["piper", "espeak"], help="offline backend voice engine")
    a("--decode-thread", action="store_true", default=None,
      help="decode caller audio on aiortc's per-call thread (for A/B benchmarks)")
    a("--workers", help="worker processes, each with its own event loop: a number, or "
                         "'auto' for the cores this process may use (default auto)")
    a("--node-id", help="this node's name in /healthz and the cluster (default: the host "
                        "name and a random suffix)")
    a("--redis-url", help="redis://host:port/db of the cluster registry (many nodes); "
                          "needs --cluster-secret")
    a("--cluster-secret", help="shared secret that authenticates requests forwarded between "
                               "workers and nodes (default: random, for one node)")
    a("--internal-host", help="address workers listen on for forwarded requests; other "
                              "nodes must reach it under --redis-url (default 127.0.0.1)")
    a("--internal-port", type=int, help="first internal port: worker i listens on PORT+i "
                                        "(default 0: any free port)")
    a("--public-address", help="address ICE announces instead of the local one, for a node "
                               "behind 1:1 NAT (cloud VMs)")
    a("--udp-ports", metavar="LOW-HIGH", help="UDP ports for media (host candidates), split "
                                             "between the workers (default: any)")
    a("--drain-timeout", type=float, dest="drain_timeout_s",
      help="on SIGTERM, seconds current calls may go on before they are ended (default 600)")
    a("--metrics-token", help="bearer token /metrics requires (default: none, /metrics is "
                               "open; it holds no call content)")
    a("--no-metrics", action="store_true", default=None,
      help="collect no per-call metrics (for A/B benchmarks of their cost)")
    a("--max-call-s", type=float, help="end calls after this many seconds, telling the "
                                        "caller why (default 0: no limit)")
    a("--record-dir", type=Path, metavar="DIR",
      help="record every call there: <call_id>.ogg (caller left, agent right) and .json "
           "(default: no recordings; callers see a 'Recorded' notice when on)")
    a("--record-max-s", type=float, help="longest recording per call, seconds (default 3600)")
    a("--call-log", type=Path, metavar="PATH", help="append one JSON line per ended call")
    a("--log-level", default=os.environ.get("RTC_AGENT_LOG_LEVEL", "INFO"))


def _file_settings(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    return data.get("session", data)


def _pick(flag: Any, env_name: str, file: dict[str, Any], key: str, default: Any,
          cast: Any = str) -> Any:
    if flag is not None:
        return flag
    env = _env(env_name)
    if env is not None:
        return cast(env) if cast is not bool else env.lower() in ("1", "true", "yes")
    if key in file:
        return file[key]
    return default


def _tokens(value: Any) -> int | str:
    if value in (None, "inf"):
        return "inf"
    return int(value)


def from_args(args: argparse.Namespace) -> ServeConfig:
    file = _file_settings(getattr(args, "config", None))
    defaults = SessionSettings()
    td_defaults = TurnDetection()
    no_vad = _pick(args.no_vad, "no_vad", file, "no_vad", False, bool)
    turn_detection = None if no_vad else TurnDetection(
        threshold=float(_pick(args.vad_threshold, "vad_threshold", file, "vad_threshold",
                              td_defaults.threshold, float)),
        prefix_padding_ms=int(_pick(args.vad_prefix_ms, "vad_prefix_ms", file,
                                    "vad_prefix_ms", td_defaults.prefix_padding_ms, int)),
        silence_duration_ms=int(_pick(args.vad_silence_ms, "vad_silence_ms", file,
                                      "vad_silence_ms", td_defaults.silence_duration_ms, int)),
        create_response=bool(file.get("create_response", td_defaults.create_response)),
        interrupt_response=not _pick(args.no_barge_in, "no_barge_in", file, "no_barge_in",
                                     not file.get("interrupt_response", True), bool),
    )
    no_transcription = _pick(args.no_transcription, "no_transcription", file,
                             "no_transcription", False, bool)
    temperature = _pick(args.temperature, "temperature", file, "temperature",
                        defaults.temperature, float)
    session = SessionSettings(
        instructions=_pick(args.instructions, "instructions", file, "instructions",
                           defaults.instructions),
        voice=_pick(args.voice, "voice", file, "voice", defaults.voice),
        turn_detection=turn_detection,
        transcription_model=None if no_transcription else file.get(
            "transcription_model", defaults.transcription_model),
        tool_choice=_pick(args.tool_choice, "tool_choice", file, "tool_choice",
                          defaults.tool_choice),
        temperature=None if temperature is None else float(temperature),
        max_output_tokens=_tokens(_pick(args.max_output_tokens, "max_output_tokens", file,
                                        "max_output_tokens", defaults.max_output_tokens)),
    )
    cfg = ServeConfig(
        host=_pick(args.host, "host", {}, "", "127.0.0.1"),
        port=int(_pick(args.port, "port", {}, "", 8080, int)),
        max_calls=int(_pick(args.max_calls, "max_calls", {}, "", 20, int)),
        ice_servers=args.ice_servers or _env_list("ice_servers"),
        ice_addresses=args.ice_addresses or _env_list("ice_addresses"),
        token=_pick(args.token, "token", {}, "", None),
        allow_origins=args.allow_origins or _env_list("allow_origins"),
        realtime_url=_pick(args.realtime_url, "realtime_url", {}, "", None),
        realtime_beta=bool(_pick(args.realtime_beta, "realtime_beta", {}, "", False, bool)),
        model=_pick(args.model, "model", {}, "", None),
        session=session,
        search_dir=Path(_pick(args.search_dir, "search_dir", {}, "", DEFAULT_SEARCH_DIR)),
        tool_timeout_s=float(_pick(args.tool_timeout_s, "tool_timeout", {}, "", 10.0, float)),
        web_dir=Path(_pick(args.web_dir, "web_dir", {}, "", DEFAULT_WEB_DIR)),
        https=bool(_pick(args.https, "https", {}, "", False, bool)),
        cert=_pick(args.cert, "cert", {}, "", None, Path),
        key=_pick(args.key, "key", {}, "", None, Path),
        cert_dir=Path(_pick(args.cert_dir, "cert_dir", {}, "", "certs")),
        turn_urls=args.turn_urls or _env_list("turn_urls"),
        turn_secret=_pick(args.turn_secret, "turn_secret", {}, "", None),
        tts=_pick(args.tts, "tts", {}, "", "piper"),
        decode_on_loop=not _pick(args.decode_thread, "decode_thread", {}, "", False, bool),
        turn_ttl_s=int(_pick(args.turn_ttl_s, "turn_ttl_s", {}, "", 600, int)),
        header_timeout_s=float(_pick(args.header_timeout_s, "header_timeout_s", {}, "", 10.0,
                                     float)),
        body_timeout_s=float(_pick(args.body_timeout_s, "body_timeout_s", {}, "", 10.0, float)),
        max_connections=int(_pick(args.max_connections, "max_connections", {}, "", 512, int)),
        max_connections_per_address=int(_pick(args.max_connections_per_address,
                                              "max_connections_per_address", {}, "", 32, int)),
        offers_per_minute=int(_pick(args.offers_per_minute, "offers_per_minute", {}, "", 10,
                                    int)),
        max_pending_per_address=int(_pick(args.max_pending_per_address,
                                          "max_pending_per_address", {}, "", 4, int)),
        limit_exempt=_exempt(args.limit_exempt or _env_list("limit_exempt")),
        trusted_proxies=_networks("--trusted-proxy",
                                  args.trusted_proxies or _env_list("trusted_proxies")),
        hsts_max_age_s=int(_pick(args.hsts_max_age_s, "hsts_max_age_s", {}, "", 15_552_000,
                                 int)),
        workers=_workers(_pick(getattr(args, "workers", None), "workers", {}, "", "auto")),
        node_id=_pick(getattr(args, "node_id", None), "node_id", {}, "", "") or _node_id(),
        redis_url=_pick(getattr(args, "redis_url", None), "redis_url", {}, "", None),
        cluster_secret=_pick(getattr(args, "cluster_secret", None), "cluster_secret", {}, "",
                             None),
        internal_host=_pick(getattr(args, "internal_host", None), "internal_host", {}, "",
                            "127.0.0.1"),
        internal_port=int(_pick(getattr(args, "internal_port", None), "internal_port", {}, "",
                                0, int)),
        public_address=_pick(getattr(args, "public_address", None), "public_address", {}, "",
                             None),
        udp_ports=_udp_ports(_pick(getattr(args, "udp_ports", None), "udp_ports", {}, "",
                                   None)),
        drain_timeout_s=float(_pick(getattr(args, "drain_timeout_s", None), "drain_timeout",
                                    {}, "", 600.0, float)),
        metrics_token=_pick(getattr(args, "metrics_token", None), "metrics_token", {}, "",
                            None),
        call_log=_pick(getattr(args, "call_log", None), "call_log", {}, "", None, Path),
        metrics=not _pick(getattr(args, "no_metrics", None), "no_metrics", {}, "", False, bool),
        max_call_s=float(_pick(getattr(args, "max_call_s", None), "max_call_s", {}, "", 0.0,
                               float)),
        record_dir=_pick(getattr(args, "record_dir", None), "record_dir", {}, "", None, Path),
        record_max_s=float(_pick(getattr(args, "record_max_s", None), "record_max_s", {}, "",
                                 3600.0, float)),
    )
    _check_limits(cfg)
    return cfg


def _workers(value: Any) -> int:
    """A number of workers, or "auto": the cores this process may run on."""
    text = str(value).strip().lower()
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers: expected a number or 'auto', got {value!r}") from None
    if count < 1:
        raise ValueError("--workers must be >= 1")
    return count


def _node_id() -> str:
    """A name unique enough for a cluster: the host's, and a suffix per run."""
    return f"{socket.gethostname() or 'node'}-{secrets.token_hex(3)}"


def _udp_ports(value: str | None) -> tuple[int, int] | None:
    try:
        return parse_port_range(value) if value else None
    except ValueError as exc:
        raise ValueError(f"--udp-ports: {exc}") from None


def _exempt(given: list[str]) -> list[str]:
    """Networks the per-address limits skip: the default, or the given ones ('none': none)."""
    if not given:
        return list(DEFAULT_LIMIT_EXEMPT)
    if any(g.strip().lower() == "none" for g in given):
        return []
    for network in given:
        ipaddress.ip_network(network.strip(), strict=False)  # ValueError names the bad one
    return [g.strip() for g in given]


def _networks(flag: str, given: list[str]) -> list[str]:
    """Addresses or CIDR networks, checked (a ValueError names the flag and the bad one)."""
    for network in given:
        try:
            ipaddress.ip_network(network.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    return [g.strip() for g in given]


def _check_limits(cfg: ServeConfig) -> None:
    if cfg.max_calls < 0:
        raise ValueError("--max-calls must be >= 0")
    if cfg.redis_url and not cfg.cluster_secret:
        raise ValueError("--redis-url needs --cluster-secret (the same on every node)")
    if cfg.redis_url and cfg.internal_host in ("0.0.0.0", "::", ""):
        raise ValueError("--internal-host must be an address other nodes can reach under "
                         "--redis-url, not a wildcard")
    if cfg.public_address:
        try:
            ipaddress.ip_address(cfg.public_address)
        except ValueError:
            raise ValueError(f"--public-address: {cfg.public_address!r} is not an IP "
                             "address") from None
    if cfg.max_call_s < 0:
        raise ValueError("--max-call-s must be >= 0 (0: no limit)")
    if cfg.record_max_s <= 0:
        raise ValueError("--record-max-s must be > 0")
    if cfg.drain_timeout_s < 0:
        raise ValueError("--drain-timeout must be >= 0")
    if cfg.udp_ports is not None:
        size = cfg.udp_ports[1] - cfg.udp_ports[0] + 1
        if size < cfg.workers:
            raise ValueError(f"--udp-ports: {size} ports cannot be split between "
                             f"{cfg.workers} workers")
    if cfg.turn_ttl_s <= 0:
        raise ValueError("--turn-ttl-s must be > 0")
    if cfg.header_timeout_s <= 0 or cfg.body_timeout_s <= 0:
        raise ValueError("--header-timeout-s and --body-timeout-s must be > 0")
    for name in ("max_connections", "max_connections_per_address", "offers_per_minute",
                 "max_pending_per_address", "hsts_max_age_s"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 turns it off)")
