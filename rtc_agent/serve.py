"""`rtc-agent serve`: choose the Realtime service, start the signaling server, run.

The composition root: with no cloud service configured it starts the offline
Realtime server as a child process (`rtc_agent.offline.process`), then serves
`rtc_agent.signaling.app` over HTTP or HTTPS until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from rtc_agent import config as config_module
from rtc_agent import logs
from rtc_agent.config import ServeConfig
from rtc_agent.ice import restrict_host_addresses
from rtc_agent.offline.process import OfflineProcess
from rtc_agent.realtime.service import offline_service, service_from_settings
from rtc_agent.signaling.app import SignalingServer, create_app
from rtc_agent.signaling.limits import GuardedSite
from rtc_agent.tools.registry import ToolRegistry
from rtc_agent.tools.search import search_tool

log = logging.getLogger(__name__)

LINGERING_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_module.add_arguments(parser)


def build_tools(cfg: ServeConfig) -> ToolRegistry:
    tools = ToolRegistry()
    tools.register(search_tool(cfg.search_dir, timeout_s=cfg.tool_timeout_s))
    return tools


@contextlib.asynccontextmanager
async def running(cfg: ServeConfig) -> AsyncIterator[SignalingServer]:
    """Start the Realtime service (a child process when offline) and the HTTP site.

    With `cfg.port == 0` the chosen port is written back into `cfg.port`.
    """
    if cfg.ice_addresses:
        restrict_host_addresses(cfg.ice_addresses)
    child: OfflineProcess | None = None
    service = service_from_settings(realtime_url=cfg.realtime_url, model=cfg.model,
                                    beta=cfg.realtime_beta)
    if service is None:
        child = OfflineProcess(["--tts", cfg.tts, *cfg.offline_args])
        service = offline_service(await child.start())
    runner: web.AppRunner | None = None
    try:
        server = SignalingServer(cfg, service, build_tools(cfg))
        if child is not None:  # supervised: /healthz and /offer follow its state
            offline = child
            server.backend_state = lambda: offline.state
            server.backend_restarts = lambda: offline.restarts
        ssl_context = None
        if cfg.https or cfg.cert:
            from rtc_agent.signaling.certs import ensure_certs, https_context

            ssl_context = https_context(str(cfg.cert) if cfg.cert else None,
                                        str(cfg.key) if cfg.key else None, str(cfg.cert_dir))
            if cfg.cert is None:
                server.ca_cert = ensure_certs(cfg.cert_dir).ca_cert
        # keepalive_timeout: aiohttp's own idle limit, as a second line behind the
        # guard's deadline (GuardedSite), which also covers the first request's head.
        # lingering_time: how long a body nobody wanted (a refused offer) is read and
        # dropped before closing; aiohttp's 10 s would let a stalled body hold on.
        runner = web.AppRunner(create_app(server), access_log=None,
                               keepalive_timeout=cfg.header_timeout_s,
                               lingering_time=LINGERING_S)
        await runner.setup()
        site = GuardedSite(runner, cfg.host, cfg.port, limits=server.limits,
                           ssl_context=ssl_context)
        await site.start()
        if cfg.port == 0:
            cfg.port = runner.addresses[0][1]
        server.scheme = "https" if ssl_context else "http"
        log.info("rtc-agent serving %s://%s:%s with backend %s (%s)", server.scheme, cfg.host,
                 cfg.port, service.kind, service.describe())
        if cfg.trusted_proxies:
            log.info("believing X-Forwarded-Proto/-Host/-For from %s (--trusted-proxy)",
                     ", ".join(cfg.trusted_proxies))
        yield server
    finally:
        if runner is not None:
            await runner.cleanup()
        if child is not None:
            await child.stop()


async def serve(cfg: ServeConfig, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running(cfg) as server:
        print(f"rtc-agent listening on {server.scheme}://{cfg.host}:{cfg.port} "
              f"(backend: {server.service.kind})", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    logs.configure(getattr(args, "log_level", "INFO"))
    cfg = config_module.from_args(args)
    try:
        # uvloop carries measurably more calls per core (see docs/benchmarks.md).
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(cfg))
    return 0
