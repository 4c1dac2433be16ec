"""The key rotation commands, run as a subprocess the way operators run them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store.base import PutRequest, StoredRecord
from gateway.store.sqlite import SqliteStore
from gateway.tokens.keys import KeyRing, generate_key_file_text, parse_key_file
from gateway.tokens.vault import Revealed, TokenizeItem, Vault
from tests.test_cli import vaultgate

VALUES = [f"customer-{n}@example.com" for n in range(50)]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "keys.yaml").write_text(generate_key_file_text(development=False))
    (tmp_path / "keys.yaml").chmod(0o600)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "store: {url: 'sqlite:///tokens.db'}\n"
        "keys: {file: keys.yaml, env: TEST_VAULTGATE_KEYS, development: false}\n"
        "routes: []\n"
    )
    return config


def key_ring_of(config_file: Path) -> KeyRing:
    path = config_file.parent / "keys.yaml"
    return KeyRing(parse_key_file(path.read_text(), source=str(path)))


async def tokenize(config_file: Path, values: list[str]) -> list[str]:
    store = SqliteStore(config_file.parent / "tokens.db", timeout=5.0)
    try:
        vault = Vault(store, key_ring_of(config_file))
        await vault.check_key_ring()
        results = await vault.tokenize_many([TokenizeItem(value) for value in values])
    finally:
        await store.close()
    return [str(result) for result in results]


async def detokenize(config_file: Path, tokens: list[str]) -> list[str | None]:
    store = SqliteStore(config_file.parent / "tokens.db", timeout=5.0)
    try:
        results = await Vault(store, key_ring_of(config_file)).detokenize_many(tokens)
    finally:
        await store.close()
    return [result.value if isinstance(result, Revealed) else None for result in results]


def test_rotate_reencrypt_retire(config_file: Path) -> None:
    tokens = asyncio.run(tokenize(config_file, VALUES))
    config = str(config_file)
    keys_before = encoded_keys(config_file)

    status = vaultgate("keys", "status", "-c", config)
    rotate = vaultgate("keys", "rotate", "-c", config)
    early_retire = vaultgate("keys", "retire", "1", "-c", config)
    reencrypt = vaultgate("keys", "reencrypt", "-c", config, "--batch-size", "20")
    retire = vaultgate("keys", "retire", "1", "-c", config)
    final_status = vaultgate("keys", "status", "-c", config)

    assert status.returncode == 0, status.stderr
    # The 50 tokens and the key-check record.
    assert "  version 1: 51 (primary)" in status.stdout
    assert rotate.returncode == 0, rotate.stderr
    assert "added master key version 2" in rotate.stdout
    assert "vaultgate keys reencrypt" in rotate.stdout
    assert early_retire.returncode == 1
    assert "51 records are still sealed under master key version 1" in early_retire.stderr
    assert reencrypt.returncode == 0, reencrypt.stderr
    assert "before: version 1: 51" in reencrypt.stdout
    assert "after:  version 2: 51" in reencrypt.stdout
    assert "51 re-encrypted" in reencrypt.stdout
    assert "every record is sealed under master key version 2" in reencrypt.stdout
    assert retire.returncode == 0, retire.stderr
    assert "removed master key version 1" in retire.stdout
    assert "  version 2: 51 (primary)" in final_status.stdout
    assert "version 1" not in final_status.stdout
    assert asyncio.run(detokenize(config_file, tokens)) == VALUES
    output = "".join(
        result.stdout + result.stderr
        for result in (status, rotate, early_retire, reencrypt, retire, final_status)
    )
    # The index key and master keys 1 and 2.
    all_keys = keys_before | encoded_keys(config_file)
    assert len(all_keys) == 3
    for key in all_keys:
        assert key not in output


def encoded_keys(config_file: Path) -> set[str]:
    """Return the base64 text of every key in the key file."""
    text = (config_file.parent / "keys.yaml").read_text()
    return {line.split('"')[1] for line in text.splitlines() if 'key: "' in line}


def test_rotate_refuses_keys_from_environment(config_file: Path) -> None:
    before = (config_file.parent / "keys.yaml").read_text()

    result = vaultgate(
        "keys", "rotate", "-c", str(config_file), env={"TEST_VAULTGATE_KEYS": before}
    )

    assert result.returncode == 1
    assert "works only with a key file (keys.file)" in result.stderr
    assert "TEST_VAULTGATE_KEYS" in result.stderr
    assert (config_file.parent / "keys.yaml").read_text() == before


def test_retire_refuses_primary(config_file: Path) -> None:
    result = vaultgate("keys", "retire", "1", "-c", str(config_file))

    assert result.returncode == 1
    assert "master key version 1 is the primary" in result.stderr


def test_reencrypt_fails_while_records_remain(config_file: Path) -> None:
    asyncio.run(tokenize(config_file, VALUES[:3]))
    asyncio.run(put_record_of_unknown_version(config_file))
    assert vaultgate("keys", "rotate", "-c", str(config_file)).returncode == 0

    result = vaultgate("keys", "reencrypt", "-c", str(config_file))

    assert result.returncode == 1
    assert "1 failed to open" in result.stdout
    assert "after:  version 2: 4, version 9: 1" in result.stdout
    assert "1 records still use other master key versions than 2" in result.stderr


async def put_record_of_unknown_version(config_file: Path) -> None:
    store = SqliteStore(config_file.parent / "tokens.db", timeout=5.0)
    try:
        record = StoredRecord(os.urandom(32), os.urandom(80), 9, None)
        await store.put_many([PutRequest(record)])
    finally:
        await store.close()


# The two tests below run in-process: they end before the command configures logging, which
# would replace the test session's log handlers.


def test_missing_config_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["keys", "status", "-c", str(tmp_path / "absent.yaml")])

    assert status == 1
    assert "absent.yaml not found" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-5", "many"])
def test_batch_size_must_be_positive(
    config_file: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys", "reencrypt", "-c", str(config_file), "--batch-size", size])

    assert caught.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
