"""Test data files kept in the repository, with their origins in SOURCES.md."""

from __future__ import annotations

import csv
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
TEST_CARDS_CSV = DATA_DIR / "test_card_numbers.csv"


def load_test_card_rows() -> list[dict[str, str]]:
    """Return the rows of the public test-card list: pan, length, luhn_valid, brand, provider."""
    with TEST_CARDS_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))
