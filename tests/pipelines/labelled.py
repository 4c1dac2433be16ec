"""Score span detectors on the labelled PII sentences of Presidio's research repository.

A detection counts as correct when it overlaps a labelled span of the same type, and a labelled
span counts as found when a detection of its type overlaps it. Precision and recall per type
follow; the benchmark scores Presidio's pattern recognizers with the same function.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.pipelines.conftest import DATA

LABELLED_FILE = DATA / "presidio_synth_dataset_v2_full.json"

# Presidio's entity type for each detector.
ENTITY_TYPES = {
    "CREDIT_CARD": "card",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "IBAN_CODE": "iban",
    "US_SSN": "ssn",
    "IP_ADDRESS": "ip",
}


@dataclass(frozen=True)
class Score:
    detector: str
    labelled: int
    detected: int
    true_positives: int
    found: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected if self.detected else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0


type Finder = Callable[[str], Iterable[tuple[int, int, str]]]
"""Returns (start, end, detector) for each value found in a text."""


def load_sentences(path: Path = LABELLED_FILE) -> list[dict[str, object]]:
    sentences: list[dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))
    return sentences


def score(find: Finder, sentences: list[dict[str, object]]) -> dict[str, Score]:
    labelled: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    true_positives: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for sentence in sentences:
        text = str(sentence["full_text"])
        spans = [
            (span["start_position"], span["end_position"], ENTITY_TYPES.get(span["entity_type"]))
            for span in sentence["spans"]  # type: ignore[attr-defined]
        ]
        detections = list(find(text))
        for start, end, detector in detections:
            detected[detector] += 1
            if any(kind == detector and start < e and s < end for s, e, kind in spans):
                true_positives[detector] += 1
        for s, e, kind in spans:
            if kind is None:
                continue
            labelled[kind] += 1
            if any(
                detector == kind and start < e and s < end for start, end, detector in detections
            ):
                found[kind] += 1
    return {
        name: Score(name, labelled[name], detected[name], true_positives[name], found[name])
        for name in ENTITY_TYPES.values()
    }
