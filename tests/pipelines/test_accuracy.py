"""Precision and recall of the detectors on the labelled PII sentences, against fixed floors.

The targets are 0.95 for cards, emails, IBANs, SSNs and IP addresses, and 0.9 for phones. The
floors are the values measured when the detectors were written, so a change that loses accuracy
fails here. The comparison with Presidio runs in ``bench/pipelines/accuracy.py``.
"""

from __future__ import annotations

import pytest

from gateway.pipelines.detectors import detect
from tests.pipelines.labelled import Score, load_sentences, score

TARGETS = {"card": 0.95, "email": 0.95, "iban": 0.95, "ssn": 0.95, "ip": 0.95, "phone": 0.9}
# (precision, recall) measured on the 1,500 sentences.
MEASURED_FLOORS = {
    "card": (1.0, 0.99),
    "email": (1.0, 1.0),
    "iban": (1.0, 1.0),
    "ssn": (1.0, 1.0),
    "ip": (1.0, 1.0),
    "phone": (0.95, 0.95),
}


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    def find(text: str) -> list[tuple[int, int, str]]:
        return [(found.start, found.end, found.detector) for found in detect(text)]

    return score(find, load_sentences())


@pytest.mark.parametrize("detector", sorted(TARGETS))
def test_precision_meets_floor(scores: dict[str, Score], detector: str) -> None:
    result = scores[detector]
    assert result.labelled > 0
    assert result.precision >= TARGETS[detector]
    assert result.precision >= MEASURED_FLOORS[detector][0]


@pytest.mark.parametrize("detector", sorted(TARGETS))
def test_recall_meets_floor(scores: dict[str, Score], detector: str) -> None:
    result = scores[detector]
    assert result.recall >= TARGETS[detector]
    assert result.recall >= MEASURED_FLOORS[detector][1]
