"""The base of every audit log: batching of concurrent calls and the chain they extend.

``record()`` calls that arrive while a batch is being written wait for the next batch, so many
concurrent requests share one write (group commit). Each batch is sealed into records that
continue the chain, written by the subclass, and only then do the callers return.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.audit.events import AuditEvent
from gateway.audit.records import AuditRecord, ChainPosition, seal_events
from gateway.errors import AuditUnavailableError
from gateway.secret import Secret

logger = logging.getLogger("gateway.audit")

_Waiter = tuple[Sequence[AuditEvent], asyncio.Future[None]]


class AuditLog(ABC):
    """An ``AuditSink`` that seals events into one chain and writes them in batches.

    Call ``start`` before the first ``record`` and ``close`` at the end. A caller that is
    cancelled while its events are being written does not stop the write, so its events may
    still be recorded.
    """

    def __init__(self, key: Secret[bytes], *, description: str) -> None:
        self._key = key
        self.description = description
        """What and where the log is, for messages: ``audit file /var/lib/vaultgate/a.jsonl``."""
        self._position: ChainPosition | None = None
        self._waiting: list[_Waiter] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._failed_batches = 0
        """Batches that failed in a row; only the first of a run is logged."""
        self.batches_written = 0
        """Batches written so far; concurrent ``record`` calls share a batch."""

    @property
    def position(self) -> ChainPosition:
        """The end of the chain: the sequence number and mac of the last record written."""
        if self._position is None:
            raise RuntimeError(f"{self.description} is not started")
        return self._position

    async def start(self) -> None:
        """Open the log and find where its chain ends.

        Raises ``AuditUnavailableError`` when it cannot be opened, or when its last record
        does not verify under the key, because appending would then hide the change.
        """
        if self._position is not None:
            raise RuntimeError(f"{self.description} is already started")
        try:
            self._position = await self._open()
        except BaseException:
            await self._close()
            raise
        logger.info(
            "%s opened; the chain continues after sequence %d, mac %s",
            self.description,
            self._position.seq,
            self._position.mac,
        )

    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Append the events; return once they are written where the log promises.

        Raises ``AuditUnavailableError`` when they cannot be written, so that the caller can
        reject the operation instead of performing it unrecorded.
        """
        if not events:
            return
        if self._position is None or self._closing:
            raise AuditUnavailableError(f"{self.description} is not open")

        done = asyncio.get_running_loop().create_future()
        self._waiting.append((events, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        await done

    async def close(self) -> None:
        """Write the events already handed to ``record``, then close the log."""
        if self._closing:
            return
        self._closing = True
        if self._writer is not None:
            await self._writer
        if self._position is None:
            return
        await self._close()
        logger.info(
            "%s closed; the chain ends at sequence %d, mac %s",
            self.description,
            self._position.seq,
            self._position.mac,
        )

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._write_batch(batch)
                except Exception as exc:
                    # A bug, not an I/O failure, but the callers must still get an error.
                    logger.exception("%s: unexpected error while writing", self.description)
                    error = AuditUnavailableError(f"{self.description} failed: {exc!r}")
                    _fail_all(batch, error)
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[_Waiter]) -> None:
        try:
            await self._prepare_batch()
        except AuditUnavailableError as exc:
            _fail_all(batch, exc)
            return

        records, sealed = self._seal(batch)
        if not records:
            return
        try:
            await self._write(records)
        except AuditUnavailableError as exc:
            self._log_failure(exc)
            _fail_all(sealed, exc)
            return

        self._position = ChainPosition(records[-1].seq, records[-1].mac)
        self.batches_written += 1
        try:
            await self._copy(records)
        except AuditUnavailableError as exc:
            self._log_failure(exc)
            _fail_all(sealed, exc)
            return

        self._log_recovery()
        for _, done in sealed:
            if not done.done():
                done.set_result(None)

    def _log_failure(self, error: AuditUnavailableError) -> None:
        if self._failed_batches == 0:
            logger.error(
                "%s: a batch failed, so its callers get errors: %s. Further failures are "
                "counted until a batch succeeds",
                self.description,
                error,
            )
        self._failed_batches += 1

    def _log_recovery(self) -> None:
        if self._failed_batches:
            logger.warning(
                "%s: writing again after %d failed batches",
                self.description,
                self._failed_batches,
            )
            self._failed_batches = 0

    def _seal(self, batch: list[_Waiter]) -> tuple[list[AuditRecord], list[_Waiter]]:
        """Return the batch's records and the callers whose events they are.

        Only a caller whose events cannot be encoded gets an error, and the others' events go on.
        """
        position = self.position
        moment = datetime.now(UTC)
        key = self._key.reveal()
        records: list[AuditRecord] = []
        sealed: list[_Waiter] = []
        for events, done in batch:
            try:
                new_records = seal_events(events, position, key, moment)
            except (TypeError, ValueError) as exc:
                logger.error("%s: an audit event cannot be encoded: %s", self.description, exc)
                _fail_all([(events, done)], AuditUnavailableError(f"invalid audit event: {exc}"))
                continue
            records += new_records
            sealed.append((events, done))
            position = ChainPosition(new_records[-1].seq, new_records[-1].mac)
        return records, sealed

    async def _prepare_batch(self) -> None:  # noqa: B027, an optional hook
        """Run before a batch is sealed. A subclass may update ``_position`` here."""

    @abstractmethod
    async def _open(self) -> ChainPosition:
        """Open the destination and return the verified end of the chain found there."""

    @abstractmethod
    async def _write(self, records: Sequence[AuditRecord]) -> None:
        """Write the records, or raise ``AuditUnavailableError`` having written none of them."""

    async def _copy(self, records: Sequence[AuditRecord]) -> None:  # noqa: B027, an optional hook
        """Copy records that ``_write`` wrote to a second destination, if the log has one.

        Raising ``AuditUnavailableError`` here fails the callers, although the records stay
        written and the chain continues after them.
        """

    @abstractmethod
    async def _close(self) -> None:
        """Close the destination; also called after a failed ``_open``."""


def _fail_all(waiters: Sequence[_Waiter], error: AuditUnavailableError) -> None:
    for _, done in waiters:
        if not done.done():
            # Each caller raises its own copy, so that tracebacks do not pile up on one object.
            copy = AuditUnavailableError(error.message)
            copy.__cause__ = error.__cause__
            done.set_exception(copy)
