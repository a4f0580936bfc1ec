"""A real redis-server per test (no mocks): the registry's behaviour is Redis's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.redis_server import REDIS_SERVER, RedisServer, available


def _server(password: str | None = None) -> Iterator[RedisServer]:
    if not available():
        pytest.skip(f"redis-server not found ({REDIS_SERVER}); apt-get install redis-server")
    server = RedisServer(password=password)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _server()


@pytest.fixture
def redis_server_with_password() -> Iterator[RedisServer]:
    yield from _server(password="s3cret-Pa55word")
