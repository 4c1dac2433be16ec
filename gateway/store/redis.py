"""The fleet token store: one Redis server (tested with Redis 7.0), not Redis Cluster.

Keys, with the hex of the store's keyed hashes:

- ``<prefix>:r:<lookup key>``: a record. The value starts with a 13-byte header: the key version
  in 4 bytes, the expiry as Unix milliseconds in 8 bytes (0 for never), and the length of the
  index entry key name in 1 byte (0 if none). The index entry key name and the blob follow.
- ``<prefix>:i:<index key>``: a deterministic index entry. The value is the length of the record
  key name in 1 byte, the record key name, then the sealed token.

Both keys of a record carry the record's expiry through ``PEXPIREAT``. ``put_many``,
``delete_many`` and ``replace_many`` are one Lua script call each, so every item is decided and
written atomically. The scripts also keep the counts of records by key version (see
``gateway.store.redis_scripts``), so that ``count_by_key_version`` needs no scan. The scripts
reach keys named inside values, which Redis Cluster does not allow.

NOTE: a record key removed by anything but these scripts (eviction, an operator's ``DEL``) stays
in the counts, so its key version still counts as used and cannot be retired.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import StoreError, StoreUnavailableError
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord, TokenStore
from gateway.store.coalesce import Coalescer
from gateway.store.redis_scripts import (
    COUNT_SCRIPT,
    DELETE_SCRIPT,
    ERASE_SCRIPT,
    PUT_SCRIPT,
    REPLACE_SCRIPT,
    SCAN_SCRIPT,
)

logger = logging.getLogger("gateway.store")

_RECORD_HEADER: Final = struct.Struct(">IQB")
_KEY_VERSION: Final = struct.Struct(">I")
_MAX_CURSOR: Final = 2**64 - 1
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")
_STORED: Final = 1
_COLLISION: Final = 0

# Errors of a server that is down, slow, or up but unable to take writes now: out of memory, a
# read-only replica, a replica without its primary, or still loading its data (BusyLoadingError
# is a ConnectionError). redis-py has no class for MISCONF (failing to persist), so its reply
# code is matched.
_UNAVAILABLE_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
)
_UNAVAILABLE_REPLY_CODE: Final = "MISCONF"

_SAFE_SETTINGS: Final = {
    "appendonly": (
        {"yes"},
        "acknowledged writes since the last snapshot are lost when Redis stops; set appendonly yes",
    ),
    "appendfsync": (
        {"always", "everysec"},
        "the operating system decides when the append-only file reaches the disk, so a crash "
        "can lose acknowledged writes; set appendfsync always (or everysec, which can lose "
        "about the last second)",
    ),
    "maxmemory-policy": (
        {"noeviction"},
        "Redis evicts keys when memory is full, which deletes live tokens; "
        "set maxmemory-policy noeviction",
    ),
}


class RedisStore(TokenStore):
    """A token store in Redis.

    ``timeout`` bounds connecting and each reply, in seconds. A failed command is retried once
    on a new connection, so the first call after a server restart succeeds.

    ``put_many`` returns when Redis acknowledges the script. The write is then as durable as the
    server's persistence settings make it, and ``durability_warnings`` names unsafe settings.
    """

    def __init__(self, url: str, *, timeout: float, prefix: str = "vg") -> None:
        self._prefix = prefix
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        self._put_script = self._client.register_script(PUT_SCRIPT)
        # Concurrent requests' batches go to Redis together, one round trip for all of them.
        self._put_batches: Coalescer[PutRequest, PutResult] = Coalescer(self._put_now)
        self._get_batches: Coalescer[bytes, StoredRecord | None] = Coalescer(self._get_now)
        self._delete_script = self._client.register_script(DELETE_SCRIPT)
        self._erase_script = self._client.register_script(ERASE_SCRIPT)
        self._replace_script = self._client.register_script(REPLACE_SCRIPT)
        self._count_script = self._client.register_script(COUNT_SCRIPT)
        self._scan_script = self._client.register_script(SCAN_SCRIPT)
        self._record_pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + ":r:*"

    def record_key(self, lookup_key: bytes) -> bytes:
        return f"{self._prefix}:r:{lookup_key.hex()}".encode()

    def index_entry_key(self, index_key: bytes) -> bytes:
        return f"{self._prefix}:i:{index_key.hex()}".encode()

    async def put_many(self, requests: Sequence[PutRequest]) -> list[PutResult]:
        if not requests:
            return []
        for request in requests:
            # Checked here, so that one caller's mistake cannot fail the others' batch.
            if (request.index_key is None) != (request.sealed_token is None):
                raise ValueError("index_key and sealed_token must be given together")
        return await self._put_batches.submit(requests)

    async def _put_now(self, requests: list[PutRequest]) -> list[PutResult]:
        keys: list[bytes] = []
        arguments: list[bytes | int | str] = [self._prefix]
        for request in requests:
            record_key, index_entry_key, record_value, entry_value = self._encode(request)
            keys += [record_key, index_entry_key]
            arguments += [record_value, _expiry_ms(request.record.expires_at), entry_value]

        async with self._mapped_errors("put_many"):
            replies = await self._put_script(keys=keys, args=arguments)
        return [_put_result(reply) for reply in replies]

    def _encode(self, request: PutRequest) -> tuple[bytes, bytes, bytes, bytes]:
        """Return the record key, index entry key, record value and index entry value.

        Without an index key the index entry key and value are empty.
        """
        record = request.record
        record_key = self.record_key(record.lookup_key)
        if request.index_key is None or request.sealed_token is None:
            if request.index_key is not None or request.sealed_token is not None:
                raise ValueError("index_key and sealed_token must be given together")
            index_entry_key = entry_value = b""
        else:
            index_entry_key = self.index_entry_key(request.index_key)
            entry_value = bytes([len(record_key)]) + record_key + request.sealed_token

        header = _RECORD_HEADER.pack(
            record.key_version, _expiry_ms(record.expires_at), len(index_entry_key)
        )
        return record_key, index_entry_key, header + index_entry_key + record.blob, entry_value

    async def get_many(self, lookup_keys: Sequence[bytes]) -> list[StoredRecord | None]:
        if not lookup_keys:
            return []
        return await self._get_batches.submit(lookup_keys)

    async def _get_now(self, lookup_keys: list[bytes]) -> list[StoredRecord | None]:
        async with self._mapped_errors("get_many"):
            values = await self._client.mget([self.record_key(key) for key in lookup_keys])
        return [
            None if value is None else _decode_record(key, value)
            for key, value in zip(lookup_keys, values, strict=True)
        ]

    async def delete_many(self, lookup_keys: Sequence[bytes]) -> int:
        if not lookup_keys:
            return 0
        keys = [self.record_key(key) for key in dict.fromkeys(lookup_keys)]
        async with self._mapped_errors("delete_many"):
            deleted = await self._delete_script(keys=keys, args=[self._prefix])
        return int(deleted)

    async def erase_many(self, index_keys: Sequence[bytes]) -> int:
        if not index_keys:
            return 0
        keys = [self.index_entry_key(key) for key in dict.fromkeys(index_keys)]
        async with self._mapped_errors("erase_many"):
            erased = await self._erase_script(keys=keys, args=[self._prefix])
        return int(erased)

    async def replace_many(self, items: Sequence[tuple[bytes, StoredRecord]]) -> int:
        if not items:
            return 0
        keys: list[bytes] = []
        arguments: list[bytes | str] = [self._prefix]
        for expected_blob, record in items:
            keys.append(self.record_key(record.lookup_key))
            arguments += [expected_blob, _KEY_VERSION.pack(record.key_version), record.blob]
        async with self._mapped_errors("replace_many"):
            replaced = await self._replace_script(keys=keys, args=arguments)
        return int(replaced)

    async def count_by_key_version(self) -> dict[int, int]:
        async with self._mapped_errors("count_by_key_version"):
            reply = await self._count_script(keys=[], args=[self._prefix])
        return {int(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def scan_records(
        self, cursor: str | None, limit: int
    ) -> tuple[list[StoredRecord], str | None]:
        if limit < 1:
            raise ValueError(f"scan limit must be at least 1, not {limit}")
        start = _parse_cursor(cursor)
        async with self._mapped_errors("scan_records"):
            reply = await self._scan_script(keys=[], args=[start, self._record_pattern, limit])

        next_cursor = reply[0].decode("ascii")
        key_prefix_length = len(self._prefix) + len(":r:")
        records = []
        for position in range(1, len(reply), 2):
            lookup_key = _lookup_key_of(reply[position][key_prefix_length:])
            records.append(_decode_record(lookup_key, reply[position + 1]))
        # SCAN returns cursor 0 when the iteration is complete.
        return records, None if next_cursor == "0" else next_cursor

    async def ping(self) -> None:
        async with self._mapped_errors("ping"):
            await self._client.ping()

    async def durability_warnings(self) -> list[str]:
        """Describe each Redis setting that could lose or evict an acknowledged token."""
        settings: dict[str, str] = {}
        try:
            async with self._mapped_errors("CONFIG GET"):
                for name in _SAFE_SETTINGS:
                    reply = await self._client.config_get(name)
                    settings.update(_decode_config(reply))
        except StoreError as exc:
            return [
                f"could not check the Redis persistence settings ({exc}); make sure that "
                "appendonly is yes, appendfsync is always or everysec, and maxmemory-policy "
                "is noeviction"
            ]

        warnings = []
        for name, (safe_values, consequence) in _SAFE_SETTINGS.items():
            value = settings.get(name, "unknown")
            if value not in safe_values:
                warnings.append(f"Redis {name} is {value}: {consequence}")
        return warnings

    async def close(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def _mapped_errors(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailableError(f"Redis store: {action} failed: {exc}") from exc
        except redis_errors.RedisError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLY_CODE):
                raise StoreUnavailableError(f"Redis store: {action} failed: {exc}") from exc
            raise StoreError(f"Redis store: {action} failed: {exc}") from exc


def _expiry_ms(expires_at: float | None) -> int:
    """Return the expiry in Unix milliseconds, with 0 for never (so a real time is at least 1)."""
    return 0 if expires_at is None else max(1, round(expires_at * 1000))


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and int(cursor) <= _MAX_CURSOR):
        raise ValueError(
            "invalid scan cursor for a Redis store: expected the decimal SCAN cursor that an "
            "earlier scan returned"
        )
    return int(cursor)


def _lookup_key_of(hex_text: bytes) -> bytes:
    try:
        return bytes.fromhex(hex_text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise StoreError(
            "Redis store: a key under the record prefix does not end in a hex lookup key; "
            "remove keys that the gateway did not write from its prefix"
        ) from None


def _put_result(reply: object) -> PutResult:
    if reply == _STORED:
        return PutResult(PutStatus.STORED)
    if reply == _COLLISION:
        return PutResult(PutStatus.COLLISION)
    if isinstance(reply, bytes):
        return PutResult(PutStatus.EXISTING, sealed_token=reply)
    raise StoreError(
        f"Redis store: put_many script returned an unexpected reply of type {type(reply).__name__}"
    )


def _decode_record(lookup_key: bytes, value: bytes | str) -> StoredRecord:
    # The client does not decode replies, so a record is always bytes.
    if not isinstance(value, bytes) or len(value) < _RECORD_HEADER.size:
        raise StoreError("Redis store: a record value is not a record (shorter than its header)")
    key_version, expires_ms, name_length = _RECORD_HEADER.unpack_from(value)
    blob = value[_RECORD_HEADER.size + name_length :]
    expires_at = None if expires_ms == 0 else expires_ms / 1000
    return StoredRecord(lookup_key, blob, key_version, expires_at)


def _decode_config(reply: Mapping[Any, object]) -> dict[str, str]:
    def text(item: object) -> str:
        return item.decode() if isinstance(item, bytes) else str(item)

    return {text(name): text(value) for name, value in reply.items()}
