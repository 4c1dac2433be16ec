"""The TokenStore contract, run against both real backends with the same cases."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from gateway.errors import StoreUnavailableError
from gateway.store.base import PutRequest, PutResult, PutStatus, StoredRecord, TokenStore
from gateway.tokens.keys import KeyRing
from gateway.tokens.vault import TokenizeItem, Vault
from tests.conftest import UNAVAILABLE_TIMEOUT, StoreBackend

STORED = PutResult(PutStatus.STORED)
COLLISION = PutResult(PutStatus.COLLISION)


def in_ms(seconds_from_now: float) -> float:
    """Return a Unix time that far from now, whole in milliseconds as the stores keep it."""
    return round((time.time() + seconds_from_now) * 1000) / 1000


def record(
    lookup_key: bytes | None = None,
    *,
    blob: bytes | None = None,
    key_version: int = 1,
    expires_at: float | None = None,
) -> StoredRecord:
    return StoredRecord(
        lookup_key if lookup_key is not None else os.urandom(32),
        blob if blob is not None else os.urandom(60),
        key_version,
        expires_at,
    )


def indexed(item: StoredRecord, index_key: bytes, sealed_token: bytes) -> PutRequest:
    return PutRequest(item, index_key=index_key, sealed_token=sealed_token)


async def test_put_then_get(store: TokenStore) -> None:
    first = record(key_version=3)
    second = record(expires_at=in_ms(3600))

    assert await store.put_many([PutRequest(first), PutRequest(second)]) == [STORED, STORED]
    found = await store.get_many([second.lookup_key, os.urandom(32), first.lookup_key])

    assert found == [second, None, first]


async def test_get_many_keeps_order_and_duplicates(store: TokenStore) -> None:
    item = record()
    await store.put_many([PutRequest(item)])

    assert await store.get_many([item.lookup_key, item.lookup_key]) == [item, item]


async def test_taken_lookup_key_collides(store: TokenStore) -> None:
    original = record()
    await store.put_many([PutRequest(original)])

    result = await store.put_many([PutRequest(record(original.lookup_key))])

    assert result == [COLLISION]
    assert await store.get_many([original.lookup_key]) == [original]


async def test_live_index_entry_exists(store: TokenStore) -> None:
    index_key = os.urandom(32)
    first, second = record(), record()
    await store.put_many([indexed(first, index_key, b"sealed first")])

    result = await store.put_many([indexed(second, index_key, b"sealed second")])

    assert result == [PutResult(PutStatus.EXISTING, sealed_token=b"sealed first")]
    assert await store.get_many([second.lookup_key]) == [None]


async def test_existing_wins_over_collision(store: TokenStore) -> None:
    index_key = os.urandom(32)
    first = record()
    await store.put_many([indexed(first, index_key, b"sealed first")])

    result = await store.put_many([indexed(record(first.lookup_key), index_key, b"other")])

    assert result == [PutResult(PutStatus.EXISTING, sealed_token=b"sealed first")]


async def test_batch_items_decided_in_order(store: TokenStore) -> None:
    index_key = os.urandom(32)
    taken = record()
    same_value_first, same_value_second = record(), record()

    results = await store.put_many(
        [
            PutRequest(taken),
            indexed(same_value_first, index_key, b"sealed first"),
            PutRequest(record(taken.lookup_key)),
            indexed(same_value_second, index_key, b"sealed second"),
            PutRequest(record()),
        ]
    )

    assert results == [
        STORED,
        STORED,
        COLLISION,
        PutResult(PutStatus.EXISTING, sealed_token=b"sealed first"),
        STORED,
    ]
    found = await store.get_many([taken.lookup_key, same_value_second.lookup_key])
    assert found == [taken, None]


async def test_expired_record_invisible(store: TokenStore) -> None:
    expired = record(expires_at=in_ms(-1))

    assert await store.put_many([PutRequest(expired)]) == [STORED]
    assert await store.get_many([expired.lookup_key]) == [None]


async def test_expiry_kept_to_millisecond(store: TokenStore) -> None:
    precise = record(expires_at=time.time() + 3600.1234567)
    await store.put_many([PutRequest(precise)])

    [found] = await store.get_many([precise.lookup_key])

    assert found is not None
    assert precise.expires_at is not None
    assert found.expires_at == round(precise.expires_at * 1000) / 1000


async def test_expired_lookup_key_reusable(store: TokenStore) -> None:
    expired = record(expires_at=in_ms(-1))
    await store.put_many([PutRequest(expired)])
    replacement = record(expired.lookup_key)

    assert await store.put_many([PutRequest(replacement)]) == [STORED]
    assert await store.get_many([expired.lookup_key]) == [replacement]


async def test_expired_index_entry_ignored(store: TokenStore) -> None:
    index_key = os.urandom(32)
    await store.put_many([indexed(record(expires_at=in_ms(-1)), index_key, b"old")])
    fresh = record()

    assert await store.put_many([indexed(fresh, index_key, b"new")]) == [STORED]
    result = await store.put_many([indexed(record(), index_key, b"newer")])
    assert result == [PutResult(PutStatus.EXISTING, sealed_token=b"new")]


async def test_record_expires_on_time(store: TokenStore) -> None:
    short = record(expires_at=in_ms(0.3))
    await store.put_many([PutRequest(short)])

    assert await store.get_many([short.lookup_key]) == [short]
    found: list[StoredRecord | None] = [short]
    for _ in range(100):
        found = await store.get_many([short.lookup_key])
        if found == [None]:
            break
        await asyncio.sleep(0.05)
    assert found == [None]


async def test_delete_removes_records_and_entries(store: TokenStore) -> None:
    index_key = os.urandom(32)
    plain, deterministic, kept = record(), record(), record()
    await store.put_many(
        [PutRequest(plain), indexed(deterministic, index_key, b"sealed"), PutRequest(kept)]
    )

    deleted = await store.delete_many(
        [plain.lookup_key, deterministic.lookup_key, plain.lookup_key, os.urandom(32)]
    )

    assert deleted == 2
    found = await store.get_many([plain.lookup_key, deterministic.lookup_key, kept.lookup_key])
    assert found == [None, None, kept]
    assert await store.put_many([indexed(record(), index_key, b"again")]) == [STORED]


async def test_delete_skips_expired_records(store: TokenStore) -> None:
    expired = record(expires_at=in_ms(-1))
    await store.put_many([PutRequest(expired)])

    assert await store.delete_many([expired.lookup_key]) == 0


async def test_empty_calls_return_empty(store: TokenStore) -> None:
    assert await store.put_many([]) == []
    assert await store.get_many([]) == []
    assert await store.delete_many([]) == 0


async def test_ping_and_durability(store: TokenStore) -> None:
    await store.ping()

    assert await store.durability_warnings() == []


async def test_index_key_without_sealed_token_rejected(store: TokenStore) -> None:
    request = PutRequest(record(), index_key=os.urandom(32))

    with pytest.raises(ValueError, match="together"):
        await store.put_many([request])


async def test_second_connection_sees_writes(backend: StoreBackend) -> None:
    first, second = backend.open(), backend.open()
    item = record()

    await first.put_many([PutRequest(item)])

    assert await second.get_many([item.lookup_key]) == [item]


async def test_concurrent_puts_share_one_entry(backend: StoreBackend) -> None:
    stores = [backend.open(), backend.open()]
    index_key = os.urandom(32)

    results = await asyncio.gather(
        *(
            stores[n % 2].put_many([indexed(record(), index_key, f"sealed {n}".encode())])
            for n in range(40)
        )
    )

    statuses = [result.status for [result] in results]
    assert statuses.count(PutStatus.STORED) == 1
    assert statuses.count(PutStatus.EXISTING) == 39
    winner = statuses.index(PutStatus.STORED)
    assert {result.sealed_token for [result] in results if result.status is PutStatus.EXISTING} == {
        f"sealed {winner}".encode()
    }


async def test_concurrent_vaults_agree_on_token(backend: StoreBackend, key_ring: KeyRing) -> None:
    vaults = [Vault(backend.open(), key_ring), Vault(backend.open(), key_ring)]
    item = TokenizeItem("4242424242424242", format="pan", deterministic=True)

    results = await asyncio.gather(*(vaults[n % 2].tokenize_many([item]) for n in range(60)))

    tokens = {token for [token] in results}
    assert len(tokens) == 1
    assert all(isinstance(token, str) for token in tokens)


async def test_unavailable_store_raises_then_recovers(backend: StoreBackend) -> None:
    store = backend.open(timeout=UNAVAILABLE_TIMEOUT)
    before = record()
    await store.put_many([PutRequest(before)])
    lost = [record(), record(), record()]

    with backend.unavailable():
        with pytest.raises(StoreUnavailableError):
            await store.put_many([PutRequest(item) for item in lost])
        with pytest.raises(StoreUnavailableError):
            await store.delete_many([before.lookup_key])

    after = record()
    assert await store.put_many([PutRequest(after)]) == [STORED]
    found = await store.get_many(
        [before.lookup_key, after.lookup_key] + [i.lookup_key for i in lost]
    )
    assert found == [before, after, None, None, None]


async def test_close_twice(backend: StoreBackend) -> None:
    store = backend.open()
    await store.ping()

    await store.close()
    await store.close()


async def scan_all(store: TokenStore, limit: int) -> tuple[list[StoredRecord], int]:
    """Return every record a full scan returns, and how many calls it took."""
    found: list[StoredRecord] = []
    cursor: str | None = None
    calls = 0
    while True:
        batch, cursor = await store.scan_records(cursor, limit)
        calls += 1
        found += batch
        if cursor is None:
            return found, calls


async def test_count_by_key_version(store: TokenStore) -> None:
    records = [
        record(key_version=1),
        record(key_version=1, expires_at=in_ms(3600)),
        record(key_version=1),
        record(key_version=2, expires_at=in_ms(3600)),
        record(key_version=2),
        record(key_version=3, expires_at=in_ms(-1)),
    ]
    await store.put_many([PutRequest(item) for item in records])

    assert await store.count_by_key_version() == {1: 3, 2: 2}

    await store.delete_many([records[0].lookup_key, records[3].lookup_key])

    assert await store.count_by_key_version() == {1: 2, 2: 1}


async def test_count_of_empty_store(store: TokenStore) -> None:
    assert await store.count_by_key_version() == {}


async def test_count_drops_expired_records(store: TokenStore) -> None:
    short = record(key_version=4, expires_at=in_ms(0.3))
    await store.put_many([PutRequest(short), PutRequest(record(key_version=5))])

    assert await store.count_by_key_version() == {4: 1, 5: 1}
    counts: dict[int, int] = {}
    for _ in range(100):
        counts = await store.count_by_key_version()
        if 4 not in counts:
            break
        await asyncio.sleep(0.05)
    assert counts == {5: 1}


async def test_scan_returns_every_live_record(store: TokenStore) -> None:
    live = [record(key_version=n % 3 + 1) for n in range(20)]
    live += [record(expires_at=in_ms(3600)) for _ in range(4)]
    deterministic = record()
    await store.put_many(
        [PutRequest(item) for item in live]
        + [indexed(deterministic, os.urandom(32), b"sealed")]
        + [PutRequest(record(expires_at=in_ms(-1)))]
    )
    live.append(deterministic)

    found, calls = await scan_all(store, limit=7)

    assert {item.lookup_key: item for item in found} == {item.lookup_key: item for item in live}
    assert calls > 1


async def test_scan_limit_bounds_sqlite_batches(backend: StoreBackend) -> None:
    store = backend.open()
    await store.put_many([PutRequest(record()) for _ in range(30)])

    batch, cursor = await store.scan_records(None, 7)

    assert cursor is not None
    if backend.name == "sqlite":
        assert len(batch) == 7


async def test_scan_of_empty_store(store: TokenStore) -> None:
    found, calls = await scan_all(store, limit=10)

    assert found == []
    assert calls >= 1


async def test_scan_resumes_on_new_connection(backend: StoreBackend) -> None:
    first = backend.open()
    items = [record() for _ in range(40)]
    await first.put_many([PutRequest(item) for item in items])
    found, cursor = await first.scan_records(None, 10)
    await first.close()

    second = backend.open()
    while cursor is not None:
        batch, cursor = await second.scan_records(cursor, 10)
        found += batch

    assert {item.lookup_key for item in found} == {item.lookup_key for item in items}


@pytest.mark.parametrize("cursor", ["not a cursor", "-1", "0x10", "1" * 31])
async def test_scan_rejects_foreign_cursor(store: TokenStore, cursor: str) -> None:
    # "1" * 31 is too large for a Redis cursor (at most 2**64 - 1) and of odd length for hex.
    with pytest.raises(ValueError, match="invalid scan cursor"):
        await store.scan_records(cursor, 10)


async def test_replace_unchanged_record(store: TokenStore) -> None:
    permanent = record(key_version=1)
    expiring = record(key_version=1, expires_at=in_ms(3600))
    await store.put_many([PutRequest(permanent), PutRequest(expiring)])
    new_permanent = StoredRecord(permanent.lookup_key, os.urandom(70), 2, None)
    # The expiry of the new record is ignored; the stored one is kept.
    new_expiring = StoredRecord(expiring.lookup_key, os.urandom(70), 2, in_ms(60))

    replaced = await store.replace_many(
        [(permanent.blob, new_permanent), (expiring.blob, new_expiring)]
    )

    assert replaced == 2
    found = await store.get_many([permanent.lookup_key, expiring.lookup_key])
    assert found == [
        new_permanent,
        StoredRecord(expiring.lookup_key, new_expiring.blob, 2, expiring.expires_at),
    ]
    assert await store.count_by_key_version() == {2: 2}


async def test_replace_keeps_index_entry(store: TokenStore) -> None:
    index_key = os.urandom(32)
    original = record(key_version=1)
    await store.put_many([indexed(original, index_key, b"sealed original")])
    resealed = StoredRecord(original.lookup_key, os.urandom(70), 2, None)

    assert await store.replace_many([(original.blob, resealed)]) == 1

    again = await store.put_many([indexed(record(), index_key, b"sealed other")])
    assert again == [PutResult(PutStatus.EXISTING, sealed_token=b"sealed original")]
    assert await store.delete_many([original.lookup_key]) == 1
    assert await store.put_many([indexed(record(), index_key, b"sealed new")]) == [STORED]


async def test_replace_loses_to_concurrent_write(store: TokenStore) -> None:
    original = record(key_version=1)
    await store.put_many([PutRequest(original)])
    winner = StoredRecord(original.lookup_key, os.urandom(70), 2, None)
    late = StoredRecord(original.lookup_key, os.urandom(70), 2, None)

    assert await store.replace_many([(original.blob, winner)]) == 1
    assert await store.replace_many([(original.blob, late)]) == 0

    assert await store.get_many([original.lookup_key]) == [winner]
    assert await store.count_by_key_version() == {2: 1}


async def test_replace_loses_to_delete(store: TokenStore) -> None:
    deleted = record(key_version=1)
    kept = record(key_version=1)
    await store.put_many([PutRequest(deleted), PutRequest(kept)])
    await store.delete_many([deleted.lookup_key])

    replaced = await store.replace_many(
        [
            (deleted.blob, StoredRecord(deleted.lookup_key, os.urandom(70), 2, None)),
            (kept.blob, StoredRecord(kept.lookup_key, os.urandom(70), 2, None)),
        ]
    )

    assert replaced == 1
    assert await store.get_many([deleted.lookup_key]) == [None]
    assert await store.count_by_key_version() == {2: 1}


async def test_replace_loses_to_new_record_at_same_key(store: TokenStore) -> None:
    expired = record(key_version=1, expires_at=in_ms(-1))
    await store.put_many([PutRequest(expired)])
    successor = record(expired.lookup_key, key_version=1)
    await store.put_many([PutRequest(successor)])

    stale = StoredRecord(expired.lookup_key, os.urandom(70), 2, None)

    assert await store.replace_many([(expired.blob, stale)]) == 0
    assert await store.get_many([expired.lookup_key]) == [successor]


async def test_replace_skips_expired_record(store: TokenStore) -> None:
    expired = record(key_version=1, expires_at=in_ms(-1))
    await store.put_many([PutRequest(expired)])

    replacement = StoredRecord(expired.lookup_key, os.urandom(70), 2, None)

    assert await store.replace_many([(expired.blob, replacement)]) == 0
    assert await store.get_many([expired.lookup_key]) == [None]
    assert await store.count_by_key_version() == {}


async def test_concurrent_replaces_one_wins(backend: StoreBackend) -> None:
    stores = [backend.open(), backend.open()]
    original = record(key_version=1)
    await stores[0].put_many([PutRequest(original)])
    candidates = [StoredRecord(original.lookup_key, os.urandom(70), 2, None) for _ in range(20)]

    results = await asyncio.gather(
        *(
            stores[n % 2].replace_many([(original.blob, candidate)])
            for n, candidate in enumerate(candidates)
        )
    )

    assert sorted(results) == [0] * 19 + [1]
    [found] = await stores[0].get_many([original.lookup_key])
    assert found == candidates[results.index(1)]


async def test_replace_of_nothing(store: TokenStore) -> None:
    assert await store.replace_many([]) == 0
