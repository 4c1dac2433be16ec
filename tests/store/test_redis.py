from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.errors import StoreError, StoreUnavailableError
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord
from gateway.store.redis import RedisStore
from tests.conftest import UNAVAILABLE_TIMEOUT
from tests.redis_server import RedisServer


def record(*, expires_at: float | None = None) -> StoredRecord:
    return StoredRecord(os.urandom(32), os.urandom(60), 1, expires_at)


@contextlib.asynccontextmanager
async def opened(
    server: RedisServer, *, store_timeout: float = 5.0, url: str | None = None
) -> AsyncIterator[RedisStore]:
    store = RedisStore(url or server.url, timeout=store_timeout)
    try:
        yield store
    finally:
        await store.close()


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


async def test_acknowledged_write_survives_kill(private_redis_server: RedisServer) -> None:
    items = [record(), record(expires_at=time.time() + 3600)]
    async with opened(private_redis_server) as store:
        await store.put_many([PutRequest(item) for item in items])
        private_redis_server.kill()
        private_redis_server.start()

        found = await store.get_many([item.lookup_key for item in items])

    assert found[0] == items[0]
    assert found[1] is not None
    assert found[1].blob == items[1].blob


async def test_store_recovers_after_restart(private_redis_server: RedisServer) -> None:
    async with opened(private_redis_server, store_timeout=UNAVAILABLE_TIMEOUT) as store:
        await store.ping()
        private_redis_server.stop()

        with pytest.raises(StoreUnavailableError) as caught:
            await store.get_many([os.urandom(32)])
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        with pytest.raises(StoreUnavailableError):
            await store.ping()

        private_redis_server.start()
        # The restarted server has an empty script cache, so this also reloads the script.
        assert await store.put_many([PutRequest(record())]) == [PutResult(PutStatus.STORED)]


async def test_hung_server_times_out(private_redis_server: RedisServer) -> None:
    assert private_redis_server.process is not None
    async with opened(private_redis_server, store_timeout=UNAVAILABLE_TIMEOUT) as store:
        await store.ping()
        private_redis_server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                await store.ping()
        finally:
            private_redis_server.process.send_signal(signal.SIGCONT)

        assert isinstance(caught.value.__cause__, redis.TimeoutError)
        await store.ping()


async def test_full_memory_is_unavailable(private_redis_server: RedisServer) -> None:
    with admin(private_redis_server) as client:
        client.config_set("maxmemory", "1")
    async with opened(private_redis_server) as store:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.put_many([PutRequest(record())])

    assert isinstance(caught.value.__cause__, redis.exceptions.OutOfMemoryError)


async def test_keys_named_by_hashes_with_expiry(redis_server: RedisServer) -> None:
    expiring, forever = record(expires_at=time.time() + 3600), record()
    index_key = os.urandom(32)
    async with opened(redis_server) as store:
        await store.put_many(
            [PutRequest(expiring, index_key=index_key, sealed_token=b"sealed"), PutRequest(forever)]
        )

    with admin(redis_server) as client:
        expiring_key = b"vg:r:" + expiring.lookup_key.hex().encode()
        entry_key = b"vg:i:" + index_key.hex().encode()
        assert client.exists(expiring_key, entry_key) == 2
        expire_ms = int(expiring.expires_at * 1000)  # type: ignore[operator]
        assert abs(client.pexpiretime(expiring_key) - expire_ms) <= 1
        assert client.pexpiretime(entry_key) == client.pexpiretime(expiring_key)
        assert client.pttl(b"vg:r:" + forever.lookup_key.hex().encode()) == -1


async def test_durability_warnings_name_settings(private_redis_server: RedisServer) -> None:
    with admin(private_redis_server) as client:
        client.config_set("appendonly", "no")
        client.config_set("appendfsync", "no")
        client.config_set("maxmemory-policy", "allkeys-lru")
    async with opened(private_redis_server) as store:
        warnings = await store.durability_warnings()

    assert len(warnings) == 3
    for setting in ("appendonly", "appendfsync", "maxmemory-policy"):
        assert sum(setting + " is" in warning for warning in warnings) == 1


async def test_everysec_fsync_accepted(private_redis_server: RedisServer) -> None:
    with admin(private_redis_server) as client:
        client.config_set("appendfsync", "everysec")
    async with opened(private_redis_server) as store:
        assert await store.durability_warnings() == []


async def test_config_denied_gives_one_warning(private_redis_server: RedisServer) -> None:
    with admin(private_redis_server) as client:
        client.acl_setuser(
            "gateway",
            enabled=True,
            passwords=["+test-only"],
            keys=["*"],
            commands=["+@all", "-config"],
        )
    url = f"redis://gateway:test-only@127.0.0.1:{private_redis_server.port}/0"
    async with opened(private_redis_server, url=url) as store:
        await store.ping()
        warnings = await store.durability_warnings()

    assert len(warnings) == 1
    assert "test-only" not in warnings[0]


async def test_script_error_is_store_error(redis_server: RedisServer) -> None:
    item = record()
    with admin(redis_server) as client:
        client.flushall()
        # A key of the wrong type under the record's name makes the script fail.
        client.rpush(b"vg:r:" + item.lookup_key.hex().encode(), b"x")
    async with opened(redis_server) as store:
        with pytest.raises(StoreError) as caught:
            await store.delete_many([item.lookup_key])

    assert not isinstance(caught.value, StoreUnavailableError)


async def test_entry_of_vanished_record_ignored(redis_server: RedisServer) -> None:
    index_key = os.urandom(32)
    first = record()
    async with opened(redis_server) as store:
        await store.put_many([PutRequest(first, index_key=index_key, sealed_token=b"first")])
        # Eviction or an operator can remove a record key and leave its index entry behind.
        with admin(redis_server) as client:
            client.delete(b"vg:r:" + first.lookup_key.hex().encode())

        result = await store.put_many(
            [PutRequest(record(), index_key=index_key, sealed_token=b"new")]
        )

    assert result == [PutResult(PutStatus.STORED)]


async def test_foreign_record_key_fails_scan(redis_server: RedisServer) -> None:
    with admin(redis_server) as client:
        client.flushall()
        client.set(b"vg:r:not-hex", b"x" * 40)
    async with opened(redis_server) as store:
        with pytest.raises(StoreError, match="does not end in a hex lookup key") as caught:
            await scan_to_end(store)

    assert not isinstance(caught.value, ValueError)


async def scan_to_end(store: RedisStore) -> None:
    cursor: str | None = None
    while True:
        _, cursor = await store.scan_records(cursor, 100)
        if cursor is None:
            return


async def test_prefix_glob_characters_escaped(redis_server: RedisServer) -> None:
    with admin(redis_server) as client:
        client.flushall()
    default_item, starred_item = record(), record()
    # Unescaped, the pattern "v*:r:*" of the prefix "v*" would match the default "vg:r:" keys too.
    starred = RedisStore(redis_server.url, timeout=5.0, prefix="v*")
    try:
        async with opened(redis_server) as default:
            await default.put_many([PutRequest(default_item)])
        await starred.put_many([PutRequest(starred_item)])

        found, cursor = await starred.scan_records(None, 100)
    finally:
        await starred.close()

    assert cursor is None
    assert [item.lookup_key for item in found] == [starred_item.lookup_key]
