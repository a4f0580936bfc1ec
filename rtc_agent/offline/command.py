"""Run the offline Realtime backend: a local server for the OpenAI Realtime protocol.

Prints `REALTIME_URL ws://HOST:PORT/v1/realtime` once listening (use --port 0 for a
free port), then serves until SIGTERM/SIGINT. Tested with the official `openai`
SDK (plain package; its `realtime` extra pins websockets<16, but the SDK works with
the websockets 17 installed here).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys

from rtc_agent import ConfigError, logs
from rtc_agent.lifeline import set_parent_death_signal, watch_parent
from rtc_agent.offline.driver import Limits
from rtc_agent.offline.process import RECOGNIZER_RESTART_LINE
from rtc_agent.offline.server import (
    IDLE_TIMEOUT_S,
    OfflineServerConfig,
    RealtimeServer,
    build_engines,
)

log = logging.getLogger(__name__)

# Why the listening socket could not be had, as one line says it (cli.main prints it).
_BIND_ERRORS = {errno.EADDRINUSE: "port {port} on {host} is in use (--port)",
                errno.EADDRNOTAVAIL: "{host} is not an address of this machine (--host)",
                errno.EACCES: "port {port} on {host}: permission denied (--port)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port (0: pick a free one)")
    p.add_argument("--api-key", default=None,
                   help="require this key (bearer, api-key header/query or subprotocol); "
                        "default: accept any")
    p.add_argument("--tts", choices=["piper", "espeak"], default="piper",
                   help="speech synthesis engine")
    p.add_argument("--tts-cache", type=int, default=512, metavar="N",
                   help="keep the last N synthesized sentences (0: no cache)")
    p.add_argument("--max-buffer-s", type=float, default=60.0,
                   help="max seconds of buffered input audio (older audio is dropped)")
    p.add_argument("--max-session-s", type=float, default=None,
                   help="session length limit (default: 3600 GA, 1800 beta, like the cloud)")
    p.add_argument("--idle-timeout-s", type=float, default=IDLE_TIMEOUT_S,
                   help="close a session after this many seconds without a client event "
                        f"(default {IDLE_TIMEOUT_S:g}: the cloud documents no idle limit, "
                        "but a live call streams audio all the time; 0: never)")
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                   help="larger client messages get an error event")
    p.add_argument("--audio-lead-ms", type=int, default=2000,
                   help="reply audio sent at once before pacing starts (0: never pace)")
    p.add_argument("--audio-speed", type=float, default=2.0,
                   help="after the lead, send reply audio at this multiple of real time")
    p.add_argument("--no-compression", action="store_true",
                   help="refuse permessage-deflate (saves CPU on loopback; the cloud offers it)")
    p.add_argument("--llm-url", default=None,
                   help="OpenAI-compatible base URL for replies (e.g. http://127.0.0.1:8080/v1);"
                        " default: built-in rules")
    p.add_argument("--llm-model", default="default", help="model name sent to --llm-url")
    p.add_argument("--llm-api-key", default=None, help="bearer key for --llm-url")
    p.add_argument("--log-level", default="WARNING")
    # Set by a supervising parent (rtc_agent.offline.process), not meant for people.
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--parent-death-signal", action="store_true", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> OfflineServerConfig:
    sock = None
    if args.listen_fd is not None:  # a listening socket the supervisor keeps across restarts
        sock = socket.socket(fileno=args.listen_fd)
        sock.setblocking(False)
    return OfflineServerConfig(
        host=args.host, port=args.port, api_key=args.api_key, sock=sock,
        limits=Limits(max_message_bytes=args.max_message_bytes, max_buffer_s=args.max_buffer_s,
                      audio_lead_ms=args.audio_lead_ms, audio_speed=args.audio_speed),
        max_session_s=args.max_session_s, idle_timeout_s=args.idle_timeout_s,
        compression=not args.no_compression,
    )


async def serve_forever(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if args.parent_pid is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    else:
        # Supervised: the parent decides when this ends (it closes our stdin). A Ctrl-C
        # in the terminal, or systemd signalling the whole group, reaches us too, and
        # must not take the speech engines from calls the parent is still draining.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        watch_parent(args.parent_pid, stop, loop)
    # Listen (and announce the URL) first and load the models meanwhile: a restarted
    # backend takes its callers back sooner; sessions wait for the engines if need be.
    loading = loop.run_in_executor(None, lambda: build_engines(
        args.tts, args.tts_cache, args.llm_url, args.llm_model, args.llm_api_key,
        on_recognizer_restart=_report_recognizer_restart))
    async with RealtimeServer(config_from_args(args), loading) as server:
        print(f"REALTIME_URL {server.url}", flush=True)
        engines = await loading  # a failure here ends the process (and the supervisor retries)
        # Warm the engines after announcing the URL, so a parent process is not kept
        # waiting, yet the first turn rarely pays for model loading.
        warm = [loop.run_in_executor(None, engines.synthesizer.synthesize, "Hello."),
                loop.run_in_executor(None, getattr(engines.recognizer, "warm", lambda: None))]
        await stop.wait()
        for fut in warm:
            fut.cancel()
        close = getattr(engines.recognizer, "close", None)
        if close is not None:  # its worker processes end with us, not after
            await loop.run_in_executor(None, close)


def _report_recognizer_restart(restarts: int) -> None:
    """Tell the supervising parent (on stdout, as the URL) for its /healthz."""
    print(RECOGNIZER_RESTART_LINE, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.parent_pid is not None:
        if args.parent_death_signal:
            set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != args.parent_pid:  # the parent died before the signal was armed
            return 1
    logs.configure(args.log_level)
    try:
        asyncio.run(serve_forever(args))
    except OSError as exc:
        if args.listen_fd is not None or exc.errno not in _BIND_ERRORS:
            raise
        raise ConfigError(_BIND_ERRORS[exc.errno].format(port=args.port, host=args.host)
                          ) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtc-agent realtime-server", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
