from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit.records import GENESIS, ChainPosition, canonical_json, compute_mac
from gateway.audit.verify import verify_audit_file
from tests.audit.conftest import AUDIT_KEY, OTHER_KEY, make_records, write_lines

COUNT = 6
LINES = [record.line for record in make_records(COUNT)]
POSITIONS = range(COUNT)


def verify(tmp_path: Path, lines: list[bytes]) -> tuple[int | None, str | None]:
    result = verify_audit_file(write_lines(tmp_path / "audit.jsonl", lines), AUDIT_KEY)
    return result.bad_line, result.problem


def forge(line: bytes, key: bytes, **changes: object) -> bytes:
    """Return ``line`` with fields changed and a new mac under ``key``."""
    fields = {name: value for name, value in json.loads(line).items() if name != "mac"}
    fields |= changes
    return canonical_json(fields | {"mac": compute_mac(key, fields)}) + b"\n"


def test_intact_file_verifies(tmp_path: Path) -> None:
    result = verify_audit_file(write_lines(tmp_path / "audit.jsonl", LINES), AUDIT_KEY)

    assert result.ok
    assert result.records == COUNT
    assert result.last_seq == COUNT
    assert result.last_mac == json.loads(LINES[-1])["mac"]
    assert result.bad_line is None


def test_empty_file_verifies(tmp_path: Path) -> None:
    result = verify_audit_file(write_lines(tmp_path / "audit.jsonl", []), AUDIT_KEY)

    assert result.ok
    assert result.records == 0
    assert result.last_seq == 0
    assert result.last_mac == GENESIS


@pytest.mark.parametrize("index", POSITIONS[:-1])
def test_deleted_line_fails_there(tmp_path: Path, index: int) -> None:
    lines = LINES[:index] + LINES[index + 1 :]

    assert verify(tmp_path, lines) == (index + 1, "sequence gap")


def test_deleted_last_line_shows_in_end(tmp_path: Path) -> None:
    # The file alone cannot show a lost tail, but the last sequence and mac show where it ends.
    result = verify_audit_file(write_lines(tmp_path / "audit.jsonl", LINES[:-1]), AUDIT_KEY)

    assert result.ok
    assert result.last_seq == COUNT - 1
    assert result.last_mac == json.loads(LINES[-2])["mac"]


@pytest.mark.parametrize("index", POSITIONS)
def test_edited_line_fails_there(tmp_path: Path, index: int) -> None:
    lines = list(LINES)
    lines[index] = lines[index].replace(b'"client":"backend"', b'"client":"intruder"')

    assert verify(tmp_path, lines) == (index + 1, "invalid mac")


@pytest.mark.parametrize("index", POSITIONS)
def test_line_resigned_with_other_key_fails(tmp_path: Path, index: int) -> None:
    lines = list(LINES)
    lines[index] = forge(lines[index], OTHER_KEY.reveal(), client="intruder")

    assert verify(tmp_path, lines) == (index + 1, "invalid mac")


@pytest.mark.parametrize("index", POSITIONS[:-1])
def test_swapped_lines_fail_at_first(tmp_path: Path, index: int) -> None:
    lines = list(LINES)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]

    assert verify(tmp_path, lines) == (index + 1, "sequence gap")


@pytest.mark.parametrize("index", range(1, COUNT + 1))
def test_repeated_line_fails_there(tmp_path: Path, index: int) -> None:
    lines = [*LINES[:index], LINES[index - 1], *LINES[index:]]

    assert verify(tmp_path, lines) == (index + 1, "sequence out of order")


@pytest.mark.parametrize("index", POSITIONS)
def test_line_from_other_chain_fails_there(tmp_path: Path, index: int) -> None:
    # A genuine record with the right seq from another file under the same key.
    other_chain = make_records(COUNT, after=ChainPosition(0, "1" * 64))
    lines = [*LINES[:index], other_chain[index].line, *LINES[index + 1 :]]

    assert verify(tmp_path, lines) == (index + 1, "broken chain")


@pytest.mark.parametrize("index", range(COUNT + 1))
def test_inserted_forgery_fails_there(tmp_path: Path, index: int) -> None:
    forged = forge(LINES[min(index, COUNT - 1)], OTHER_KEY.reveal(), seq=index + 1)
    lines = [*LINES[:index], forged, *LINES[index:]]

    assert verify(tmp_path, lines) == (index + 1, "invalid mac")


def test_missing_head_fails_at_first_line(tmp_path: Path) -> None:
    assert verify(tmp_path, LINES[2:]) == (1, "sequence gap")


def test_reformatted_line_fails(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[2] = lines[2].replace(b'","', b'", "', 1)

    assert verify(tmp_path, lines) == (3, "not canonical")


def test_blank_line_fails(tmp_path: Path) -> None:
    assert verify(tmp_path, [*LINES[:3], b"\n", *LINES[3:]]) == (4, "invalid JSON")


def test_incomplete_last_line_fails(tmp_path: Path) -> None:
    result = verify_audit_file(
        write_lines(tmp_path / "audit.jsonl", [*LINES[:-1], LINES[-1][:50]]), AUDIT_KEY
    )

    assert result.bad_line == COUNT
    assert result.problem == "incomplete line"
    assert result.records == COUNT - 1
    assert result.last_seq == COUNT - 1


def test_whole_file_under_other_key_fails(tmp_path: Path) -> None:
    result = verify_audit_file(write_lines(tmp_path / "audit.jsonl", LINES), OTHER_KEY)

    assert result.bad_line == 1
    assert result.problem == "invalid mac"
    assert result.records == 0
    assert result.last_mac == GENESIS


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_audit_file(tmp_path / "absent.jsonl", AUDIT_KEY)
