from __future__ import annotations

import base64
import logging
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config.model import KeysConfig
from gateway.errors import KeyMaterialError
from gateway.tokens.keys import (
    KeyRing,
    generate_key_file_text,
    load_key_ring,
    parse_key_file,
    render_key_file,
)

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
INDEX_KEY = base64.b64encode(bytes(range(200, 232))).decode()


def key_file_text(
    *,
    development: bool = False,
    primary: object = 2,
    index_key: object = INDEX_KEY,
    master_keys: object = None,
    **extra: object,
) -> str:
    document: dict[str, object] = {
        "format": "vaultgate-keys/1",
        "development": development,
        "primary": primary,
        "index_key": index_key,
        "master_keys": master_keys
        if master_keys is not None
        else [
            {"version": 1, "key": KEY_A, "created": "2025-01-01T00:00:00Z"},
            {"version": 2, "key": KEY_B, "created": "2025-06-01T00:00:00Z"},
        ],
        **extra,
    }
    return yaml.safe_dump(document)


def hkdf(key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(key)


def test_parse_key_file_reads_keys() -> None:
    key_file = parse_key_file(key_file_text(), source="keys.yaml")

    assert key_file.development is False
    assert key_file.primary == 2
    assert [master.version for master in key_file.master_keys] == [1, 2]
    assert key_file.master_keys[0].key.reveal() == bytes(range(32))
    assert key_file.master_keys[1].created == datetime(2025, 6, 1, tzinfo=UTC)
    assert key_file.index_key.reveal() == bytes(range(200, 232))


def test_key_ring_derives_secrets_with_hkdf_labels() -> None:
    ring = KeyRing(parse_key_file(key_file_text(), source="keys.yaml"))
    index_key = bytes(range(200, 232))

    assert ring.lookup_secret.reveal() == hkdf(index_key, b"vaultgate lookup key v1")
    assert ring.blind_index_secret.reveal() == hkdf(index_key, b"vaultgate blind index v1")
    assert ring.token_seal_key.reveal() == hkdf(index_key, b"vaultgate index entry seal v1")
    assert ring.audit_key.reveal() == hkdf(index_key, b"vaultgate audit record mac v1")
    derived = {ring.lookup_secret.reveal(), ring.blind_index_secret.reveal()}
    derived |= {ring.token_seal_key.reveal(), ring.audit_key.reveal()}
    assert len(derived | {index_key}) == 5


def test_audit_key_matches_pinned_value() -> None:
    # Audit files written under one release must verify under the next, so the derivation
    # of the audit key must never change.
    ring = KeyRing(parse_key_file(key_file_text(), source="keys.yaml"))

    assert (
        ring.audit_key.reveal().hex()
        == "194375274f354529d8ae27779f0c990b135c8f085231d691276e1c89c850c77e"
    )


def test_key_ring_finds_master_keys_by_version() -> None:
    ring = KeyRing(parse_key_file(key_file_text(), source="keys.yaml"))

    assert ring.primary_version == 2
    assert ring.versions == (1, 2)
    assert ring.master_key(1).reveal() == bytes(range(32))
    with pytest.raises(KeyMaterialError):
        ring.master_key(3)


def test_rotation_keeps_index_secrets() -> None:
    key_file = parse_key_file(key_file_text(), source="keys.yaml")
    rotated = key_file.with_new_primary(created=datetime(2026, 1, 1, tzinfo=UTC))
    ring, rotated_ring = KeyRing(key_file), KeyRing(rotated)

    assert rotated_ring.primary_version == 3
    assert rotated_ring.versions == (1, 2, 3)
    assert rotated_ring.master_key(3).reveal() not in {bytes(range(32)), bytes(range(100, 132))}
    assert rotated_ring.master_key(2).reveal() == ring.master_key(2).reveal()
    assert rotated_ring.lookup_secret.reveal() == ring.lookup_secret.reveal()
    assert rotated_ring.blind_index_secret.reveal() == ring.blind_index_secret.reveal()
    assert rotated_ring.audit_key.reveal() == ring.audit_key.reveal()


def test_render_key_file_round_trips() -> None:
    key_file = parse_key_file(key_file_text(development=True), source="keys.yaml")

    again = parse_key_file(render_key_file(key_file), source="again")

    assert again.development is True
    assert again.primary == key_file.primary
    assert again.index_key.reveal() == key_file.index_key.reveal()
    assert [(m.version, m.key.reveal(), m.created) for m in again.master_keys] == [
        (m.version, m.key.reveal(), m.created) for m in key_file.master_keys
    ]


def test_generated_key_file_is_valid_and_random() -> None:
    first = parse_key_file(generate_key_file_text(development=False), source="first")
    second = parse_key_file(generate_key_file_text(development=True), source="second")

    assert first.development is False
    assert second.development is True
    assert first.primary == 1
    assert len(first.master_keys[0].key.reveal()) == 32
    assert len(first.index_key.reveal()) == 32
    assert first.master_keys[0].key.reveal() != second.master_keys[0].key.reveal()
    assert first.index_key.reveal() != second.index_key.reveal()


def test_key_material_hidden_in_reprs() -> None:
    key_file = parse_key_file(key_file_text(), source="keys.yaml")
    shown = repr(key_file) + repr(KeyRing(key_file)) + str(key_file.master_keys)

    for key in (KEY_A, KEY_B, INDEX_KEY):
        assert key not in shown
    assert repr(bytes(range(32))) not in shown


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("just text", id="not-a-mapping"),
        pytest.param("format: [unclosed\n", id="invalid-yaml"),
        pytest.param(key_file_text().replace("vaultgate-keys/1", "vaultgate-keys/9"), id="format"),
        pytest.param(key_file_text(colour="blue"), id="unknown-field"),
        pytest.param(key_file_text(development="no"), id="development-not-bool"),
        pytest.param(key_file_text(primary=3), id="primary-missing"),
        pytest.param(key_file_text(primary=True), id="primary-bool"),
        pytest.param(key_file_text(primary=0), id="primary-zero"),
        pytest.param(key_file_text(index_key="not base64!"), id="index-key-not-base64"),
        pytest.param(key_file_text(index_key=KEY_A[:-8] + "===="), id="index-key-short"),
        pytest.param(key_file_text(master_keys=[]), id="no-master-keys"),
        pytest.param(
            key_file_text(primary=1, master_keys=[{"version": 1, "key": KEY_A}]),
            id="created-missing",
        ),
        pytest.param(
            key_file_text(
                primary=1,
                master_keys=[
                    {"version": 1, "key": KEY_A, "created": "2025-01-01T00:00:00Z"},
                    {"version": 1, "key": KEY_B, "created": "2025-01-01T00:00:00Z"},
                ],
            ),
            id="duplicate-version",
        ),
        pytest.param(
            key_file_text(
                primary=1,
                master_keys=[{"version": 1, "key": KEY_A, "created": "yesterday"}],
            ),
            id="created-not-a-time",
        ),
    ],
)
def test_parse_key_file_rejects_malformed(text: str) -> None:
    with pytest.raises(KeyMaterialError) as caught:
        parse_key_file(text, source="keys.yaml")

    message = str(caught.value)
    assert message.startswith("keys.yaml")
    for key in (KEY_A, KEY_B, INDEX_KEY):
        assert key not in message


def test_yaml_error_message_omits_key_line() -> None:
    text = f'index_key: "{INDEX_KEY}\nprimary: [1\n'

    with pytest.raises(KeyMaterialError) as caught:
        parse_key_file(text, source="keys.yaml")

    assert INDEX_KEY not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def write_key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_load_key_ring_reads_relative_file(tmp_path: Path) -> None:
    write_key_file(tmp_path / "conf" / "keys.yaml", key_file_text())
    config = KeysConfig(file=Path("conf/keys.yaml"))

    ring = load_key_ring(config, base_dir=tmp_path)

    assert ring.master_key(1).reveal() == bytes(range(32))


def test_load_key_ring_env_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_key_file(tmp_path / "keys.yaml", generate_key_file_text(development=False))
    monkeypatch.setenv("TEST_VAULTGATE_KEYS", key_file_text())
    config = KeysConfig(file=Path("keys.yaml"), env="TEST_VAULTGATE_KEYS")

    ring = load_key_ring(config, base_dir=tmp_path)

    assert ring.master_key(1).reveal() == bytes(range(32))


def test_load_key_ring_unset_env_uses_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text())
    monkeypatch.delenv("TEST_VAULTGATE_KEYS", raising=False)
    config = KeysConfig(file=Path("keys.yaml"), env="TEST_VAULTGATE_KEYS")

    ring = load_key_ring(config, base_dir=tmp_path)

    assert ring.master_key(1).reveal() == bytes(range(32))


def test_load_key_ring_rejects_empty_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text())
    monkeypatch.setenv("TEST_VAULTGATE_KEYS", "")
    config = KeysConfig(file=Path("keys.yaml"), env="TEST_VAULTGATE_KEYS")

    with pytest.raises(KeyMaterialError):
        load_key_ring(config, base_dir=tmp_path)


def test_missing_key_outside_development_raises(tmp_path: Path) -> None:
    config = KeysConfig(file=Path("var/keys.yaml"), development=False)

    with pytest.raises(KeyMaterialError) as caught:
        load_key_ring(config, base_dir=tmp_path)

    assert "vaultgate keys generate" in str(caught.value)
    assert not (tmp_path / "var").exists()


def test_development_key_generated_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = KeysConfig(file=Path("var/dev/keys.yaml"), development=True)
    path = tmp_path / "var" / "dev" / "keys.yaml"

    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        first = load_key_ring(config, base_dir=tmp_path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_key_file(path.read_text(), source="generated").development is True
    warnings = [
        r for r in caplog.records if r.name == "gateway.keys" and r.levelno == logging.WARNING
    ]
    assert any("vaultgate keys generate" in record.getMessage() for record in warnings)

    second = load_key_ring(config, base_dir=tmp_path)
    assert second.master_key(1).reveal() == first.master_key(1).reveal()
    assert second.lookup_secret.reveal() == first.lookup_secret.reveal()


def test_development_key_warned_once_per_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = KeysConfig(file=Path("keys.yaml"), development=True)

    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        for _ in range(3):
            load_key_ring(config, base_dir=tmp_path)

    warnings = [
        r for r in caplog.records if r.name == "gateway.keys" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "generated a DEVELOPMENT key file" in warnings[0].getMessage()


def test_generate_missing_false_raises(tmp_path: Path) -> None:
    config = KeysConfig(file=Path("var/keys.yaml"), development=True)

    with pytest.raises(KeyMaterialError) as caught:
        load_key_ring(config, base_dir=tmp_path, generate_missing=False)

    assert "no master key found" in str(caught.value)
    assert not (tmp_path / "var").exists()


def test_development_without_file_setting_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError):
        load_key_ring(KeysConfig(file=None, development=True), base_dir=tmp_path)


def test_development_key_rejected_outside_development(tmp_path: Path) -> None:
    write_key_file(tmp_path / "keys.yaml", generate_key_file_text(development=True))

    with pytest.raises(KeyMaterialError) as caught:
        load_key_ring(KeysConfig(file=Path("keys.yaml")), base_dir=tmp_path)

    assert "vaultgate keys generate" in str(caught.value)


def test_real_key_accepted_in_development(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text())

    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        ring = load_key_ring(
            KeysConfig(file=Path("keys.yaml"), development=True), base_dir=tmp_path
        )

    assert ring.development is False
    assert not [record for record in caplog.records if record.name == "gateway.keys"]


def test_key_file_readable_by_others_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text(), mode=0o644)

    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        load_key_ring(KeysConfig(file=Path("keys.yaml")), base_dir=tmp_path)

    warnings = [
        r for r in caplog.records if r.name == "gateway.keys" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert str(tmp_path / "keys.yaml") in warnings[0].getMessage()


def test_private_key_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text(), mode=0o600)

    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        load_key_ring(KeysConfig(file=Path("keys.yaml")), base_dir=tmp_path)

    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_key_ring_logs_no_key_material(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_key_file(tmp_path / "keys.yaml", key_file_text(development=True), mode=0o644)

    with caplog.at_level(logging.DEBUG):
        load_key_ring(KeysConfig(file=Path("keys.yaml"), development=True), base_dir=tmp_path)

    assert caplog.records
    for key in (KEY_A, KEY_B, INDEX_KEY):
        assert key not in caplog.text
