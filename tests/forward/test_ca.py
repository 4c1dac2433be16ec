"""The forward proxy's CA files, and the ``vaultgate ca`` commands."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509

from gateway.cli import main
from gateway.proxy.ca import CERT_FILE, KEY_FILE, ensure_ca, load_cert_store, rotate_ca


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_a_private_ca(tmp_path: Path) -> None:
    files = ensure_ca(tmp_path / "ca")
    assert mode(files.key_file) == 0o600
    assert mode(files.directory) == 0o700
    certificate = files.certificate()
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is True
    assert b"PRIVATE KEY" not in files.cert_file.read_bytes()
    assert load_cert_store(files).default_ca.serial == certificate.serial_number


def test_second_use_keeps_the_ca(tmp_path: Path) -> None:
    first = ensure_ca(tmp_path).fingerprint()
    (tmp_path / CERT_FILE).unlink()
    assert ensure_ca(tmp_path).fingerprint() == first


def test_rotate_makes_a_new_ca(tmp_path: Path) -> None:
    first = ensure_ca(tmp_path).fingerprint()
    files = rotate_ca(tmp_path)
    assert files.fingerprint() != first
    assert mode(files.key_file) == 0o600
    assert ensure_ca(tmp_path).fingerprint() == files.fingerprint()


def test_readable_key_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ensure_ca(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gateway.forward"):
        ensure_ca(tmp_path)
    assert any("chmod 600" in record.getMessage() for record in caplog.records)


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "pay.yaml").write_text(
        "connection: pay\nupstream: https://api.example.com\nhosts: [api.example.com]\nroutes: []\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text("keys: {file: k.yaml}\nforward: {ca_dir: ca}\n")
    return config


def test_ca_export_prints_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ca", "export", "-c", str(write_config(tmp_path))]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "ca" / CERT_FILE).read_text()
    assert printed.startswith("-----BEGIN CERTIFICATE-----")


def test_ca_rotate_names_the_new_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    before = ensure_ca(tmp_path / "ca").fingerprint()
    assert main(["ca", "rotate", "-c", str(config)]) == 0
    after = ensure_ca(tmp_path / "ca").fingerprint()
    assert after != before
    assert after in capsys.readouterr().err


def test_ca_export_without_config_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "export", "-c", str(tmp_path / "missing.yaml")]) == 1
    assert "not found" in capsys.readouterr().err
