"""The embedded token store: one SQLite database file in WAL mode with ``synchronous=FULL``.

Writes go through one writer thread. It takes every ``put_many``, ``delete_many`` and purge
call waiting at that moment into one transaction (group commit), so one fsync serves them all
and durability does not cap throughput at one fsync per request. Each caller's future is
resolved on its event loop after COMMIT returns. If the transaction fails, every call in it
fails and none of it is written. Reads run on a second thread with its own connection, which
WAL lets proceed while a write transaction is open.

Rows whose ``expires_at`` (Unix seconds) has passed are invisible to every read and are deleted
by a periodic purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import StoreError, StoreUnavailableError
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord, TokenStore
from gateway.store.sqlite_schema import create_schema, purge_expired_rows

logger = logging.getLogger("gateway.store")

MAX_GROUP_CALLS: Final = 256
"""Maximum number of calls that one write transaction serves, which bounds how long it holds
the write lock."""
WAL_CHECKPOINT_BYTES: Final = 64 * 1024 * 1024
"""Size of the WAL file above which the writer runs a truncating checkpoint after a commit.

The writer turns SQLite's automatic checkpoints off and runs these instead. Automatic ones copy
pages back but start the WAL file over only when no connection reads an older snapshot, and
while one runs, another process's checkpoint fails at once. With two processes writing all the
time, such as pipeline workers, the WAL file grew to over ten times the database.
"""
CACHE_KIB: Final = 32 * 1024
"""Page cache of the writer connection. Random lookup keys spread inserts over the whole B-tree,
so a cache smaller than the hot part of the database turns most inserts into page reads."""
SET_UP_RETRY_SECONDS: Final = 0.02
WRITE_LOCK_POLL_SECONDS: Final = 0.0002
MAX_PARAMETERS: Final = 500
"""Lookup keys per ``IN (...)`` list, well below SQLite's limit on host parameters."""

# SQLite primary result codes that mean the store is unavailable for now: a lock held elsewhere,
# a disk error or a full disk. Other codes, such as corruption or misuse, mean it is broken.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
    }
)

_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
_COLUMNS: Final = "lookup_key, blob, key_version, expires_at"
# Only the fixed texts above are formatted into these statements; values are "?" parameters.
_REPLACE_IF_UNCHANGED: Final = (
    "UPDATE records SET blob = ?, key_version = ?"  # noqa: S608
    f" WHERE lookup_key = ? AND blob = ? AND {_LIVE}"
)
_COUNT_BY_KEY_VERSION: Final = (
    f"SELECT key_version, count(*) FROM records WHERE {_LIVE} GROUP BY key_version"  # noqa: S608
)
_SCAN_AFTER: Final = (
    f"SELECT {_COLUMNS} FROM records WHERE lookup_key > ? AND {_LIVE}"  # noqa: S608
    " ORDER BY lookup_key LIMIT ?"
)

type WriteFunction = Callable[[sqlite3.Connection, float], Any]


@dataclass(frozen=True, slots=True)
class _WriteCall:
    run: WriteFunction
    """Function that does the call's work in the group's transaction, given connection and time."""
    future: Future[Any]


_STOP: Final = object()


class SqliteStore(TokenStore):
    """A token store in one SQLite file. The parent directory is created if it is missing.

    ``timeout`` is the busy timeout in seconds: how long a statement waits for a lock that
    another connection or process holds before the call raises ``StoreUnavailableError``.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float,
        purge_interval: float = 60.0,
        wal_checkpoint_bytes: int = WAL_CHECKPOINT_BYTES,
    ) -> None:
        self.path = path
        self._timeout = timeout
        self._purge_interval = purge_interval
        self._wal_path = path.with_name(path.name + "-wal")
        self._wal_checkpoint_bytes = wal_checkpoint_bytes
        self._closed = False
        self._commits = 0
        self._initialize()

        self._writes: queue.SimpleQueue[_WriteCall | object] = queue.SimpleQueue()
        self._writer_connection: sqlite3.Connection | None = None
        self._writer = threading.Thread(
            target=self._run_writer, name=f"sqlite-writer {path.name}", daemon=True
        )
        self._writer.start()
        self._reader_connection: sqlite3.Connection | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        logger.info("SQLite token store opened at %s", path)

    @property
    def committed_transactions(self) -> int:
        """Write transactions committed so far; group commit makes them fewer than write calls."""
        return self._commits

    def _initialize(self) -> None:
        created = not self.path.exists()
        try:
            # Only the gateway's user may list or read what the store holds (0700 and 0600).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if created:
                self.path.touch(mode=0o600)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create SQLite store {self.path}: {exc.strerror or exc}"
            ) from exc
        with self._mapped_errors("opening"):
            journal_mode = self._set_up_file()
        if journal_mode != "wal":
            logger.warning(
                "SQLite store %s uses journal mode %s because WAL is not available there; "
                "writes are still durable but slower",
                self.path,
                journal_mode,
            )

    def _set_up_file(self) -> str:
        """Switch the file to WAL and create its tables; return the journal mode it got.

        Processes that open a new file at the same moment, such as pipeline workers, race for
        it. A statement that upgrades a read to a write fails with SQLITE_BUSY at once, without
        the busy timeout, when another connection wrote first, so this retries until the
        timeout has passed.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with contextlib.closing(self._connect()) as connection:
                    journal_mode: str = connection.execute("PRAGMA journal_mode = WAL").fetchone()[
                        0
                    ]
                    create_schema(connection)
                return journal_mode
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(SET_UP_RETRY_SECONDS)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None leaves transactions to explicit BEGIN and COMMIT statements.
        connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    async def put_many(self, requests: Sequence[PutRequest]) -> list[PutResult]:
        for request in requests:
            if (request.index_key is None) != (request.sealed_token is None):
                raise ValueError("index_key and sealed_token must be given together")
        if not requests:
            return []
        items = list(requests)
        results: list[PutResult] = await self._write(
            lambda connection, now: _put_batch(connection, now, items)
        )
        return results

    async def delete_many(self, lookup_keys: Sequence[bytes]) -> int:
        keys = list(dict.fromkeys(lookup_keys))
        if not keys:
            return 0
        deleted: int = await self._write(lambda connection, now: _delete(connection, now, keys))
        return deleted

    async def erase_many(self, index_keys: Sequence[bytes]) -> int:
        keys = list(dict.fromkeys(index_keys))
        if not keys:
            return 0
        erased: int = await self._write(lambda connection, now: _erase(connection, now, keys))
        return erased

    async def replace_many(self, items: Sequence[tuple[bytes, StoredRecord]]) -> int:
        if not items:
            return 0
        replacements = list(items)
        replaced: int = await self._write(
            lambda connection, now: _replace(connection, now, replacements)
        )
        return replaced

    async def purge_expired(self) -> int:
        """Delete the expired records and index entries now, and return how many rows went."""
        purged: int = await self._write(purge_expired_rows)
        return purged

    async def get_many(self, lookup_keys: Sequence[bytes]) -> list[StoredRecord | None]:
        if not lookup_keys:
            return []
        keys = list(lookup_keys)
        found: dict[bytes, StoredRecord] = await self._read(lambda c: _select_records(c, keys))
        return [found.get(key) for key in keys]

    async def count_by_key_version(self) -> dict[int, int]:
        counts: dict[int, int] = await self._read(_count_by_key_version)
        return counts

    async def scan_records(
        self, cursor: str | None, limit: int
    ) -> tuple[list[StoredRecord], str | None]:
        if limit < 1:
            raise ValueError(f"scan limit must be at least 1, not {limit}")
        after = _parse_cursor(cursor)
        records: list[StoredRecord] = await self._read(lambda c: _scan(c, after, limit))
        # Fewer rows than the limit means the scan reached the end of the table.
        if len(records) < limit:
            return records, None
        return records, records[-1].lookup_key.hex()

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1 FROM records LIMIT 1").fetchone())

    async def durability_warnings(self) -> list[str]:
        # Every write commits with synchronous=FULL, which fsyncs before COMMIT returns.
        return []

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writes.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
        await asyncio.to_thread(self._reader.shutdown)
        logger.info("SQLite token store at %s closed", self.path)

    async def _write(self, run: WriteFunction) -> Any:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        call = _WriteCall(run, Future())
        self._writes.put(call)
        return await asyncio.wrap_future(call.future)

    async def _read(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._run_read, run)

    def _run_read(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read in one transaction, so that all its statements see one snapshot."""
        with self._mapped_errors("read"):
            try:
                if self._reader_connection is None:
                    self._reader_connection = self._connect()
                connection = self._reader_connection
                connection.execute("BEGIN")
                try:
                    return run(connection)
                finally:
                    # The transaction only read, so ending it with ROLLBACK loses nothing.
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
            except sqlite3.Error:
                self._close_reader()
                raise

    def _close_reader(self) -> None:
        if self._reader_connection is not None:
            self._reader_connection.close()
            self._reader_connection = None

    def _run_writer(self) -> None:
        """Commit groups of waiting write calls until ``close`` queues the stop marker.

        Between groups, and when no call arrives, the expired rows are purged every
        ``purge_interval`` seconds in a transaction of their own.
        """
        next_purge = time.monotonic() + self._purge_interval
        while True:
            try:
                first = self._writes.get(timeout=max(0.0, next_purge - time.monotonic()))
            except queue.Empty:
                first = None
            if first is not None:
                group, stop = self._take_group(first)
                self._commit_group(group)
                if stop:
                    break
            if time.monotonic() >= next_purge:
                self._purge_periodically()
                next_purge = time.monotonic() + self._purge_interval
        if self._writer_connection is not None:
            self._writer_connection.close()

    def _purge_periodically(self) -> None:
        call = _WriteCall(purge_expired_rows, Future())
        self._commit_group([call])
        error = call.future.exception()
        if error is not None:
            # The next purge tries again, so a locked or busy file only delays it.
            logger.warning("purge of expired rows in SQLite store %s failed: %s", self.path, error)
        else:
            logger.debug(
                "purged %d expired rows from SQLite store %s", call.future.result(), self.path
            )

    def _take_group(self, first: _WriteCall | object) -> tuple[list[_WriteCall], bool]:
        """Return ``first`` and the calls queued behind it, and whether the stop marker was next."""
        group: list[_WriteCall] = []
        item = first
        while True:
            if item is _STOP:
                return group, True
            assert isinstance(item, _WriteCall)
            group.append(item)
            if len(group) >= MAX_GROUP_CALLS:
                return group, False
            try:
                item = self._writes.get_nowait()
            except queue.Empty:
                return group, False

    def _commit_group(self, group: list[_WriteCall]) -> None:
        calls = [call for call in group if call.future.set_running_or_notify_cancel()]
        if not calls:
            return
        try:
            results = self._run_transaction(calls)
        except (StoreError, StoreUnavailableError) as error:
            logger.warning("SQLite write transaction of %d calls failed: %s", len(calls), error)
            for call in calls:
                call.future.set_exception(_copy_error(error))
            return
        except Exception as error:
            logger.exception("SQLite write transaction of %d calls failed", len(calls))
            for call in calls:
                call.future.set_exception(error)
            return
        self._commits += 1
        for call, result in zip(calls, results, strict=True):
            call.future.set_result(result)
        self._limit_wal()

    def _limit_wal(self) -> None:
        """Checkpoint and truncate the WAL file once it is larger than the configured size.

        The checkpoint does not wait for locks: it fails at once, to be tried again after the
        next commit, when another connection writes, reads the WAL file or runs a checkpoint.
        Waiting would hold locks that others need. It holds the write lock while it waits for
        readers, so one read transaction kept open elsewhere (a backup, a sqlite3 shell) made
        other writers time out. While it waits for the write lock it holds the checkpoint lock,
        so with two processes writing all the time, the other one's checkpoints failed and the
        WAL file grew by tens of MiB.
        """
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        connection = self._writer_connection
        if size <= self._wal_checkpoint_bytes or connection is None:
            return
        try:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            logger.warning("checkpoint of SQLite store %s failed: %s", self.path, exc)
            return
        if busy:
            logger.debug(
                "the WAL file of SQLite store %s is %d MiB, and other connections kept the "
                "checkpoint from finishing",
                self.path,
                size >> 20,
            )

    def _begin_write(self, connection: sqlite3.Connection) -> None:
        """Start a write transaction, polling for the write lock until the timeout.

        SQLite's own busy handler sleeps up to 100 ms between tries. While another process
        writes one transaction after another, as a pipeline worker does, its gaps are far
        shorter, so a waiting writer missed every one of them and timed out. This polls every
        ``WRITE_LOCK_POLL_SECONDS`` instead.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(WRITE_LOCK_POLL_SECONDS)

    def _run_transaction(self, calls: list[_WriteCall]) -> list[Any]:
        with self._mapped_errors("write"):
            try:
                if self._writer_connection is None:
                    self._writer_connection = self._connect()
                    self._writer_connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                    self._writer_connection.execute("PRAGMA wal_autocheckpoint = 0")
                    # The writer waits for locks itself: it polls for the write lock in
                    # _begin_write, and its checkpoints must not wait at all (see _limit_wal).
                    self._writer_connection.execute("PRAGMA busy_timeout = 0")
                connection = self._writer_connection
                # IMMEDIATE takes the write lock first, so the checks below see what is committed.
                self._begin_write(connection)
                try:
                    now = time.time()
                    results = [call.run(connection, now) for call in calls]
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
            except sqlite3.Error:
                # A fresh connection for the next group clears whatever state the failure left.
                if self._writer_connection is not None:
                    self._writer_connection.close()
                    self._writer_connection = None
                raise
        return results

    @contextlib.contextmanager
    def _mapped_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _map_error(exc, f"SQLite store {self.path}: {action} failed") from exc


def _is_busy(exc: sqlite3.Error) -> bool:
    """Return whether ``exc`` is SQLITE_BUSY: another connection holds a lock that is needed."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _map_error(exc: sqlite3.Error, context: str) -> StoreError | StoreUnavailableError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
        return StoreUnavailableError(f"{context}: {exc}")
    return StoreError(f"{context}: {exc}")


def _copy_error(error: StoreError | StoreUnavailableError) -> BaseException:
    """Return a new exception like ``error``, so that each waiting call raises its own object."""
    copy = type(error)(str(error))
    copy.__cause__ = error.__cause__
    return copy


def _put_batch(
    connection: sqlite3.Connection, now: float, requests: list[PutRequest]
) -> list[PutResult]:
    """Decide each request in order as ``TokenStore.put_many`` specifies, then write the new rows.

    The live index entries and records that the batch touches are read with a few ``IN``
    queries, and the new rows are written with ``executemany``. Several statements per request
    cost more, because the Python side of ``sqlite3`` costs more per statement than the B-tree
    work. Requests decided earlier in the batch count as written for later ones.
    """
    existing = _live_index_entries(connection, now, requests)
    records = _records_by_lookup_key(connection, now, requests)

    results: list[PutResult] = []
    stored: list[PutRequest] = []
    stale: list[tuple[bytes]] = []
    for request in requests:
        lookup_key = request.record.lookup_key
        if request.index_key is not None and request.index_key in existing:
            results.append(PutResult(PutStatus.EXISTING, sealed_token=existing[request.index_key]))
            continue
        live = records.get(lookup_key)
        if live:
            results.append(PutResult(PutStatus.COLLISION))
            continue
        if live is not None:
            # An expired record remains under this lookup key until the purge. It is replaced,
            # and the index entries that point at it are deleted.
            stale.append((lookup_key,))
        records[lookup_key] = True
        if request.index_key is not None:
            assert request.sealed_token is not None
            existing[request.index_key] = request.sealed_token
        stored.append(request)
        results.append(PutResult(PutStatus.STORED))

    connection.executemany("DELETE FROM index_entries WHERE lookup_key = ?", stale)
    connection.executemany(
        "INSERT OR REPLACE INTO records (lookup_key, blob, key_version, expires_at)"
        " VALUES (?, ?, ?, ?)",
        [
            (
                request.record.lookup_key,
                request.record.blob,
                request.record.key_version,
                _stored_expiry(request.record.expires_at),
            )
            for request in stored
        ],
    )
    connection.executemany(
        "INSERT OR REPLACE INTO index_entries (index_key, lookup_key, sealed_token, expires_at)"
        " VALUES (?, ?, ?, ?)",
        [
            (
                request.index_key,
                request.record.lookup_key,
                request.sealed_token,
                _stored_expiry(request.record.expires_at),
            )
            for request in stored
            if request.index_key is not None
        ],
    )
    return results


def _live_index_entries(
    connection: sqlite3.Connection, now: float, requests: list[PutRequest]
) -> dict[bytes, bytes]:
    """Return the sealed token of each live index entry (with a live record) that ``requests``
    name, by index key."""
    index_keys = list(
        dict.fromkeys(request.index_key for request in requests if request.index_key is not None)
    )
    found: dict[bytes, bytes] = {}
    for chunk in _chunks(index_keys):
        select = (
            "SELECT entry.index_key, entry.sealed_token FROM index_entries AS entry"  # noqa: S608 - only "?" placeholders are formatted into the SQL
            " JOIN records AS record ON record.lookup_key = entry.lookup_key"
            f" WHERE entry.index_key IN ({_placeholders(chunk)})"
            " AND (entry.expires_at IS NULL OR entry.expires_at > ?)"
            " AND (record.expires_at IS NULL OR record.expires_at > ?)"
        )
        found.update(connection.execute(select, (*chunk, now, now)).fetchall())
    return found


def _records_by_lookup_key(
    connection: sqlite3.Connection, now: float, requests: list[PutRequest]
) -> dict[bytes, bool]:
    """Return whether each record that ``requests`` name is live, by lookup key. Records that
    do not exist at all are absent."""
    lookup_keys = list(dict.fromkeys(request.record.lookup_key for request in requests))
    found: dict[bytes, bool] = {}
    for chunk in _chunks(lookup_keys):
        select = (
            f"SELECT lookup_key, {_LIVE} FROM records"  # noqa: S608 - only "?" placeholders are formatted into the SQL
            f" WHERE lookup_key IN ({_placeholders(chunk)})"
        )
        found.update((key, bool(live)) for key, live in connection.execute(select, (now, *chunk)))
    return found


def _stored_expiry(expires_at: float | None) -> float | None:
    """Return an expiry time rounded to whole milliseconds, as the records store it."""
    return None if expires_at is None else round(expires_at * 1000) / 1000


def _delete(connection: sqlite3.Connection, now: float, lookup_keys: list[bytes]) -> int:
    live = 0
    for chunk in _chunks(lookup_keys):
        keys = _placeholders(chunk)
        count_live = f"SELECT count(*) FROM records WHERE lookup_key IN ({keys}) AND {_LIVE}"  # noqa: S608 - only "?" placeholders are formatted into the SQL
        live += connection.execute(count_live, (*chunk, now)).fetchone()[0]
        connection.execute(f"DELETE FROM index_entries WHERE lookup_key IN ({keys})", chunk)  # noqa: S608 - as above
        connection.execute(f"DELETE FROM records WHERE lookup_key IN ({keys})", chunk)  # noqa: S608 - as above
    return int(live)


def _erase(connection: sqlite3.Connection, now: float, index_keys: list[bytes]) -> int:
    targets: list[bytes] = []
    for chunk in _chunks(index_keys):
        keys = _placeholders(chunk)
        select = f"SELECT lookup_key FROM index_entries WHERE index_key IN ({keys})"  # noqa: S608 - only "?" placeholders are formatted into the SQL
        targets += [row[0] for row in connection.execute(select, chunk)]
        connection.execute(f"DELETE FROM index_entries WHERE index_key IN ({keys})", chunk)  # noqa: S608 - as above
    return _delete(connection, now, targets) if targets else 0


def _replace(
    connection: sqlite3.Connection, now: float, items: list[tuple[bytes, StoredRecord]]
) -> int:
    replaced = 0
    for expected_blob, record in items:
        cursor = connection.execute(
            _REPLACE_IF_UNCHANGED,
            (record.blob, record.key_version, record.lookup_key, expected_blob, now),
        )
        replaced += cursor.rowcount
    return replaced


def _count_by_key_version(connection: sqlite3.Connection) -> dict[int, int]:
    rows = connection.execute(_COUNT_BY_KEY_VERSION, (time.time(),))
    return {int(key_version): int(count) for key_version, count in rows}


def _scan(connection: sqlite3.Connection, after: bytes, limit: int) -> list[StoredRecord]:
    # SQLite compares blobs with memcmp, and the empty blob sorts before every lookup key.
    rows = connection.execute(_SCAN_AFTER, (after, time.time(), limit))
    return [StoredRecord(*row) for row in rows]


def _parse_cursor(cursor: str | None) -> bytes:
    """Return the lookup key a SQLite scan cursor names, or an empty string to start."""
    if cursor is None:
        return b""
    try:
        return bytes.fromhex(cursor)
    except ValueError:
        raise ValueError(
            "invalid scan cursor for a SQLite store: expected the hex lookup key that an earlier "
            "scan returned"
        ) from None


def _select_records(
    connection: sqlite3.Connection, lookup_keys: list[bytes]
) -> dict[bytes, StoredRecord]:
    now = time.time()
    found: dict[bytes, StoredRecord] = {}
    for chunk in _chunks(list(dict.fromkeys(lookup_keys))):
        keys = _placeholders(chunk)
        select = f"SELECT {_COLUMNS} FROM records WHERE lookup_key IN ({keys}) AND {_LIVE}"  # noqa: S608 - only "?" placeholders are formatted into the SQL
        for lookup_key, blob, key_version, expires_at in connection.execute(select, (*chunk, now)):
            found[lookup_key] = StoredRecord(lookup_key, blob, key_version, expires_at)
    return found


def _chunks(keys: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(keys), MAX_PARAMETERS):
        yield keys[start : start + MAX_PARAMETERS]


def _placeholders(chunk: list[bytes]) -> str:
    return ", ".join("?" * len(chunk))
