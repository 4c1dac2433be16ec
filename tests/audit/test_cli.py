"""``vaultgate audit verify``, run as a subprocess the way operators run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit.records import ChainPosition, seal_events
from gateway.tokens.keys import KeyRing, generate_key_file_text, parse_key_file
from tests.audit.conftest import MOMENT, make_event, write_lines
from tests.test_cli import vaultgate


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration with a real key file and no routes."""
    (tmp_path / "keys.yaml").write_text(generate_key_file_text(development=False))
    (tmp_path / "keys.yaml").chmod(0o600)
    path = tmp_path / "gateway.yaml"
    path.write_text("keys: {file: keys.yaml}\nroutes: []\n")
    return path


def write_audit_file(config: Path, count: int) -> tuple[Path, list[bytes]]:
    """Write ``count`` records under the audit key of ``config``'s key file."""
    key_file = parse_key_file((config.parent / "keys.yaml").read_text(), source="keys.yaml")
    key = KeyRing(key_file).audit_key.reveal()
    events = [make_event(number) for number in range(1, count + 1)]
    lines = [record.line for record in seal_events(events, ChainPosition(), key, MOMENT)]
    return write_lines(config.parent / "audit.jsonl", lines), lines


def test_verify_prints_ok_with_end(config: Path) -> None:
    path, lines = write_audit_file(config, 4)

    result = vaultgate("audit", "verify", str(path), "-c", str(config))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK, 4 record(s), last sequence 4, last mac ")
    assert result.stdout.split()[-1] == lines[-1].split(b'"mac":"')[1][:64].decode()


def test_verify_names_first_bad_line(config: Path) -> None:
    path, lines = write_audit_file(config, 5)
    write_lines(path, lines[:2] + lines[3:])

    result = vaultgate("audit", "verify", str(path), "-c", str(config))

    assert result.returncode == 1
    assert result.stdout == ""
    first, second = result.stderr.splitlines()
    assert first.startswith(f"{path}:3: sequence gap: expected sequence 3, found 4")
    assert second == "vaultgate: the 2 record(s) before line 3 verify, up to sequence 2"


def test_verify_rejects_other_key(config: Path) -> None:
    path, _ = write_audit_file(config, 2)
    (config.parent / "keys.yaml").write_text(generate_key_file_text(development=False))

    result = vaultgate("audit", "verify", str(path), "-c", str(config))

    assert result.returncode == 1
    assert f"{path}:1: invalid mac" in result.stderr


def test_verify_never_generates_key(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: var/keys.yaml, development: true}\nroutes: []\n"
    )
    write_lines(tmp_path / "audit.jsonl", [])

    result = vaultgate(
        "audit", "verify", str(tmp_path / "audit.jsonl"), "-c", str(tmp_path / "gateway.yaml")
    )

    assert result.returncode == 1
    assert "no master key found" in result.stderr
    assert not (tmp_path / "var").exists()


def test_verify_missing_file(config: Path) -> None:
    result = vaultgate("audit", "verify", str(config.parent / "absent.jsonl"), "-c", str(config))

    assert result.returncode == 1
    assert "cannot read audit file" in result.stderr
    assert "No such file" in result.stderr


def test_verify_missing_config(tmp_path: Path) -> None:
    result = vaultgate("audit", "verify", "audit.jsonl", "-c", str(tmp_path / "absent.yaml"))

    assert result.returncode == 1
    assert "configuration file" in result.stderr
    assert "not found" in result.stderr


def test_verify_without_file_checks_every_worker_file(config: Path) -> None:
    path, _ = write_audit_file(config, 3)
    worker_1 = path.rename(config.parent / "audit.worker-1.jsonl")
    write_audit_file(config, 2)
    worker_2 = (config.parent / "audit.jsonl").rename(config.parent / "audit.worker-2.jsonl")
    config.write_text(config.read_text() + "audit: {file: audit.jsonl}\n")

    result = vaultgate("audit", "verify", "-c", str(config))

    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith(f"{worker_1}: OK, 3 record(s)")
    assert second.startswith(f"{worker_2}: OK, 2 record(s)")


def test_verify_fails_when_one_file_fails(config: Path) -> None:
    path, lines = write_audit_file(config, 3)
    good = path.rename(config.parent / "audit.worker-1.jsonl")
    bad, _ = write_audit_file(config, 3)
    write_lines(bad, lines[1:])

    result = vaultgate("audit", "verify", str(good), str(bad), "-c", str(config))

    assert result.returncode == 1
    assert result.stdout.startswith(f"{good}: OK, 3 record(s)")
    assert f"{bad}:1: sequence gap" in result.stderr
    assert "vaultgate: 1 of 2 audit files failed" in result.stderr


def test_verify_without_file_needs_one(config: Path) -> None:
    result = vaultgate("audit", "verify", "-c", str(config))

    assert result.returncode == 1
    assert "no audit file found" in result.stderr
