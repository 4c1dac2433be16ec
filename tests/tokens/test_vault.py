from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from gateway.errors import (
    InvalidTokenError,
    InvalidValueError,
    KeyMaterialError,
    StoreError,
    TokenSpaceExhaustedError,
)
from gateway.secret import Secret
from gateway.store.base import PutRequest, PutResult, StoredRecord, TokenStore
from gateway.tokens.crypto import RecordCipher, fingerprint
from gateway.tokens.formats import is_luhn_valid
from gateway.tokens.keys import KeyFile, KeyRing, MasterKey
from gateway.tokens.vault import KEY_CHECK_LOOKUP_KEY, Revealed, TokenizeItem, ValueType, Vault
from tests.conftest import make_key_ring
from tests.tokens.test_crypto import LAYOUT_1_RECORD_VECTOR

PAN = "4242424242424242"


class CountingStore(TokenStore):
    """The real store under test, with a count of the calls that reach it."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.put_calls = 0
        self.get_calls = 0

    async def put_many(self, requests: Sequence[PutRequest]) -> list[PutResult]:
        self.put_calls += 1
        return await self.store.put_many(requests)

    async def get_many(self, lookup_keys: Sequence[bytes]) -> list[StoredRecord | None]:
        self.get_calls += 1
        return await self.store.get_many(lookup_keys)

    async def delete_many(self, lookup_keys: Sequence[bytes]) -> int:
        return await self.store.delete_many(lookup_keys)

    async def erase_many(self, index_keys: Sequence[bytes]) -> int:
        return await self.store.erase_many(index_keys)

    async def replace_many(self, items: Sequence[tuple[bytes, StoredRecord]]) -> int:
        return await self.store.replace_many(items)

    async def count_by_key_version(self) -> dict[int, int]:
        return await self.store.count_by_key_version()

    async def scan_records(
        self, cursor: str | None, limit: int
    ) -> tuple[list[StoredRecord], str | None]:
        return await self.store.scan_records(cursor, limit)

    async def ping(self) -> None:
        await self.store.ping()

    async def durability_warnings(self) -> list[str]:
        return await self.store.durability_warnings()

    async def close(self) -> None:
        await self.store.close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counting_store(store: TokenStore) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def vault(counting_store: CountingStore, key_ring: KeyRing) -> Vault:
    return Vault(counting_store, key_ring)


def tokens_of(results: Sequence[str | InvalidValueError]) -> list[str]:
    tokens = [result for result in results if isinstance(result, str)]
    assert len(tokens) == len(results), f"some items failed: {results}"
    return tokens


def revealed_of(results: Sequence[Revealed | InvalidTokenError]) -> list[Revealed]:
    revealed = [result for result in results if isinstance(result, Revealed)]
    assert len(revealed) == len(results), f"some tokens failed: {results}"
    return revealed


ROUND_TRIP_ITEMS = [
    TokenizeItem("Jane Doe"),
    TokenizeItem(PAN, format="pan"),
    TokenizeItem("4242 4242 4242 4242", format="pan_last4"),
    TokenizeItem("078051120", format="numeric", class_name="us.ssn"),
    TokenizeItem("AB-12 x", format="alphanumeric"),
    TokenizeItem("ünïcödé ✓ and a\nnewline"),
    TokenizeItem(""),
]


async def test_round_trip_of_every_format(vault: Vault) -> None:
    tokens = tokens_of(await vault.tokenize_many(ROUND_TRIP_ITEMS))
    revealed = revealed_of(await vault.detokenize_many(tokens))

    assert [r.value for r in revealed] == [item.value for item in ROUND_TRIP_ITEMS]
    assert [r.format for r in revealed] == [item.format for item in ROUND_TRIP_ITEMS]
    assert [r.class_name for r in revealed] == [
        "generic.uuid",
        "card.pan",
        "card.pan",
        "us.ssn",
        "generic.alphanumeric",
        "generic.uuid",
        "generic.uuid",
    ]
    assert all(r.value_type is ValueType.STRING for r in revealed)
    assert tokens[1][:6] == PAN[:6]
    assert is_luhn_valid(tokens[1])


@pytest.mark.parametrize("number", ["4242.50", "-0.0", "1e10", "12E-3", "0", "10"])
async def test_number_keeps_exact_text(vault: Vault, number: str) -> None:
    [token] = tokens_of(
        await vault.tokenize_many([TokenizeItem(number, value_type=ValueType.NUMBER)])
    )
    [revealed] = revealed_of(await vault.detokenize_many([token]))

    assert revealed.value == number
    assert revealed.value_type is ValueType.NUMBER


async def test_number_in_numeric_format(vault: Vault) -> None:
    item = TokenizeItem("4242", format="numeric", value_type=ValueType.NUMBER)

    [token] = tokens_of(await vault.tokenize_many([item]))
    [revealed] = revealed_of(await vault.detokenize_many([token]))

    assert revealed.value == "4242"
    assert revealed.value_type is ValueType.NUMBER


async def test_invalid_items_fail_alone(vault: Vault, counting_store: CountingStore) -> None:
    items = [
        TokenizeItem("first"),
        TokenizeItem("not a card", format="pan"),
        TokenizeItem("12.5.1", value_type=ValueType.NUMBER),
        TokenizeItem("01", value_type=ValueType.NUMBER),
        TokenizeItem("value", format="no_such_format"),
        TokenizeItem("value", ttl=0),
        TokenizeItem("value", ttl=-5),
        TokenizeItem("value", ttl=float("nan")),
        TokenizeItem("value", ttl=float("inf")),
        TokenizeItem("value", class_name="c" * 256),
        TokenizeItem("last"),
    ]

    results = await vault.tokenize_many(items)

    assert len(results) == len(items)
    assert isinstance(results[0], str)
    assert isinstance(results[-1], str)
    for result in results[1:-1]:
        assert isinstance(result, InvalidValueError)
    assert counting_store.put_calls == 1


async def test_value_missing_from_error(vault: Vault) -> None:
    [error] = await vault.tokenize_many([TokenizeItem("4242-4242-4242-424X", format="pan")])

    assert isinstance(error, InvalidValueError)
    assert "4242" not in str(error)


async def test_batch_uses_one_store_call(vault: Vault, counting_store: CountingStore) -> None:
    items = [TokenizeItem(f"value {n}", deterministic=n % 2 == 0) for n in range(200)]

    tokens = tokens_of(await vault.tokenize_many(items))
    revealed = revealed_of(await vault.detokenize_many(tokens))

    assert counting_store.put_calls == 1
    assert counting_store.get_calls == 1
    assert len(set(tokens)) == 200
    assert [r.value for r in revealed] == [item.value for item in items]


async def test_empty_batches_skip_store(vault: Vault, counting_store: CountingStore) -> None:
    assert await vault.tokenize_many([]) == []
    assert await vault.detokenize_many([]) == []
    assert counting_store.put_calls == 0
    assert counting_store.get_calls == 0


async def test_deterministic_token_repeats(vault: Vault) -> None:
    item = TokenizeItem(PAN, format="pan", deterministic=True)

    first = tokens_of(await vault.tokenize_many([item, item]))
    second = tokens_of(await vault.tokenize_many([item]))

    assert first[0] == first[1] == second[0]


async def test_deterministic_token_depends_on_class_and_format(vault: Vault) -> None:
    items = [
        TokenizeItem(PAN, format="pan", deterministic=True),
        TokenizeItem(PAN, format="pan", deterministic=True, class_name="card.other"),
        TokenizeItem(PAN, format="pan_last4", deterministic=True),
        TokenizeItem(PAN, format="uuid", deterministic=True),
    ]

    tokens = tokens_of(await vault.tokenize_many(items))

    assert len(set(tokens)) == 4


async def test_random_tokens_differ(vault: Vault) -> None:
    item = TokenizeItem(PAN, format="pan")

    tokens = tokens_of(await vault.tokenize_many([item, item, item]))

    assert len(set(tokens)) == 3


async def test_deterministic_token_survives_rotation(store: TokenStore) -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    old_ring = make_key_ring(primary=1)
    old_key_file = KeyFile(
        False, 1, (MasterKey(1, old_ring.master_key(1), created),), Secret(bytes(range(32, 64)))
    )
    rotated_ring = KeyRing(old_key_file.with_new_primary(created=created))
    item = TokenizeItem("customer-42", deterministic=True)

    [old_token] = tokens_of(await Vault(store, old_ring).tokenize_many([item]))
    rotated = Vault(store, rotated_ring)
    [new_token] = tokens_of(await rotated.tokenize_many([item]))
    [revealed] = revealed_of(await rotated.detokenize_many([old_token]))

    assert new_token == old_token
    assert revealed.value == "customer-42"


async def test_ttl_expiry_follows_clock(store: TokenStore, key_ring: KeyRing) -> None:
    clock = Clock()
    vault = Vault(store, key_ring, clock=clock)
    [token] = tokens_of(await vault.tokenize_many([TokenizeItem("short-lived", ttl=60)]))

    clock.now += 59
    [still_live] = await vault.detokenize_many([token])
    clock.now += 2
    [expired] = await vault.detokenize_many([token])

    assert isinstance(still_live, Revealed)
    assert isinstance(expired, InvalidTokenError)


async def test_expired_token_gone_from_store(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring)
    [token] = tokens_of(await vault.tokenize_many([TokenizeItem("short-lived", ttl=0.2)]))

    results: list[Revealed | InvalidTokenError] = []
    for _ in range(100):
        results = await vault.detokenize_many([token])
        if isinstance(results[0], InvalidTokenError):
            break
        await asyncio.sleep(0.05)

    assert isinstance(results[0], InvalidTokenError)


async def test_expired_deterministic_token_replaced(store: TokenStore, key_ring: KeyRing) -> None:
    clock = Clock()
    clock.now -= 3600  # the token expires an hour before the store's real time
    vault = Vault(store, key_ring, clock=clock)
    item = TokenizeItem("customer-42", deterministic=True, ttl=60)

    [first] = tokens_of(await vault.tokenize_many([item]))
    [second] = tokens_of(await vault.tokenize_many([item]))

    assert first != second


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("tok_" + "a" * 253, id="257-characters"),
        pytest.param("tok_\x00abc", id="nul"),
        pytest.param("tok_abc\n", id="newline"),
        pytest.param("tok_\x9b", id="c1-control"),
        pytest.param("tok_\udc80", id="lone-surrogate"),
    ],
)
async def test_malformed_token_skips_store(
    vault: Vault, counting_store: CountingStore, token: str
) -> None:
    [result] = await vault.detokenize_many([token])

    assert isinstance(result, InvalidTokenError)
    assert counting_store.get_calls == 0


async def test_longest_token_is_looked_up(vault: Vault, counting_store: CountingStore) -> None:
    [result] = await vault.detokenize_many(["tok_" + "a" * 252])

    assert isinstance(result, InvalidTokenError)
    assert counting_store.get_calls == 1


async def test_unknown_tokens_fail_alone(vault: Vault) -> None:
    [token] = tokens_of(await vault.tokenize_many([TokenizeItem("known")]))

    results = await vault.detokenize_many(["tok_unknown", token, "", token])

    assert isinstance(results[0], InvalidTokenError)
    assert isinstance(results[1], Revealed)
    assert isinstance(results[2], InvalidTokenError)
    assert isinstance(results[3], Revealed)


async def test_tampered_record_logged_and_rejected(
    store: TokenStore, key_ring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    vault = Vault(store, key_ring)
    cipher = RecordCipher(key_ring)
    first, second = tokens_of(await vault.tokenize_many([TokenizeItem("one"), TokenizeItem("two")]))
    first_key, second_key = cipher.lookup_key(first), cipher.lookup_key(second)
    [first_record] = await store.get_many([first_key])
    assert first_record is not None

    # Someone with write access to the store copies the first record's blob under the second token.
    await store.delete_many([second_key])
    moved = StoredRecord(second_key, first_record.blob, first_record.key_version, None)
    await store.put_many([PutRequest(moved)])
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        results = await vault.detokenize_many([first, second])

    assert isinstance(results[0], Revealed)
    assert isinstance(results[1], InvalidTokenError)
    errors = [r for r in caplog.records if r.name == "gateway.store" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert fingerprint(second_key) in errors[0].getMessage()
    assert second not in caplog.text
    assert "one" not in caplog.text


async def test_flipped_byte_rejected(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring)
    [token] = tokens_of(await vault.tokenize_many([TokenizeItem("value", ttl=3600)]))
    lookup_key = RecordCipher(key_ring).lookup_key(token)
    [record] = await store.get_many([lookup_key])
    assert record is not None

    flipped = bytearray(record.blob)
    flipped[-1] ^= 0x01
    await store.delete_many([lookup_key])
    await store.put_many(
        [
            PutRequest(
                StoredRecord(lookup_key, bytes(flipped), record.key_version, record.expires_at)
            )
        ]
    )
    [result] = await vault.detokenize_many([token])

    assert isinstance(result, InvalidTokenError)


async def test_other_key_ring_cannot_reveal(store: TokenStore, key_ring: KeyRing) -> None:
    [token] = tokens_of(await Vault(store, key_ring).tokenize_many([TokenizeItem("value")]))
    stranger = Vault(store, make_key_ring(index_key=bytes(32)))

    [result] = await stranger.detokenize_many([token])

    assert isinstance(result, InvalidTokenError)


async def test_collisions_retried(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring, max_attempts=200)
    # A 12-digit card number has only 9 possible pan tokens, so later items collide and only
    # retries find the free ones.
    item = TokenizeItem("424242424242", format="pan")

    tokens = [tokens_of(await vault.tokenize_many([item]))[0] for _ in range(9)]

    assert len(set(tokens)) == 9


async def tokenize_until_error(vault: Vault, item: TokenizeItem, tokens: list[str]) -> None:
    for _ in range(50):
        tokens += tokens_of(await vault.tokenize_many([item]))


async def test_token_space_exhausted(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring, max_attempts=5)
    tokens: list[str] = []

    with pytest.raises(TokenSpaceExhaustedError) as caught:
        await tokenize_until_error(vault, TokenizeItem("7", format="numeric"), tokens)

    assert len(set(tokens)) == len(tokens) <= 9
    assert "numeric" in str(caught.value)
    assert "uuid" in str(caught.value)


async def test_corrupt_index_entry_raises(
    store: TokenStore, key_ring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    cipher = RecordCipher(key_ring)
    index_key = cipher.blind_index("generic.uuid", "uuid", "customer-42")
    record = StoredRecord(cipher.lookup_key("tok_planted"), b"blob", 2, None)
    await store.put_many([PutRequest(record, index_key=index_key, sealed_token=b"\x01" * 40)])

    with caplog.at_level(logging.ERROR, logger="gateway.store"), pytest.raises(StoreError):
        await Vault(store, key_ring).tokenize_many(
            [TokenizeItem("customer-42", deterministic=True)]
        )

    assert any(r.name == "gateway.store" and r.levelno == logging.ERROR for r in caplog.records)


def rotated(ring: KeyRing) -> KeyRing:
    """Return ``ring`` with a new primary master key, as ``vaultgate keys rotate`` makes it."""
    created = datetime(2025, 1, 1, tzinfo=UTC)
    masters = tuple(MasterKey(v, ring.master_key(v), created) for v in ring.versions)
    key_file = KeyFile(False, ring.primary_version, masters, Secret(bytes(range(32, 64))))
    return KeyRing(key_file.with_new_primary(created=created))


async def test_use_key_ring_seals_under_new_primary(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring)
    [old_token] = tokens_of(await vault.tokenize_many([TokenizeItem("before")]))

    vault.use_key_ring(rotated(key_ring))
    [new_token] = tokens_of(await vault.tokenize_many([TokenizeItem("after")]))

    cipher = RecordCipher(key_ring)
    old_record, new_record = await store.get_many(
        [cipher.lookup_key(old_token), cipher.lookup_key(new_token)]
    )
    assert old_record is not None
    assert new_record is not None
    assert old_record.key_version == 2
    assert new_record.key_version == 3
    assert vault.key_ring.primary_version == 3
    revealed = revealed_of(await vault.detokenize_many([old_token, new_token]))
    assert [item.value for item in revealed] == ["before", "after"]


async def test_use_key_ring_rejects_other_index_key(store: TokenStore, key_ring: KeyRing) -> None:
    vault = Vault(store, key_ring)
    [token] = tokens_of(await vault.tokenize_many([TokenizeItem("kept")]))

    with pytest.raises(KeyMaterialError, match="index key"):
        vault.use_key_ring(make_key_ring(primary=3, index_key=bytes(32)))

    assert vault.key_ring is key_ring
    [revealed] = revealed_of(await vault.detokenize_many([token]))
    assert revealed.value == "kept"


async def test_key_check_accepts_its_own_ring(store: TokenStore, key_ring: KeyRing) -> None:
    await Vault(store, key_ring).check_key_ring()
    await Vault(store, key_ring).check_key_ring()

    [record] = await store.get_many([KEY_CHECK_LOOKUP_KEY])
    assert record is not None
    assert record.key_version == 2


async def test_key_check_rejects_other_ring(store: TokenStore, key_ring: KeyRing) -> None:
    await Vault(store, key_ring).check_key_ring()
    stranger = Vault(store, make_key_ring(index_key=bytes(32)))

    with pytest.raises(KeyMaterialError, match="another key ring"):
        await stranger.check_key_ring()


async def test_key_check_names_earlier_layout(store: TokenStore, key_ring: KeyRing) -> None:
    old = StoredRecord(KEY_CHECK_LOOKUP_KEY, LAYOUT_1_RECORD_VECTOR, 2, None)
    await store.put_many([PutRequest(old)])

    with pytest.raises(KeyMaterialError, match="earlier development version"):
        await Vault(store, key_ring).check_key_ring()


async def test_layout_1_record_fails_to_detokenize(
    store: TokenStore, key_ring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    cipher = RecordCipher(key_ring)
    lookup_key = cipher.lookup_key("4242421234564242")
    await store.put_many([PutRequest(StoredRecord(lookup_key, LAYOUT_1_RECORD_VECTOR, 2, None))])

    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        [result] = await Vault(store, key_ring).detokenize_many(["4242421234564242"])

    assert isinstance(result, InvalidTokenError)
    assert "earlier development versions" in caplog.text
