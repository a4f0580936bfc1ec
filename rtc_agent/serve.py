"""`rtc-agent serve`: choose the Realtime service, start the signaling server, run.

The composition root. With `--workers 1` one process does everything: with no
cloud service configured it starts the offline Realtime server as a child
(`rtc_agent.offline.process`), then serves `rtc_agent.signaling.app` over HTTP
or HTTPS. With more workers, `rtc_agent.cluster.supervisor` runs the node and
starts each worker as `python -m rtc_agent.serve`, which lands in `worker_main`
here and serves the same app on the node's shared socket.

Stopping: the first SIGTERM/SIGINT drains (no new calls; current ones go on until
they end or --drain-timeout passes, then end with `server_shutdown`); a second
ends at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from rtc_agent import ConfigError, logs
from rtc_agent import config as config_module
from rtc_agent.cluster.forward import Forwarder
from rtc_agent.cluster.membership import Membership
from rtc_agent.cluster.node_table import NodeTable
from rtc_agent.cluster.registry import RedisRegistry
from rtc_agent.cluster.supervisor import NodeSupervisor, WorkerSpec, read_spec
from rtc_agent.config import ServeConfig
from rtc_agent.ice import (
    announce_public_address,
    answer_checks_at_once,
    restrict_host_addresses,
    restrict_udp_ports,
    split_port_range,
)
from rtc_agent.lifeline import set_parent_death_signal, watch_parent
from rtc_agent.observability.call_log import CallLog
from rtc_agent.observability.metrics import sample_loop_lag
from rtc_agent.offline.process import OfflineProcess
from rtc_agent.realtime.client import probe
from rtc_agent.realtime.service import offline_service, service_from_settings
from rtc_agent.signaling.app import SignalingServer, create_app, create_internal_app
from rtc_agent.signaling.limits import GuardedSite
from rtc_agent.tools.registry import ToolRegistry
from rtc_agent.tools.search import search_tool

log = logging.getLogger("rtc_agent.serve")  # also when run as __main__ (a worker)

LINGERING_S = 2.0
UPSTREAM_CHECK_TIMEOUT_S = 10.0  # the check at start: a call would wait as long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_module.add_arguments(parser)


def build_tools(cfg: ServeConfig) -> ToolRegistry:
    tools = ToolRegistry()
    tools.register(search_tool(cfg.search_dir, timeout_s=cfg.tool_timeout_s))
    if cfg.mcp_servers:
        from rtc_agent.tools.mcp import McpTools  # the MCP SDK takes a second to import

        tools.add_provider(McpTools(cfg.mcp_servers, tool_timeout_s=cfg.tool_timeout_s))
    return tools


def share(total: int, parts: int, index: int) -> int:
    """Worker `index`'s share of `total` (calls): even, the first ones one larger."""
    return total // parts + (1 if index < total % parts else 0)


def _configure_ice(cfg: ServeConfig, index: int, workers: int) -> None:
    answer_checks_at_once()
    if cfg.ice_addresses:
        restrict_host_addresses(cfg.ice_addresses)
    if cfg.udp_ports is not None:
        restrict_udp_ports(split_port_range(cfg.udp_ports, workers, index))
    if cfg.public_address:
        announce_public_address(cfg.public_address)


def _prepare_record_dir(path: Path) -> None:
    """Recordings are personal data: a directory only we can read, writable now, not at
    the first call."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = path / f".probe-{os.getpid()}"
    try:
        probe.touch(mode=0o600)
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--record-dir {path}: not writable ({exc.strerror})") from None


@contextlib.asynccontextmanager
async def running(cfg: ServeConfig, spec: WorkerSpec | None = None
                  ) -> AsyncIterator[SignalingServer]:
    """Start the Realtime service (a child process when offline, unless the node's
    supervisor runs it) and the HTTP site; as worker `spec.index` of a node, on the
    node's shared socket. With `cfg.port == 0` the chosen port is written back."""
    index, workers = (spec.index, spec.workers) if spec else (0, 1)
    _configure_ice(cfg, index, workers)
    if cfg.record_dir is not None:
        _prepare_record_dir(cfg.record_dir)
    table = NodeTable(spec.table_fd, spec.workers) if spec else None
    child: OfflineProcess | None = None
    backend_state: Callable[[], str] | None = None
    backend_restarts: Callable[[], int] | None = None
    recognizer_restarts: Callable[[], int] | None = None
    service = service_from_settings(realtime_url=cfg.realtime_url, model=cfg.model,
                                    beta=cfg.realtime_beta)
    if service is None and spec is not None and spec.offline_url and table is not None:
        node_table = table  # the supervisor runs the backend and reports its state here
        service = offline_service(spec.offline_url)
        backend_state = lambda: str(node_table.node().get("backend_state", "up"))  # noqa: E731
        backend_restarts = lambda: int(node_table.node().get("backend_restarts", 0))  # noqa: E731
        recognizer_restarts = lambda: int(  # noqa: E731
            node_table.node().get("recognizer_restarts", 0))
    elif service is None:
        child = OfflineProcess(["--tts", cfg.tts, *cfg.offline_args])
        service = offline_service(await child.start())
        offline = child
        backend_state = lambda: offline.state  # noqa: E731
        backend_restarts = lambda: offline.restarts  # noqa: E731
        recognizer_restarts = lambda: offline.recognizer_restarts  # noqa: E731
    registry = RedisRegistry(cfg.redis_url) if cfg.redis_url else None
    runners: list[web.AppRunner] = []
    server: SignalingServer | None = None
    reporting: asyncio.Task[None] | None = None
    checking: asyncio.Task[None] | None = None
    try:
        server = SignalingServer(cfg, service, build_tools(cfg))
        server.backend_state, server.backend_restarts = backend_state, backend_restarts
        server.recognizer_restarts = recognizer_restarts
        if cfg.call_log is not None:
            server.call_log = CallLog(cfg.call_log)
        internal_url = ""
        clustered = registry is not None or workers > 1
        if clustered:
            assert cfg.cluster_secret, "a node's workers share a secret (the supervisor's)"
            internal = web.AppRunner(create_internal_app(server, cfg.cluster_secret),
                                     access_log=None)
            await internal.setup()
            runners.append(internal)
            if spec is not None:
                isock = socket.socket(fileno=os.dup(spec.internal_fd))
                isite: web.BaseSite = web.SockSite(internal, isock)
            else:
                isite = web.TCPSite(internal, cfg.internal_host, cfg.internal_port)
            await isite.start()
            host, port = internal.addresses[0][:2]
            internal_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            server.forwarder = Forwarder(cfg.cluster_secret)
        server.membership = Membership(
            node=cfg.node_id or "local", index=index, url=internal_url,
            capacity=share(cfg.max_calls, workers, index),
            load=lambda: len(server.calls) + server.pending, calls=server.calls.keys,
            calls_total=lambda: server.calls_total, table=table, registry=registry)
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
        runners.append(runner)
        sock = socket.socket(fileno=os.dup(spec.listen_fd)) if spec else None
        site = GuardedSite(runner, cfg.host, cfg.port, limits=server.limits,
                           ssl_context=ssl_context, sock=sock)
        await site.start()
        if cfg.port == 0:
            cfg.port = runner.addresses[0][1]
        server.scheme = "https" if ssl_context else "http"
        reporting = asyncio.create_task(_report(server), name="membership")
        checking = asyncio.create_task(_check_upstream(server, loud=index == 0),
                                       name="upstream-check")
        log.info("worker %s serving %s://%s:%s with backend %s (%s)", server.membership.id,
                 server.scheme, cfg.host, cfg.port, service.kind, service.describe())
        if cfg.trusted_proxies:
            log.info("believing X-Forwarded-Proto/-Host/-For from %s (--trusted-proxy)",
                     ", ".join(cfg.trusted_proxies))
        yield server
    finally:
        for task in (reporting, checking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if server is not None:
            await server.membership.leave()
        for each in reversed(runners):
            await each.cleanup()  # the public app's shutdown ends the calls still going
        if server is not None and server.forwarder is not None:
            await server.forwarder.close()
        if server is not None:
            await server.tools.aclose()
        if registry is not None:
            await registry.close()
        if table is not None:
            table.close()
        if server is not None and server.call_log is not None:
            server.call_log.close()
        if child is not None:
            await child.stop()


async def _check_upstream(server: SignalingServer, *, loud: bool) -> None:
    """Connect to the Realtime service once, as a call would, and say how it went in
    one line (by the node's first worker; the others log it at DEBUG), so a bad key
    is seen before the first caller meets it. `/healthz` then reports the state."""
    failed = await probe(server.service, UPSTREAM_CHECK_TIMEOUT_S)
    now = datetime.datetime.now(datetime.UTC)
    service = f"{server.service.kind} ({server.service.describe()})"
    if failed is None:
        server.upstream.ok(now)
        log.log(logging.INFO if loud else logging.DEBUG, "Realtime service %s: ok", service)
    else:
        server.upstream.failed(failed.kind, str(failed), now)
        log.log(logging.ERROR if loud else logging.DEBUG, "Realtime service %s: %s: %s",
                service, failed.kind, failed)


async def _report(server: SignalingServer) -> None:
    """The worker's background reporting: its load to the node and cluster, and how late
    its event loop runs (for the metrics)."""
    lag = None
    if server.config.metrics:
        lag = asyncio.create_task(sample_loop_lag(server.metrics, server.membership.index),
                                  name="loop-lag")
    try:
        await server.membership.run()
    finally:
        if lag is not None:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag


async def serve(cfg: ServeConfig, stop: asyncio.Event | None = None,
                spec: WorkerSpec | None = None) -> None:
    """Run until `stop` is set (at once) or a signal (drain first; see the docstring)."""
    stop = stop or asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (stop if drain.is_set() else drain).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    async with running(cfg, spec) as server:
        if spec is None:
            print(f"rtc-agent listening on {server.scheme}://{cfg.host}:{cfg.port} "
                  f"(backend: {server.service.kind})", flush=True)
            announce(cfg, server.scheme, cfg.port)
        await _first(stop.wait(), drain.wait())
        if drain.is_set() and not stop.is_set():
            log.info("worker %s draining: %d calls may go on for up to %.0f s",
                     server.membership.id, len(server.calls), cfg.drain_timeout_s)
            server.start_draining()
            deadline = loop.time() + cfg.drain_timeout_s
            await _first(stop.wait(), server.drained.wait(), asyncio.sleep(cfg.drain_timeout_s))
            if spec is not None and spec.workers > 1 and not server.calls:
                # Keep answering (/healthz, offers passed on to other nodes, requests about
                # other workers' calls) until the whole node is done, so no worker leaves
                # while its siblings still serve on the shared port.
                await _first(stop.wait(), server.membership.node_idle(),
                             asyncio.sleep(max(0.0, deadline - loop.time())))
            if server.calls:
                log.info("worker %s ending %d calls", server.membership.id, len(server.calls))


async def _first(*aws: object) -> None:
    """Wait until the first of these finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        # uvloop carries measurably more calls per core (see docs/benchmarks.md).
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


def run(args: argparse.Namespace) -> int:
    """`rtc-agent serve`. What the settings can get wrong is found before anything starts
    (ConfigError: one line and exit status 2, from cli.main); then the effective settings
    are printed, once for the whole node."""
    cfg = config_module.from_args(args)
    _check_startable(cfg)
    logs.configure(cfg.log_level)
    print("\n".join(config_module.describe(cfg, _backend(cfg))), flush=True)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        if cfg.workers > 1:
            supervisor = NodeSupervisor(
                cfg, on_listening=lambda scheme, port: announce(cfg, scheme, port))
            return runner.run(supervisor.run())
        runner.run(serve(cfg))
    return 0


def _check_startable(cfg: ServeConfig) -> None:
    """What would fail only after the backend started, or in every worker again: the
    recording folder, the call log, the TLS files, the ports."""
    if cfg.record_dir is not None:
        try:
            _prepare_record_dir(cfg.record_dir)  # before any worker starts
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        except OSError as exc:
            raise ConfigError(f"--record-dir {cfg.record_dir}: cannot be created "
                              f"({exc.strerror or exc})") from None
    if cfg.call_log is not None:
        try:
            os.close(os.open(cfg.call_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ConfigError(f"--call-log {cfg.call_log}: cannot be opened "
                              f"({exc.strerror or exc})") from None
    if cfg.https or cfg.cert:
        from rtc_agent.signaling.certs import https_context

        what = f"--cert {cfg.cert} / --key {cfg.key}" if cfg.cert else f"--cert-dir {cfg.cert_dir}"
        try:  # also makes the local CA's certificate once, not in each worker
            https_context(str(cfg.cert) if cfg.cert else None,
                          str(cfg.key) if cfg.key else None, str(cfg.cert_dir))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None
    config_module.check_port(cfg.host, cfg.port)
    if cfg.workers == 1 and cfg.redis_url and cfg.internal_port:
        config_module.check_port(cfg.internal_host, cfg.internal_port, "--internal-port")


def _backend(cfg: ServeConfig) -> config_module.Backend:
    service = service_from_settings(realtime_url=cfg.realtime_url, model=cfg.model,
                                    beta=cfg.realtime_beta)
    if service is None:
        return config_module.Backend("offline")
    return config_module.Backend.from_url(service.kind, service.url)


def announce(cfg: ServeConfig, scheme: str, port: int) -> None:
    """After the listening line, with --host 0.0.0.0 or ::: the URLs a phone on the LAN
    can open, and a warning when the HTTPS certificate does not name those addresses
    (the phone's browser would refuse it)."""
    if cfg.host not in ("0.0.0.0", "::", ""):
        return
    from rtc_agent.signaling.addresses import host_addresses, lan_addresses, phone_urls
    from rtc_agent.signaling.certs import CertPaths, certificate_gaps

    addresses = lan_addresses(host_addresses(), cfg.host)
    if not addresses:
        print("no LAN address found on this machine: phones cannot reach it", flush=True)
        return
    print("phones on the same network can open " + "  ".join(
        phone_urls(scheme, port, addresses)), flush=True)
    if scheme != "https":
        print("  (a phone's browser lets only HTTPS pages use the microphone: add --https, "
              "see docs/deployment.md)", flush=True)
        return
    cert = cfg.cert or CertPaths(cfg.cert_dir).cert
    try:
        gaps = certificate_gaps(cert, addresses)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the certificate %s to check its addresses: %s", cert, exc)
        return
    if gaps:
        remedy = (f"run `rtc-agent certs --dir {cfg.cert_dir}` to make one that does (the "
                  "CA stays, so phones keep trusting it)" if cfg.cert is None else
                  "open the page by a name the certificate covers")
        log.warning("the certificate %s does not cover %s: a phone opening that address "
                    "will refuse the page; %s", cert, ", ".join(map(str, gaps)), remedy)


def worker_main(argv: list[str] | None = None) -> int:
    """A worker process of `serve --workers N` (started by the supervisor, not by people)."""
    parser = argparse.ArgumentParser(prog="rtc-agent worker")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--parent-death-signal", action="store_true")
    args = parser.parse_args(argv)
    if args.parent_death_signal:
        set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != args.parent_pid:  # the supervisor died before the signal was armed
        return 1
    spec = read_spec(0)
    logs.configure(os.environ.get("RTC_AGENT_LOG_LEVEL", "INFO"),
                   process=f"{spec.config.node_id}/{spec.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides (see its docstring)

    async def main() -> None:
        stop = asyncio.Event()
        watch_parent(args.parent_pid, stop, asyncio.get_running_loop())
        await serve(spec.config, stop, spec)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
