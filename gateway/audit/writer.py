"""The audit file, the logs that write to it, and ``open_audit_log`` that builds one from config.

The file is append-only JSON Lines, one record per line (see ``gateway.audit.records``). Each
gateway process needs a file of its own, for example ``var/audit-${HOSTNAME}.jsonl``, because
it continues the chain that the file ends with. An exclusive ``flock`` held while the file is
open makes a second writer fail at start, in this process or another on the same host.

NOTE: the file cannot be rotated while the gateway runs. A file moved away keeps receiving the
records, and one truncated in place (logrotate's copytruncate) no longer verifies from its first
line. Rotate with the gateway stopped: it then starts a new chain at sequence 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from gateway.audit.log import AuditLog
from gateway.audit.records import AuditRecord, ChainPosition, LineProblem, check_line
from gateway.audit.stream import AuditStream, RedisStreamAuditLog
from gateway.config.audit import AuditConfig
from gateway.errors import AuditUnavailableError
from gateway.secret import Secret

logger = logging.getLogger("gateway.audit")

type FsyncMode = Literal["always", "interval"]

MAX_LINE_BYTES: Final = 1024 * 1024
"""The maximum length of the last line read at start. Records are far shorter."""
_READ_CHUNK: Final = 8192
_GROUP_OR_OTHERS: Final = 0o077


class AuditFile:
    """An append-only file of audit records.

    The file is opened with ``O_APPEND`` and created with mode 0600, its missing directories
    with 0700. Each ``append`` has reached the operating system when it returns. With ``fsync``
    ``always`` it has also reached the disk. With ``interval`` a background task calls fsync
    every ``fsync_interval`` seconds when there is something new, so a power loss or kernel
    crash (not a crash of the gateway) can lose the records of that last interval.

    A failed write is removed from the end of the file again, so the next append continues a
    valid chain. When that removal fails, or fsync fails, every later append raises
    ``AuditUnavailableError`` until the gateway restarts: after a failed fsync, Linux may drop
    the unwritten data and report the next fsync as successful.
    """

    def __init__(
        self, path: Path, *, fsync: FsyncMode = "interval", fsync_interval: float = 1.0
    ) -> None:
        if fsync not in ("always", "interval"):
            raise ValueError(f"fsync must be always or interval, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.fsyncs = 0
        """fsync calls that succeeded so far."""
        self._descriptor: int | None = None
        self._size = 0
        self._synced_size = 0
        self._failure: str | None = None
        self._stop_syncing = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None

    async def open(self, key: Secret[bytes]) -> ChainPosition:
        """Open and lock the file, and return where its chain ends.

        Raises ``AuditUnavailableError`` when the file cannot be opened or locked, or when its
        last line is not a complete record that verifies under ``key``.
        """
        if self._descriptor is not None:
            raise RuntimeError(f"audit file {self.path} is already open")
        position = await asyncio.to_thread(self._open, key.reveal())
        if self.fsync == "interval":
            self._sync_task = asyncio.create_task(self._sync_every_interval())
        return position

    async def append(self, records: Sequence[AuditRecord]) -> None:
        """Append the records in one write, and fsync them with ``fsync: always``.

        Raises ``AuditUnavailableError`` when the write fails, and the file then contains none
        of them. When fsync fails, the records are in the file but may not be on the disk.
        """
        descriptor = self._open_descriptor()
        if self._failure is not None:
            raise AuditUnavailableError(self._failure)

        data = b"".join(record.line for record in records)
        fsync_error = None
        try:
            if self.fsync == "always":
                fsync_error = await asyncio.to_thread(_write_and_fsync, descriptor, data)
            else:
                # A write to the page cache usually costs far less than a hop to a worker
                # thread, so it runs on the event loop. It can block the loop when the kernel
                # throttles writers because too much data is waiting for the disk.
                _write_all(descriptor, data)
        except OSError as exc:
            self._remove_incomplete_write(descriptor)
            raise AuditUnavailableError(
                f"cannot write audit file {self.path}: {exc.strerror or exc}"
            ) from exc
        self._size += len(data)

        if fsync_error is not None:
            raise self._fsync_failed(fsync_error) from fsync_error
        if self.fsync == "always":
            self._synced_size = self._size
            self.fsyncs += 1

    async def sync(self) -> None:
        """fsync the file if something was appended since the last fsync."""
        descriptor = self._open_descriptor()
        size = self._size
        if size == self._synced_size:
            return
        try:
            try:
                await asyncio.to_thread(os.fsync, descriptor)
            except RuntimeError:
                # Thread pools take no new work once interpreter shutdown has begun, which is
                # when a pipeline's pool worker closes its audit file from a multiprocessing
                # finalizer. The last fsync then runs on the loop's thread, which nothing else
                # needs at exit.
                os.fsync(descriptor)
        except OSError as exc:
            raise self._fsync_failed(exc) from exc
        self._synced_size = max(self._synced_size, size)
        self.fsyncs += 1

    def _fsync_failed(self, error: OSError) -> AuditUnavailableError:
        """Stop the file for good after a failed fsync, and return the error to raise."""
        self._fail_permanently(
            f"fsync of audit file {self.path} failed: {error.strerror or error}. Check the "
            "disk, then restart the gateway"
        )
        return AuditUnavailableError(f"fsync of audit file {self.path} failed")

    async def close(self) -> None:
        """Stop the background fsync, fsync what is left, and close the file (which unlocks it)."""
        if self._sync_task is not None:
            self._stop_syncing.set()
            await self._sync_task
            self._sync_task = None
        if self._descriptor is None:
            return
        if self._failure is None:
            # A failure is logged by _fail_permanently, and the file is closed all the same.
            with contextlib.suppress(AuditUnavailableError):
                await self.sync()
        os.close(self._descriptor)
        self._descriptor = None

    def _open_descriptor(self) -> int:
        if self._descriptor is None:
            raise RuntimeError(f"audit file {self.path} is not open")
        return self._descriptor

    def _open(self, key: bytes) -> ChainPosition:
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(
                self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise AuditUnavailableError(
                f"cannot open audit file {self.path}: {exc.strerror or exc}"
            ) from exc

        try:
            self._lock(descriptor)
            if created:
                _fsync_directory(self.path.parent)
            status = os.fstat(descriptor)
            if status.st_mode & _GROUP_OR_OTHERS:
                logger.warning(
                    "audit file %s is accessible to group or others (mode %03o). Restrict it "
                    "with chmod 600",
                    self.path,
                    status.st_mode & 0o777,
                )
            position = self._read_end(descriptor, status.st_size, key)
        except BaseException:
            os.close(descriptor)
            raise

        self._descriptor = descriptor
        self._size = self._synced_size = status.st_size
        return position

    def _lock(self, descriptor: int) -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AuditUnavailableError(
                f"audit file {self.path} is locked by another writer. Each gateway process "
                "needs its own audit file, for example audit.file: var/audit-${HOSTNAME}.jsonl"
            ) from exc
        except OSError as exc:
            raise AuditUnavailableError(
                f"cannot lock audit file {self.path}: {exc.strerror or exc}"
            ) from exc

    def _read_end(self, descriptor: int, size: int, key: bytes) -> ChainPosition:
        """Verify the file's last record and return its seq and mac."""
        if size == 0:
            return ChainPosition()
        line, offset = self._read_last_line(descriptor, size)
        checked = check_line(line, key)
        if not isinstance(checked, LineProblem):
            return ChainPosition(checked.seq, checked.mac)

        if checked.kind == "incomplete line":
            raise AuditUnavailableError(
                f"the last line of audit file {self.path} is incomplete, as a crash during a "
                "write or an edit leaves it, so the file is not used. If "
                f"`vaultgate audit verify {self.path}` reports no bad line before it, remove "
                f"it with `truncate -s {offset} {self.path}` and start again"
            )
        raise AuditUnavailableError(
            f"the last record of audit file {self.path} does not verify under the audit key "
            f"({checked.kind}: {checked.detail}). Appending would hide the change, so the file "
            f"is not used. Find the first bad line with `vaultgate audit verify {self.path}`, "
            "keep the file as evidence and move it away to start a new chain, or use the key "
            "file that wrote it"
        )

    def _read_last_line(self, descriptor: int, size: int) -> tuple[bytes, int]:
        """Return the file's last line, with its newline if it has one, and its offset."""
        start = size
        data = b""
        while start > 0 and len(data) <= MAX_LINE_BYTES:
            chunk_start = max(0, start - _READ_CHUNK)
            data = os.pread(descriptor, start - chunk_start, chunk_start) + data
            start = chunk_start
            # The newline that ends the line before; a newline at the very end ends this one.
            boundary = data.rfind(b"\n", 0, len(data) - 1)
            if boundary >= 0:
                return data[boundary + 1 :], start + boundary + 1
        if start == 0 and len(data) <= MAX_LINE_BYTES:
            return data, 0
        raise AuditUnavailableError(
            f"the last line of audit file {self.path} is longer than {MAX_LINE_BYTES} bytes, so "
            "it is not an audit record and the file is not used. Check the file with "
            f"`vaultgate audit verify {self.path}`"
        )

    def _remove_incomplete_write(self, descriptor: int) -> None:
        """Cut a partly written batch off the end, so that the chain can continue."""
        try:
            size = os.fstat(descriptor).st_size
            if size > self._size:
                os.ftruncate(descriptor, self._size)
                logger.warning(
                    "removed %d bytes of a failed write from the end of audit file %s",
                    size - self._size,
                    self.path,
                )
            elif size < self._size:
                self._fail_permanently(
                    f"audit file {self.path} shrank from {self._size} to {size} bytes while "
                    "the gateway was writing it, so something else changes it. Check it with "
                    "`vaultgate audit verify`, then restart the gateway"
                )
        except OSError as exc:
            self._fail_permanently(
                f"audit file {self.path} ends with a failed write that cannot be removed "
                f"({exc.strerror or exc}). Check the file with `vaultgate audit verify`, cut it "
                f"to {self._size} bytes with truncate -s, then restart the gateway"
            )

    def _fail_permanently(self, message: str) -> None:
        if self._failure is None:
            logger.error("%s. Audit records are rejected until the gateway restarts", message)
            self._failure = message

    async def _sync_every_interval(self) -> None:
        while not self._stop_syncing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_syncing.wait(), self.fsync_interval)
            if self._failure is not None:
                return
            try:
                await self.sync()
            except AuditUnavailableError:
                return  # _fail_permanently logged it.


def _write_and_fsync(descriptor: int, data: bytes) -> OSError | None:
    """Write ``data`` and fsync, in one call for a worker thread.

    An error of the write is raised and an error of fsync returned, because they call for
    different handling.
    """
    _write_all(descriptor, data)
    try:
        os.fsync(descriptor)
    except OSError as exc:
        return exc
    return None


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """fsync a directory, so that a file just created in it survives a power loss."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FileAuditLog(AuditLog):
    """An audit log in an ``AuditFile``."""

    def __init__(self, file: AuditFile, key: Secret[bytes]) -> None:
        super().__init__(key, description=f"audit file {file.path}")
        self.file = file

    async def _open(self) -> ChainPosition:
        return await self.file.open(self._key)

    async def _write(self, records: Sequence[AuditRecord]) -> None:
        await self.file.append(records)

    async def _close(self) -> None:
        await self.file.close()


class MultiAuditLog(AuditLog):
    """An audit log in an ``AuditFile`` whose records are copied to an ``AuditStream``.

    The file carries the chain and the stream gets the same records, without a continuity
    check. A ``record`` call succeeds only when both writes do. When the copy fails, the
    records stay in the file, the callers get ``AuditUnavailableError``, and the records are
    sent again before the next batch. At most the stream's ``max_length`` records wait so; older
    ones are dropped with a warning, because the stream would trim them anyway.
    """

    def __init__(self, file: AuditFile, stream: AuditStream, key: Secret[bytes]) -> None:
        super().__init__(key, description=f"audit file {file.path} and stream {stream.stream}")
        self.file = file
        self.stream = stream
        self._unsent: list[AuditRecord] = []

    async def _open(self) -> ChainPosition:
        await self.stream.check_reachable()
        return await self.file.open(self._key)

    async def _write(self, records: Sequence[AuditRecord]) -> None:
        await self.file.append(records)

    async def _copy(self, records: Sequence[AuditRecord]) -> None:
        self._unsent += records
        excess = len(self._unsent) - self.stream.max_length
        if excess > 0:
            del self._unsent[:excess]
            logger.warning(
                "audit stream %s: dropped %d records that could not be copied from %s, because "
                "the stream keeps only %d entries",
                self.stream.stream,
                excess,
                self.file.path,
                self.stream.max_length,
            )
        await self.stream.append(self._unsent, after_seq=None)
        self._unsent.clear()

    async def _close(self) -> None:
        try:
            if self._unsent:
                logger.error(
                    "audit stream %s: %d records (sequence %d to %d) were never copied from %s",
                    self.stream.stream,
                    len(self._unsent),
                    self._unsent[0].seq,
                    self._unsent[-1].seq,
                    self.file.path,
                )
        finally:
            await self.file.close()
            await self.stream.close()


async def open_audit_log(
    config: AuditConfig, key: Secret[bytes], *, redis_timeout: float
) -> AuditLog | None:
    """Build the audit log that ``config`` describes and start it, or return None if disabled.

    ``redis_timeout`` bounds each Redis call in seconds. Raises ``AuditUnavailableError``
    when the log cannot be opened or its end does not verify under ``key``.
    """
    if not config.enabled:
        return None
    file = None
    if config.file is not None:
        fsync: FsyncMode = "always" if config.fsync == "always" else "interval"
        file = AuditFile(config.file, fsync=fsync, fsync_interval=config.fsync_interval)
    stream = None
    if config.redis_stream is not None:
        if config.redis_url is None:
            raise ValueError("audit.redis_stream is set without a Redis URL")
        stream = AuditStream(
            config.redis_url,
            config.redis_stream,
            max_length=config.stream_max_length,
            timeout=redis_timeout,
        )

    log: AuditLog
    if file is not None and stream is not None:
        log = MultiAuditLog(file, stream, key)
    elif file is not None:
        log = FileAuditLog(file, key)
    elif stream is not None:
        log = RedisStreamAuditLog(stream, key)
    else:
        raise ValueError("audit is enabled but has neither a file nor a redis_stream")
    await log.start()
    return log
