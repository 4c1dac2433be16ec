"""The token store interface that the Redis and SQLite backends implement.

The store never sees a token or a value. It keeps sealed records (see ``gateway.tokens.crypto``)
under lookup keys, which are keyed hashes of tokens, and deterministic index entries under blind
indexes, which are keyed hashes of values. A dump of the store therefore lists no usable token.

Every method costs one round trip to the backend, whatever the batch size, and ``put_many`` and
``replace_many`` return only after the write is durable (fsync on SQLite, the server's
persistence on Redis).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A sealed token record as the store keeps it."""

    lookup_key: bytes
    blob: bytes
    key_version: int
    expires_at: float | None
    """Unix time in seconds after which the record is gone, or None to keep it.

    Stores keep it to the millisecond, so a record read back may differ from the one written by
    less than a millisecond here.
    """


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A record to write, and for deterministic tokens the index entry that leads to it.

    ``index_key`` is the blind index of the value. ``sealed_token`` is the token sealed for that
    index entry, so that a later tokenization of the same value can return the same token.
    """

    record: StoredRecord
    index_key: bytes | None = None
    sealed_token: bytes | None = None


class PutStatus(enum.Enum):
    STORED = "stored"
    """The record (and its index entry) were written."""
    COLLISION = "collision"
    """A live record already uses this lookup key; nothing was written. Pick another token."""
    EXISTING = "existing"
    """A live index entry for the value exists; nothing was written. Use its sealed token."""


@dataclass(frozen=True, slots=True)
class PutResult:
    status: PutStatus
    sealed_token: bytes | None = None
    """For EXISTING: the sealed token of the entry that was already there."""


class TokenStore(ABC):
    """Batch storage of sealed records, atomic per item.

    ``put_many`` decides each item in order, as if alone: an item whose ``index_key`` has a live
    entry (whose record is live too) gets EXISTING; otherwise an item whose lookup key is taken by
    a live record gets COLLISION; otherwise both are written and the item gets STORED. Two items of
    one batch with the same index key therefore give STORED and then EXISTING, and two gateways
    that tokenize the same deterministic value at once get one token between them.

    Reachability failures raise ``StoreUnavailableError``; nothing is half-written when they do.
    """

    @abstractmethod
    async def put_many(self, requests: Sequence[PutRequest]) -> list[PutResult]:
        """Write the records in one round trip and return after they are durable."""

    @abstractmethod
    async def get_many(self, lookup_keys: Sequence[bytes]) -> list[StoredRecord | None]:
        """Return the live record for each lookup key, or None where there is none."""

    @abstractmethod
    async def delete_many(self, lookup_keys: Sequence[bytes]) -> int:
        """Delete the records and their index entries; return how many records existed."""

    @abstractmethod
    async def erase_many(self, index_keys: Sequence[bytes]) -> int:
        """Delete the index entries and the records they lead to; return how many records went.

        This is erasure by value: the caller computes the blind index of a deterministic value.
        """

    @abstractmethod
    async def count_by_key_version(self) -> dict[int, int]:
        """Return the number of live records sealed under each master key version.

        Versions without live records are left out.
        """

    @abstractmethod
    async def scan_records(
        self, cursor: str | None, limit: int
    ) -> tuple[list[StoredRecord], str | None]:
        """Return the next live records of a full scan and the cursor to continue from.

        Start with ``cursor`` None and pass each returned cursor back until it is None. A cursor
        is plain text that stays valid when the caller restarts, so a long scan can be saved and
        resumed. ``limit`` bounds the work of one call: SQLite returns at most ``limit`` records,
        while Redis examines about ``limit`` keys and may return fewer records, none, or a few
        more. A record that lives from the start to the end of the scan is returned at least
        once (Redis may return it twice). Records written during the scan may be missed, and so
        may any record when the Redis server restarts during the scan, because each start of
        Redis orders the keys differently (seen with Redis 7.0). Raises ``ValueError`` for a
        cursor that this backend did not return.
        """

    @abstractmethod
    async def replace_many(self, items: Sequence[tuple[bytes, StoredRecord]]) -> int:
        """Replace blobs and key versions of records in one atomic step per item.

        Each item is ``(expected blob, new record)``. The live record under the new record's
        lookup key is replaced only if its blob still equals the expected blob (compare-and-set),
        and it keeps its expiry and index entry. A record that was deleted, expired or written
        again since it was read is left as it is, and never written back. Returns how many
        records were replaced.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the backend responds."""

    @abstractmethod
    async def durability_warnings(self) -> list[str]:
        """Describe each backend setting that could lose an acknowledged write."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending writes finish first."""
