"""The tokenizer's per-run cache on a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import InvalidTokenError, InvalidValueError
from gateway.pipelines.tokenizer import VaultTokenizer
from gateway.store.sqlite import SqliteStore
from gateway.tokens.vault import TokenizeItem, Vault
from tests.conftest import make_key_ring


@pytest.fixture
def loop_and_store(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, SqliteStore]]:
    loop = asyncio.new_event_loop()
    store = SqliteStore(tmp_path / "tokens.db", timeout=5.0)
    yield loop, store
    loop.run_until_complete(store.close())
    loop.close()


def test_repeated_values_reach_the_store_once(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    tokenizer = VaultTokenizer(Vault(store, make_key_ring()), loop)
    ssn = TokenizeItem("123-45-6789", class_name="person.ssn")
    name = TokenizeItem("Alice", class_name="person.name")

    first = tokenizer.tokenize([ssn, name, ssn])
    second = tokenizer.tokenize([name, ssn])

    assert first[0] == first[2] == second[1]
    assert first[1] == second[0]
    assert tokenizer.store_items == 2


def test_errors_are_returned_per_item(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    tokenizer = VaultTokenizer(Vault(store, make_key_ring()), loop)
    results = tokenizer.tokenize([TokenizeItem("not a card", format="pan"), TokenizeItem("x")])
    assert isinstance(results[0], InvalidValueError)
    assert isinstance(results[1], str)
    revealed = tokenizer.detokenize(["tok_00000000000000000000000000000000", results[1]])
    assert isinstance(revealed[0], InvalidTokenError)
    assert getattr(revealed[1], "value", None) == "x"


def test_cache_forgets_oldest_when_full(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    tokenizer = VaultTokenizer(Vault(store, make_key_ring()), loop, max_entries=4)
    items = [TokenizeItem(f"value {number}", deterministic=True) for number in range(6)]
    tokens = [tokenizer.tokenize([item])[0] for item in items]
    assert tokenizer.store_items == 6

    # The first item was forgotten, so it goes to the store again and, being deterministic,
    # gets its token back.
    assert tokenizer.tokenize([items[0]]) == [tokens[0]]
    assert tokenizer.store_items == 7
    assert tokenizer.tokenize([items[5]]) == [tokens[5]]
    assert tokenizer.store_items == 7


def test_item_in_flight_is_tokenized_once(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    tokenizer = VaultTokenizer(Vault(store, make_key_ring()), loop)
    # Not deterministic: only the tokenizer can give both batches the same token.
    shared = TokenizeItem("Alice", class_name="person.name")
    other = TokenizeItem("Bob", class_name="person.name")

    first = tokenizer.submit([shared])
    second = tokenizer.submit([other, shared])
    second_tokens = second.result()
    first_tokens = first.result()

    assert second_tokens[1] == first_tokens[0]
    assert second_tokens[0] != first_tokens[0]
    assert tokenizer.store_items == 2


def test_results_collect_in_submit_order(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    vault = Vault(store, make_key_ring())
    tokenizer = VaultTokenizer(vault, loop)
    batches = [
        tokenizer.submit([TokenizeItem(f"value {batch} {index}") for index in range(50)])
        for batch in range(3)
    ]

    tokens = [token for batch in batches for token in batch.result()]

    revealed = loop.run_until_complete(vault.detokenize_many([str(token) for token in tokens]))
    values = [getattr(item, "value", None) for item in revealed]
    assert values == [f"value {batch} {index}" for batch in range(3) for index in range(50)]


def test_cancel_pending_ends_every_batch(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    loop, store = loop_and_store
    tokenizer = VaultTokenizer(Vault(store, make_key_ring()), loop)
    item = TokenizeItem("Alice", class_name="person.name")
    tokenizer.submit([item])
    tokenizer.submit([TokenizeItem("Bob")])

    tokenizer.cancel_pending()

    assert [task for task in asyncio.all_tasks(loop) if not task.done()] == []
    # The cancelled item is neither cached nor in flight, so it goes to the store again.
    [token] = tokenizer.tokenize([item])
    assert isinstance(token, str)
    assert tokenizer.store_items == 3


def test_cache_skips_expired_tokens(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    # A run can last longer than a rule's ttl. A token the cache keeps must not be written to
    # the output, or revealed, after it has expired.
    loop, store = loop_and_store
    now = [time.time()]
    vault = Vault(store, make_key_ring(), clock=lambda: now[0])
    tokenizer = VaultTokenizer(vault, loop)
    item = TokenizeItem("Alice", class_name="person.name", ttl=60)
    [first] = tokenizer.tokenize([item])
    assert isinstance(first, str)
    [shown] = tokenizer.detokenize([first])
    assert getattr(shown, "value", None) == "Alice"

    now[0] += 120
    [second] = tokenizer.tokenize([item])
    assert second != first
    assert isinstance(second, str)
    [revealed] = loop.run_until_complete(vault.detokenize_many([second]))
    assert getattr(revealed, "value", None) == "Alice"
    [expired] = tokenizer.detokenize([first])
    assert isinstance(expired, InvalidTokenError)


def test_cache_skips_deterministic_tokens_with_ttl(
    loop_and_store: tuple[asyncio.AbstractEventLoop, SqliteStore],
) -> None:
    # A deterministic token keeps the expiry of its first tokenization, possibly by an earlier
    # run, so the ttl of this request does not tell when it expires.
    loop, store = loop_and_store
    key_ring = make_key_ring()
    ttl = 3600.0
    earlier = Vault(store, key_ring, clock=lambda: time.time() - ttl + 1)
    item = TokenizeItem("Alice", class_name="person.name", deterministic=True, ttl=ttl)
    [created] = loop.run_until_complete(earlier.tokenize_many([item]))
    vault = Vault(store, key_ring)
    tokenizer = VaultTokenizer(vault, loop)
    assert tokenizer.tokenize([item]) == [created]

    time.sleep(1.2)
    [later] = tokenizer.tokenize([item])
    assert later != created
    assert isinstance(later, str)
    [revealed] = loop.run_until_complete(vault.detokenize_many([later]))
    assert getattr(revealed, "value", None) == "Alice"
