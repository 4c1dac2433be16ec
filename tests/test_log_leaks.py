"""Search every log line the suite produced for the sensitive values it used."""

from __future__ import annotations

import pytest

from tests.data import load_test_card_rows
from tests.logcapture import LOG_DIR, SENSITIVE_VALUES


def card_numbers() -> set[str]:
    return {row["pan"] for row in load_test_card_rows()}


@pytest.mark.runs_last
def test_no_sensitive_value_in_logs() -> None:
    logs = {
        path.name: path.read_text(encoding="utf-8", errors="replace")
        for path in LOG_DIR.glob("*.log")
    }
    assert logs, "no log file was written; the log capture plugin is not active"
    searched = card_numbers() | {"4242424242424242", "5555555555554444"} | SENSITIVE_VALUES
    leaks = [
        (name, value) for name, text in logs.items() for value in sorted(searched) if value in text
    ]
    assert leaks == []
