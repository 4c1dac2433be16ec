"""Search every log line and audit record the suite produced for the sensitive values it used."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data import load_test_card_rows
from tests.logcapture import LOG_DIR, SENSITIVE_VALUES


def card_numbers() -> set[str]:
    return {row["pan"] for row in load_test_card_rows()}


def searched_values() -> list[str]:
    return sorted(card_numbers() | {"4242424242424242", "5555555555554444"} | SENSITIVE_VALUES)


def leaks_in(files: dict[str, str]) -> list[tuple[str, str]]:
    values = searched_values()
    return [(name, value) for name, text in files.items() for value in values if value in text]


@pytest.mark.runs_last
def test_no_sensitive_value_in_logs() -> None:
    logs = {
        path.name: path.read_text(encoding="utf-8", errors="replace")
        for path in LOG_DIR.glob("*.log")
    }
    assert logs, "no log file was written; the log capture plugin is not active"
    assert leaks_in(logs) == []


@pytest.mark.runs_last
def test_no_sensitive_value_in_audit_files(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Every gateway the suite starts writes its audit trail under the session's temporary
    # directory, as the harness configures it.
    base = Path(tmp_path_factory.getbasetemp())
    audits = {
        str(path.relative_to(base)): path.read_text(encoding="utf-8", errors="replace")
        for path in base.rglob("*audit*.jsonl")
    }
    assert leaks_in(audits) == []
