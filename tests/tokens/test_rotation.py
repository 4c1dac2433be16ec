"""Key rotation on both real backends: add a primary key, re-encrypt under load, retire."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.errors import InvalidTokenError, KeyMaterialError, KeyRotationError
from gateway.store.base import PutRequest, StoredRecord, TokenStore
from gateway.tokens.crypto import RecordCipher, fingerprint
from gateway.tokens.keys import KeyRing, generate_key_file_text
from gateway.tokens.rotation import (
    ReencryptProgress,
    ReencryptReport,
    add_primary_key,
    read_key_file,
    reencrypt,
    retire_key,
)
from gateway.tokens.vault import Revealed, TokenizeItem, ValueType, Vault
from tests.conftest import StoreBackend

BATCH = 1000
"""Items per tokenize call, the default limits.max_fields of a route."""


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "keys.yaml"
    path.parent.mkdir()
    path.write_text(generate_key_file_text(development=False))
    path.chmod(0o600)
    return path


def read_text(path: Path) -> str:
    return path.read_text()


def ring_of(path: Path) -> KeyRing:
    return KeyRing(read_key_file(path))


def mixed_items(count: int, *, seed: str) -> list[TokenizeItem]:
    """Return ``count`` distinct values in every format, some deterministic, some with a ttl."""
    items = []
    for n in range(count):
        kind = n % 5
        if kind == 0:
            item = TokenizeItem(f"4242{n:012d}", format="pan")
        elif kind == 1:
            item = TokenizeItem(f"5555 {n:04d} {n // 7:04d} 4444", format="pan_last4")
        elif kind == 2:
            item = TokenizeItem(f"{n:09d}", format="numeric", class_name="us.ssn")
        elif kind == 3:
            item = TokenizeItem(f"{seed}-AB-{n}", format="alphanumeric")
        else:
            item = TokenizeItem(f"{seed} customer {n}@example.com", value_type=ValueType.STRING)
        deterministic = n % 7 == 0
        ttl = 3600.0 if n % 4 == 0 else None
        items.append(
            TokenizeItem(
                item.value,
                format=item.format,
                value_type=item.value_type,
                deterministic=deterministic,
                ttl=ttl,
                class_name=item.class_name,
            )
        )
    return items


async def tokenize_all(vault: Vault, items: Sequence[TokenizeItem]) -> list[str]:
    tokens: list[str] = []
    for start in range(0, len(items), BATCH):
        results = await vault.tokenize_many(items[start : start + BATCH])
        for result in results:
            assert isinstance(result, str), result
            tokens.append(result)
    return tokens


async def failed_detokenizations(
    vault: Vault, tokens: Sequence[str], values: Sequence[str]
) -> list[int]:
    """Return the positions of tokens that do not detokenize to their value."""
    failed = []
    for start in range(0, len(tokens), BATCH):
        results = await vault.detokenize_many(tokens[start : start + BATCH])
        for offset, result in enumerate(results):
            position = start + offset
            if not isinstance(result, Revealed) or result.value != values[position]:
                failed.append(position)
    return failed


@dataclass
class Load:
    """Traffic of a reloaded gateway: tokenize new values and detokenize old and new tokens."""

    vault: Vault
    old_tokens: list[str]
    old_values: list[str]
    rounds: int = 0
    failures: list[str] = field(default_factory=list)
    new_tokens: list[str] = field(default_factory=list)
    new_values: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        chooser = random.Random(4242)
        while not self.done.is_set():
            fresh = mixed_items(50, seed=f"load{self.rounds}")
            self.new_tokens += await tokenize_all(self.vault, fresh)
            self.new_values += [item.value for item in fresh]

            sample = chooser.sample(range(len(self.old_tokens)), 400)
            tokens = [self.old_tokens[i] for i in sample] + self.new_tokens[-50:]
            values = [self.old_values[i] for i in sample] + self.new_values[-50:]
            for position in await failed_detokenizations(self.vault, tokens, values):
                self.failures.append(f"round {self.rounds}: token {position} of the sample")
            self.rounds += 1


async def test_rotation_under_load_loses_nothing(
    backend: StoreBackend, key_file: Path, tmp_path: Path
) -> None:
    gateway = Vault(backend.open(), ring_of(key_file))
    await gateway.check_key_ring()
    items = mixed_items(20_000, seed="batch")
    tokens = await tokenize_all(gateway, items)
    values = [item.value for item in items]

    add_primary_key(key_file)
    rotated = ring_of(key_file)
    gateway.use_key_ring(rotated)  # what SIGHUP does in a running gateway
    load = Load(gateway, tokens, values)
    load_rounds_at_batch: list[int] = []
    reports: list[ReencryptReport] = []

    def on_batch(progress: ReencryptProgress) -> None:
        load_rounds_at_batch.append(load.rounds)

    async def reencrypt_then_stop_load() -> None:
        try:
            report = await reencrypt(
                backend.open(),
                rotated,
                batch_size=500,
                state_file=tmp_path / "state.json",
                on_batch=on_batch,
            )
        finally:
            load.done.set()
        reports.append(report)

    await asyncio.gather(load.run(), reencrypt_then_stop_load())
    [report] = reports

    assert load.failures == []
    assert load.rounds >= 2
    assert load_rounds_at_batch[-1] > load_rounds_at_batch[0], "the load ran only before or after"
    assert report.completed
    assert report.before[1] == 20_001  # the tokens and the key-check record
    assert report.progress.reencrypted == 20_001
    assert report.progress.failed == 0
    assert report.progress.conflicts == 0
    assert report.remaining == 0
    assert set(report.after) == {2}
    assert not (tmp_path / "state.json").exists()

    await retire_key(key_file, 1, backend.open())
    retired = ring_of(key_file)
    assert retired.versions == (2,)
    after_retirement = Vault(backend.open(), retired)
    await after_retirement.check_key_ring()
    all_tokens = tokens + load.new_tokens
    all_values = values + load.new_values
    assert await failed_detokenizations(after_retirement, all_tokens, all_values) == []


async def test_interrupted_reencrypt_resumes(
    backend: StoreBackend, key_file: Path, tmp_path: Path
) -> None:
    gateway = Vault(backend.open(), ring_of(key_file))
    items = mixed_items(3000, seed="resume")
    tokens = await tokenize_all(gateway, items)
    add_primary_key(key_file)
    rotated = ring_of(key_file)
    state_file = tmp_path / "state.json"
    stop = asyncio.Event()
    batches = 0

    def stop_after_two_batches(progress: ReencryptProgress) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            stop.set()

    first = await reencrypt(
        backend.open(),
        rotated,
        batch_size=400,
        state_file=state_file,
        stop_event=stop,
        on_batch=stop_after_two_batches,
    )
    saved = json.loads(state_file.read_text())
    # A new store object stands for a new process: only the state file carries over.
    second = await reencrypt(backend.open(), rotated, batch_size=400, state_file=state_file)

    assert not first.completed
    assert 0 < first.progress.reencrypted < 3000
    assert first.remaining == 3000 - first.progress.reencrypted
    assert saved["primary_version"] == 2
    assert second.completed
    assert first.progress.reencrypted + second.progress.reencrypted == 3000
    assert second.progress.scanned < 3000
    if backend.name == "sqlite":
        assert first.progress.scanned + second.progress.scanned == 3000
    assert second.remaining == 0
    assert not state_file.exists()
    values = [item.value for item in items]
    assert await failed_detokenizations(Vault(backend.open(), rotated), tokens, values) == []


async def test_state_of_older_rotation_ignored(
    store: TokenStore, key_file: Path, tmp_path: Path
) -> None:
    await tokenize_all(Vault(store, ring_of(key_file)), mixed_items(30, seed="old"))
    add_primary_key(key_file)
    state_file = tmp_path / "state.json"
    # A cursor past every record: honored, it would make the scan skip them all.
    cursor = "ff" * 32
    state = {"format": "vaultgate-reencrypt-state/1", "primary_version": 1, "cursor": cursor}
    state_file.write_text(json.dumps(state))

    report = await reencrypt(store, ring_of(key_file), batch_size=10, state_file=state_file)

    assert report.progress.reencrypted == 30
    assert report.remaining == 0


@pytest.mark.parametrize("content", ["not json", "[]", '{"format": "other", "cursor": "1"}'])
async def test_invalid_state_file_rejected(
    store: TokenStore, key_file: Path, tmp_path: Path, content: str
) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(content)

    with pytest.raises(KeyRotationError, match="delete it to start over"):
        await reencrypt(store, ring_of(key_file), state_file=state_file)


async def test_foreign_cursor_in_state_rejected(
    store: TokenStore, key_file: Path, tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    state = {"format": "vaultgate-reencrypt-state/1", "primary_version": 1, "cursor": "x"}
    state_file.write_text(json.dumps(state))

    with pytest.raises(KeyRotationError, match="delete the file to start over"):
        await reencrypt(store, ring_of(key_file), state_file=state_file)


async def test_unopenable_record_counted_and_kept(
    store: TokenStore, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring = ring_of(key_file)
    [token] = await tokenize_all(Vault(store, ring), [TokenizeItem("kept as it is")])
    lookup_key = RecordCipher(ring).lookup_key(token)
    [record] = await store.get_many([lookup_key])
    assert record is not None
    await store.delete_many([lookup_key])
    flipped = record.blob[:-1] + bytes([record.blob[-1] ^ 1])
    await store.put_many([PutRequest(StoredRecord(lookup_key, flipped, 1, None))])
    add_primary_key(key_file)

    with caplog.at_level(logging.ERROR, logger="gateway.keys"):
        report = await reencrypt(store, ring_of(key_file))

    assert report.progress.failed == 1
    assert report.remaining == 1
    assert report.after == {1: 1}
    assert fingerprint(lookup_key) in caplog.text
    assert token not in caplog.text
    with pytest.raises(KeyRotationError, match="1 records are still sealed"):
        await retire_key(key_file, 1, store)


async def test_reencrypt_of_empty_store(store: TokenStore, key_file: Path) -> None:
    report = await reencrypt(store, ring_of(key_file), batch_size=5)

    assert report.completed
    assert report.before == report.after == {}
    assert report.progress == ReencryptProgress()


def test_add_primary_key_keeps_old_keys(key_file: Path) -> None:
    before = read_key_file(key_file)

    rotated = add_primary_key(key_file)

    reread = read_key_file(key_file)
    assert rotated.primary == reread.primary == 2
    assert [master.version for master in reread.master_keys] == [1, 2]
    old_key = before.master_keys[0].key.reveal()
    assert reread.master_keys[0].key.reveal() == old_key
    assert reread.master_keys[1].key.reveal() != old_key
    assert reread.index_key.reveal() == before.index_key.reveal()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert os.listdir(key_file.parent) == ["keys.yaml"]


def test_add_primary_key_twice(key_file: Path) -> None:
    add_primary_key(key_file)
    add_primary_key(key_file)

    ring = ring_of(key_file)
    assert ring.versions == (1, 2, 3)
    assert ring.primary_version == 3


def test_add_primary_key_to_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot read key file"):
        add_primary_key(tmp_path / "missing.yaml")


async def test_retire_refuses_primary(store: TokenStore, key_file: Path) -> None:
    add_primary_key(key_file)
    text = read_text(key_file)

    with pytest.raises(KeyRotationError, match="is the primary"):
        await retire_key(key_file, 2, store)

    assert read_text(key_file) == text


async def test_retire_refuses_unknown_version(store: TokenStore, key_file: Path) -> None:
    add_primary_key(key_file)

    with pytest.raises(
        KeyRotationError, match="has no master key version 7; its versions are 1, 2"
    ):
        await retire_key(key_file, 7, store)


async def test_retire_refuses_used_version(store: TokenStore, key_file: Path) -> None:
    await tokenize_all(Vault(store, ring_of(key_file)), mixed_items(3, seed="used"))
    add_primary_key(key_file)
    text = read_text(key_file)

    with pytest.raises(KeyRotationError, match="3 records are still sealed under master key"):
        await retire_key(key_file, 1, store)

    assert read_text(key_file) == text


async def test_retired_key_no_longer_opens(store: TokenStore, key_file: Path) -> None:
    old_ring = ring_of(key_file)
    add_primary_key(key_file)
    await retire_key(key_file, 1, store)
    # A record sealed under version 1 after the count, by a gateway that never reloaded.
    [token] = await tokenize_all(Vault(store, old_ring), [TokenizeItem("late")])

    [result] = await Vault(store, ring_of(key_file)).detokenize_many([token])

    assert isinstance(result, InvalidTokenError)
