from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError, StoreUnavailableError
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord
from gateway.store.sqlite import SqliteStore
from tests.conftest import UNAVAILABLE_TIMEOUT


def record(*, key_version: int = 1, expires_at: float | None = None) -> StoredRecord:
    return StoredRecord(os.urandom(32), os.urandom(60), key_version, expires_at)


@contextlib.asynccontextmanager
async def opened(path: Path, *, store_timeout: float = 5.0) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path, timeout=store_timeout)
    try:
        yield store
    finally:
        await store.close()


def query(path: Path, sql: str, *parameters: object) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql, parameters).fetchall()


async def test_write_visible_to_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    item = record(key_version=7)

    async with opened(path) as store:
        await store.put_many([PutRequest(item)])
        rows = query(
            path, "SELECT blob, key_version FROM records WHERE lookup_key = ?", item.lookup_key
        )

    assert rows == [(item.blob, 7)]
    async with opened(path) as reopened:
        assert await reopened.get_many([item.lookup_key]) == [item]


async def test_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tokens.db"

    async with opened(path) as store:
        await store.ping()

    assert path.is_file()


async def test_uses_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"

    async with opened(path):
        assert query(path, "PRAGMA journal_mode") == [("wal",)]


async def test_concurrent_writes_share_commit(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    async with opened(path) as store:
        await store.ping()
        items = [record() for _ in range(50)]

        # While another connection holds the write lock, the writer waits in its first group
        # and the other calls queue up behind it.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        writes = [asyncio.create_task(store.put_many([PutRequest(item)])) for item in items]
        await asyncio.sleep(0)
        before = store.committed_transactions
        holder.execute("ROLLBACK")
        holder.close()
        results = await asyncio.gather(*writes)

        assert before == 0
        assert results == [[PutResult(PutStatus.STORED)]] * 50
        assert 1 <= store.committed_transactions <= 2
        assert len(await store.get_many([item.lookup_key for item in items])) == 50


async def test_failed_group_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    async with opened(path, store_timeout=UNAVAILABLE_TIMEOUT) as store:
        await store.ping()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        batches = [[record(), record()] for _ in range(5)]
        try:
            results = await asyncio.gather(
                *(store.put_many([PutRequest(item) for item in batch]) for batch in batches),
                return_exceptions=True,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        for result in results:
            assert isinstance(result, StoreUnavailableError)
            assert isinstance(result.__cause__, sqlite3.OperationalError)
        assert query(path, "SELECT count(*) FROM records") == [(0,)]


async def test_purge_deletes_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    expired, live, forever = (
        record(expires_at=time.time() - 1),
        record(expires_at=time.time() + 3600),
        record(),
    )
    async with opened(path) as store:
        await store.put_many(
            [
                PutRequest(expired, index_key=os.urandom(32), sealed_token=b"old"),
                PutRequest(live, index_key=os.urandom(32), sealed_token=b"live"),
                PutRequest(forever),
            ]
        )

        purged = await store.purge_expired()

    assert purged == 2
    assert {row[0] for row in query(path, "SELECT lookup_key FROM records")} == {
        live.lookup_key,
        forever.lookup_key,
    }
    assert query(path, "SELECT sealed_token FROM index_entries") == [(b"live",)]


async def test_periodic_purge_runs(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SqliteStore(path, timeout=5.0, purge_interval=0.05)
    try:
        await store.put_many([PutRequest(record(expires_at=time.time() - 1))])
        for _ in range(100):
            if query(path, "SELECT count(*) FROM records") == [(0,)]:
                break
            await asyncio.sleep(0.05)
    finally:
        await store.close()

    assert query(path, "SELECT count(*) FROM records") == [(0,)]


async def test_key_version_lookup_uses_index(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    async with opened(path):
        plan = query(
            path, "EXPLAIN QUERY PLAN SELECT lookup_key FROM records WHERE key_version = 1"
        )

    assert "records_by_key_version" in str(plan)


async def test_newer_schema_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA user_version = 99")

    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path, timeout=5.0)


async def test_not_a_database_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    path.write_bytes(b"this is not a SQLite database, just some text " * 100)

    with pytest.raises(StoreError) as caught:
        SqliteStore(path, timeout=5.0)

    assert not isinstance(caught.value, StoreUnavailableError)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


async def test_unwritable_directory_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")

    with pytest.raises(StoreUnavailableError):
        SqliteStore(blocker / "tokens.db", timeout=5.0)


async def test_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tokens.db", timeout=5.0)
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.put_many([PutRequest(record())])
    with pytest.raises(StoreError, match="closed"):
        await store.get_many([os.urandom(32)])


async def test_close_finishes_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SqliteStore(path, timeout=5.0)
    items = [record() for _ in range(20)]

    writes = [asyncio.create_task(store.put_many([PutRequest(item)])) for item in items]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*writes)

    assert query(path, "SELECT count(*) FROM records") == [(20,)]


async def test_large_batch_over_parameter_limit(tmp_path: Path) -> None:
    items = [record() for _ in range(1200)]
    async with opened(tmp_path / "tokens.db") as store:
        await store.put_many([PutRequest(item) for item in items])

        found = await store.get_many([item.lookup_key for item in items])
        deleted = await store.delete_many([item.lookup_key for item in items])

    assert found == items
    assert deleted == 1200


async def test_entry_of_vanished_record_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    index_key = os.urandom(32)
    first = record()
    async with opened(path) as store:
        await store.put_many([PutRequest(first, index_key=index_key, sealed_token=b"first")])
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("DELETE FROM records WHERE lookup_key = ?", (first.lookup_key,))

        result = await store.put_many(
            [PutRequest(record(), index_key=index_key, sealed_token=b"new")]
        )

    assert result == [PutResult(PutStatus.STORED)]


async def test_new_store_is_private_to_its_user(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fresh" / "tokens.db", timeout=5.0)
    try:
        assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "fresh" / "tokens.db").stat().st_mode & 0o777 == 0o600
    finally:
        await store.close()


async def test_replaced_expired_record_drops_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    expired = record(expires_at=time.time() - 1)
    async with opened(path) as store:
        await store.put_many([PutRequest(expired, index_key=os.urandom(32), sealed_token=b"old")])
        replacement = StoredRecord(expired.lookup_key, os.urandom(40), 1, None)

        result = await store.put_many([PutRequest(replacement)])

    assert result == [PutResult(PutStatus.STORED)]
    assert query(path, "SELECT count(*) FROM index_entries") == [(0,)]
    assert query(path, "SELECT blob FROM records") == [(replacement.blob,)]


async def test_large_indexed_batch_over_parameter_limit(tmp_path: Path) -> None:
    index_keys = [os.urandom(32) for _ in range(1200)]
    sealed = [f"sealed {number}".encode() for number in range(1200)]
    async with opened(tmp_path / "tokens.db") as store:
        first = await store.put_many(
            [
                PutRequest(record(), index_key=index_key, sealed_token=token)
                for index_key, token in zip(index_keys, sealed, strict=True)
            ]
        )
        again = await store.put_many(
            [
                PutRequest(record(), index_key=index_key, sealed_token=b"x")
                for index_key in index_keys
            ]
        )

    assert first == [PutResult(PutStatus.STORED)] * 1200
    assert again == [PutResult(PutStatus.EXISTING, sealed_token=token) for token in sealed]


def test_processes_open_new_store_at_once(tmp_path: Path) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite reports SQLITE_BUSY at
    # once, without the busy timeout, to a connection that loses that race.
    paths = [tmp_path / str(number) / "tokens.db" for number in range(40)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        barrier = manager.Barrier(3)
        failures = pool.starmap(_open_each_at_once, [(paths, barrier)] * 3)

    assert failures == [[], [], []]


def _open_each_at_once(paths: list[Path], barrier: Any) -> list[str]:
    """Open and close a store at each path once all processes are ready; return the errors."""

    async def open_and_close(path: Path) -> None:
        store = SqliteStore(path, timeout=5.0)
        await store.close()

    failures = []
    for path in paths:
        barrier.wait()
        try:
            asyncio.run(open_and_close(path))
        except StoreUnavailableError as error:
            failures.append(str(error))
    return failures


def test_wal_stays_bounded_with_two_writer_processes(tmp_path: Path) -> None:
    # Two processes write to one file all the time, as two pipeline workers do.
    path = tmp_path / "tokens.db"
    limit = 1024 * 1024
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        per_process = pool.starmap(_write_and_watch_wal, [(path, limit)] * 2)
    sizes = sorted(size for process_sizes in per_process for size in process_sizes)

    # The writers race for the write lock, so a checkpoint sometimes loses for a few commits
    # and the WAL file passes the limit for a while. Without these checkpoints it keeps growing: in
    # five runs here its median size was 6 to 16 MiB.
    assert sizes[len(sizes) // 2] < 2 * limit
    assert query(path, "SELECT count(*) FROM records") == [(24000,)]


def _write_and_watch_wal(path: Path, limit: int) -> list[int]:
    """Write 60 batches to the store at ``path``; return the WAL file's size after each."""
    wal = path.with_name(path.name + "-wal")

    async def write() -> list[int]:
        sizes = []
        store = SqliteStore(path, timeout=5.0, wal_checkpoint_bytes=limit)
        try:
            for _ in range(60):
                await store.put_many([PutRequest(record()) for _ in range(200)])
                sizes.append(wal.stat().st_size if wal.exists() else 0)
                # A pipeline worker seals its next batch between writes.
                await asyncio.sleep(0.005)
        finally:
            await store.close()
        return sizes

    return asyncio.run(write())


async def test_long_reader_does_not_fail_writers(tmp_path: Path) -> None:
    # A read transaction that stays open (a backup, a sqlite3 shell) keeps the truncating
    # checkpoint from finishing, and the checkpoint holds the write lock while it waits for
    # readers. A checkpoint that waited for the busy timeout made the other store's writes
    # time out on that lock.
    path = tmp_path / "tokens.db"
    first = SqliteStore(path, timeout=2.0, wal_checkpoint_bytes=64 * 1024)
    second = SqliteStore(path, timeout=2.0, wal_checkpoint_bytes=64 * 1024)
    await first.put_many([PutRequest(record())])
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM records").fetchone()
    failures: list[StoreUnavailableError] = []

    async def write(store: SqliteStore) -> None:
        for _ in range(30):
            try:
                await store.put_many([PutRequest(record()) for _ in range(50)])
            except StoreUnavailableError as error:
                failures.append(error)

    try:
        await asyncio.gather(write(first), write(second))
    finally:
        reader.close()
        await first.close()
        await second.close()

    assert failures == []
    assert query(path, "SELECT count(*) FROM records") == [(3001,)]


def test_busy_writer_processes_take_turns(tmp_path: Path) -> None:
    # Each process keeps its writer thread busy, as a pipeline worker that submits its next
    # batch before the last one is written does. A writer that waits for the lock must still
    # get it within the timeout. With SQLite's own busy handler, which sleeps up to 100 ms
    # between tries, one process timed out in three runs of three.
    path = tmp_path / "tokens.db"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        failures = pool.starmap(_write_back_to_back, [(path,)] * 2)

    assert failures == [0, 0]
    assert query(path, "SELECT count(*) FROM records") == [(2 * 15 * 3000,)]


def _write_back_to_back(path: Path) -> int:
    """Write 15 batches, each submitted before the one before it is written; return how many
    failed."""

    def batch() -> list[PutRequest]:
        return [
            PutRequest(record(), index_key=os.urandom(32), sealed_token=b"sealed")
            for _ in range(3000)
        ]

    async def write() -> int:
        store = SqliteStore(path, timeout=0.5)
        failures = 0
        try:
            pending = asyncio.ensure_future(store.put_many(batch()))
            for number in range(15):
                following = asyncio.ensure_future(store.put_many(batch())) if number < 14 else None
                try:
                    await pending
                except StoreUnavailableError:
                    failures += 1
                if following is None:
                    break
                pending = following
        finally:
            await store.close()
        return failures

    return asyncio.run(write())
