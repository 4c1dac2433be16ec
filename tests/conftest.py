"""Shared fixtures: a private redis-server, token stores on both real backends, a key ring."""

from __future__ import annotations

import contextlib
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from gateway.secret import Secret
from gateway.store.base import TokenStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from gateway.tokens.keys import KeyFile, KeyRing, MasterKey
from tests.redis_server import RedisServer

pytest_plugins = ["tests.logcapture"]

STORE_TIMEOUT = 5.0
UNAVAILABLE_TIMEOUT = 0.2
"""Store timeout in seconds for tests that expect a call to fail because the backend is down."""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session; tests that kill it start their own instead."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop, kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


class StoreBackend(ABC):
    """A real backend that tests can open stores on and take down for a while."""

    name: str

    def __init__(self) -> None:
        self.opened: list[TokenStore] = []

    def open(self, *, timeout: float = STORE_TIMEOUT) -> TokenStore:
        """Open a new store object, with its own connections, on the same data."""
        store = self._open(timeout)
        self.opened.append(store)
        return store

    @abstractmethod
    def _open(self, timeout: float) -> TokenStore: ...

    @abstractmethod
    def unavailable(self) -> contextlib.AbstractContextManager[None]:
        """Make writes fail for stores opened with ``UNAVAILABLE_TIMEOUT`` until the exit."""


class SqliteBackend(StoreBackend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self, timeout: float) -> TokenStore:
        return SqliteStore(self.path, timeout=timeout)

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[None]:
        # Another process holding the write lock is how a SQLite store stops taking writes.
        holder = sqlite3.connect(self.path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()


class RedisBackend(StoreBackend):
    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        super().__init__()
        self.server = server

    def _open(self, timeout: float) -> TokenStore:
        return RedisStore(self.server.url, timeout=timeout)

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """Each real backend in turn, empty at the start of the test."""
    chosen: StoreBackend
    if request.param == "sqlite":
        chosen = SqliteBackend(tmp_path / "store" / "tokens.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
        chosen = RedisBackend(server)
    yield chosen
    for store in chosen.opened:
        await store.close()


@pytest.fixture
def store(backend: StoreBackend) -> TokenStore:
    return backend.open()


@pytest.fixture
def key_ring() -> KeyRing:
    """A key ring with fixed keys: master keys 1 and 2 (primary 2) and an index key."""
    return make_key_ring(primary=2)


def make_key_ring(*, primary: int = 2, index_key: bytes = bytes(range(32, 64))) -> KeyRing:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    master_keys = tuple(
        MasterKey(version, Secret(bytes([version]) * 32), created)
        for version in range(1, primary + 1)
    )
    return KeyRing(KeyFile(False, primary, master_keys, Secret(index_key)))
