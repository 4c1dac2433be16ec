"""Column classification for ``pipeline infer``: keywords, validators and shares, never one cell."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from gateway.pipelines.classify import classify_column, header_words
from gateway.pipelines.infer import infer_spec
from gateway.pipelines.progress import Progress
from tests.pipelines.conftest import DATA, read_csv


def test_header_words() -> None:
    assert header_words("birthDate") >= {"birth", "date"}
    assert header_words("OWNER_NAME") >= {"owner", "name"}
    assert "ssn" in header_words("SSN")


@pytest.mark.parametrize(
    ("column", "class_name"),
    [
        ("SSN", "person.ssn"),
        ("BIRTHDATE", "person.birthdate"),
        ("FIRST", "person.name"),
        ("ADDRESS", "person.address"),
        ("DRIVERS", "person.drivers_license"),
        ("LAT", None),
        ("LON", None),
        ("HEALTHCARE_EXPENSES", None),
        ("ZIP", None),
    ],
)
def test_synthea_patient_columns(column: str, class_name: str | None) -> None:
    values = [row[column] for row in read_csv(DATA / "synthea_us_patients.csv")]
    proposal = classify_column(column, values)
    assert (proposal.class_name if proposal else None) == class_name


def test_cards_found_by_validator_without_keyword() -> None:
    cards = [row["pan"] for row in read_csv(DATA / "test_card_numbers.csv")]
    proposal = classify_column("value", cards)
    assert proposal is not None
    assert (proposal.class_name, proposal.token_format) == ("card.pan", "pan")


def test_one_card_among_many_does_not_classify() -> None:
    values = ["4242424242424242"] + [f"{number:016d}" for number in range(1, 30)]
    assert classify_column("value", values) is None


def test_free_text_with_emails_is_scanned() -> None:
    notes = [f"Please write to person{number}@example.com about the order" for number in range(10)]
    proposal = classify_column("NOTES", notes)
    assert proposal is not None
    assert proposal.action == "scan"
    assert proposal.detectors == ("email",)


def test_progress_line_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, enabled=True)
    progress.start_file("in.csv", 2_000_000)
    progress.advance(1000, 1_000_000)
    progress.finish()
    text = stream.getvalue()
    assert "in.csv: 1,000 rows" in text
    assert "rows/s" in text
    assert "MB/s" in text
    assert "50%" in text


def test_progress_quiet_otherwise() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    progress.advance(10, 100)
    progress.finish()
    assert stream.getvalue() == ""


def test_infer_json_lines_uses_member_names(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "patient": {"ssn": f"123-45-{6700 + number}", "lat": 40.12345678901234},
                "notes": f"write to person{number}@example.org about the visit",
            }
        )
        for number in range(20)
    ]
    source = tmp_path / "visits.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    document = yaml.safe_load(infer_spec(str(source), None, 100))
    assert document["format"] == "jsonl"
    assert document["columns"] == [
        {"json": "$.patient.ssn", "class": "person.ssn", "format": "uuid", "deterministic": True}
    ]
    assert document["scan"] == [{"json": "$.notes", "detectors": ["email"]}]
