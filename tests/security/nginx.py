"""A real nginx (Debian's `nginx` package) terminating TLS in front of rtc-agent.

One process (`master_process off`, `daemon off`), everything in a temporary
folder, listening on a free loopback port; the proxy block is the one
docs/deployment.md recommends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.ports import loopback_port

MISSING = ("nginx is missing: these tests drive a real nginx. Install Debian's package "
           "(`apt-get install -y --no-install-recommends nginx`, which "
           "scripts/system-deps.sh should do)")

# The location block of docs/deployment.md, section "Behind a reverse proxy".
PROXY_BLOCK = """
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
"""

CONF = """
master_process off;
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # offers are at most 64 KiB: kept in memory, never in a temporary file
    client_max_body_size 128k;
    client_body_buffer_size 128k;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
{proxy}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path, or the test fails saying how to get it (never a skip)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None)
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def write_conf(folder: Path, upstream_port: int, cert: Path, key: Path) -> tuple[Path, int]:
    """nginx.conf in `folder` for a free loopback port: (its path, the port)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = loopback_port()
    conf = folder / "nginx.conf"
    conf.write_text(CONF.format(dir=folder, port=port, cert=cert, key=key,
                                proxy=PROXY_BLOCK.format(upstream=upstream_port)))
    return conf, port


def _output(folder: Path) -> BinaryIO:
    return (folder / "output.log").open("wb")


def what_it_said(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in
                     (folder / "output.log", folder / "error.log") if p.exists())


@contextlib.asynccontextmanager
async def nginx_proxy(folder: Path, upstream_port: int, cert: Path, key: Path,
                      ) -> AsyncIterator[int]:
    """nginx with TLS on a free loopback port, proxying to `upstream_port`; yields its port."""
    binary = nginx_binary()
    conf, port = write_conf(folder, upstream_port, cert, key)
    with _output(folder) as out:
        # -p: the prefix; -e: the error log from the start, before the config is read
        proc = await asyncio.create_subprocess_exec(
            binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while not await _listening(port):
            if proc.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start (exit {proc.returncode}):\n"
                            f"{what_it_said(folder)}", pytrace=False)
            await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
