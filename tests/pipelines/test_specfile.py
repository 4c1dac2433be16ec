"""Spec loading: every format's selectors, and mistakes reported with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.pipelines.spec import Action, InputFormat
from gateway.pipelines.specfile import load_spec


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_spec(spec_file(tmp_path, text))
    return [str(problem) for problem in caught.value.problems]


def test_csv_spec(tmp_path: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            "format: csv\n"
            "csv: {delimiter: ';'}\n"
            "columns:\n"
            "  - {column: SSN, class: person.ssn, deterministic: true, ttl: 30d}\n"
            "scan:\n"
            "  - {column: NOTES, detectors: [card, email]}\n",
        )
    )
    assert spec.format is InputFormat.CSV
    assert spec.csv.delimiter == ";"
    rule = spec.columns[0]
    assert (rule.field.column, rule.action, rule.format) == ("SSN", Action.TOKENIZE, "uuid")
    assert rule.deterministic
    assert rule.ttl == 30 * 86400
    assert spec.scans[0].detectors == ("card", "email")
    assert spec.scans[0].formats == {"card": "pan", "email": "uuid"}


def test_fixed_width_spec(tmp_path: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            "format: fixed_width\n"
            "fixed_width:\n"
            "  record_length: 168\n"
            "  encoding: cp500\n"
            "  record_types: [{name: tc05, positions: 1-4, value: '0500'}]\n"
            "columns:\n"
            "  - {positions: 5-20, record: tc05, format: pan}\n"
            "scan:\n"
            "  - {positions: 24-73}\n",
        )
    )
    assert spec.fixed_width is not None
    assert spec.fixed_width.encoding == "cp500"
    field = spec.columns[0].field
    assert (field.start, field.end, field.record) == (4, 20, "tc05")
    # Detections in fixed-width fields get tokens of their own length.
    assert spec.scans[0].formats["email"] == "alphanumeric"


def test_mistakes_have_lines(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "format: csv\n"
        "columns:\n"
        "  - {column: SSN, format: card}\n"
        "  - {json: $.a}\n"
        "scan:\n"
        "  - {column: NOTES, detectors: [names]}\n",
    )
    assert any("spec.yaml:3: unknown token format 'card'" in text for text in found)
    assert any(
        "spec.yaml:4:" in text and "needs exactly one field selector, column" in text
        for text in found
    )
    assert any("spec.yaml:6: unknown detector 'names'" in text for text in found)


@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis"])
def test_ipm_multibyte_encoding_rejected(tmp_path: Path, encoding: str) -> None:
    found = problems(
        tmp_path,
        f"format: ipm\nipm: {{encoding: {encoding}}}\ncolumns:\n  - {{element: 2, format: pan}}\n",
    )
    assert len(found) == 1
    assert f"IPM files need a single-byte encoding, not {encoding}" in found[0]


def test_fixed_width_field_too_narrow_for_uuid(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "format: fixed_width\nfixed_width: {record_length: 40}\ncolumns:\n  - {positions: 5-20}\n",
    )
    assert len(found) == 1
    assert "16 characters wide, too narrow for uuid tokens" in found[0]


@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis", "gb18030", "iso2022_jp", "hz"])
def test_fixed_width_multibyte_encoding_rejected(tmp_path: Path, encoding: str) -> None:
    # Without a separator, records are cut by bytes, but fields by characters. One multi-byte
    # character would shift every later record and move a card number out of its ruled
    # positions, in plaintext.
    found = problems(
        tmp_path,
        "format: fixed_width\n"
        f'fixed_width: {{record_length: 30, separator: "", encoding: {encoding}}}\n'
        "columns:\n"
        '  - {positions: "11-26", format: numeric}\n',
    )
    assert len(found) == 1
    assert "need a single-byte encoding" in found[0]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "cp500", "cp1252", "koi8-r"])
def test_fixed_width_single_byte_encoding_accepted(tmp_path: Path, encoding: str) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            "format: fixed_width\n"
            f"fixed_width: {{record_length: 30, encoding: {encoding}}}\n"
            "columns:\n"
            '  - {positions: "11-26", format: numeric}\n',
        )
    )
    assert spec.fixed_width is not None
    assert spec.fixed_width.encoding == encoding


def test_undeclared_record_type(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "format: fixed_width\n"
        "fixed_width: {record_length: 40}\n"
        "columns:\n"
        "  - {positions: 5-20, record: tc05, format: pan}\n",
    )
    assert "record type 'tc05' is not declared" in found[0]


def test_detokenize_takes_no_format(tmp_path: Path) -> None:
    found = problems(
        tmp_path, "format: csv\ncolumns:\n  - {column: A, action: detokenize, format: pan}\n"
    )
    assert "format applies to tokenize only" in found[0]


def test_unknown_format(tmp_path: Path) -> None:
    found = problems(tmp_path, "format: parquet\n")
    assert "unknown input format 'parquet'" in found[0]


def test_ipm_element_too_short_for_uuid(tmp_path: Path) -> None:
    found = problems(tmp_path, "format: ipm\ncolumns:\n  - {element: 2}\n  - {element: 64}\n")
    assert len(found) == 2
    assert "spec.yaml:3: data element 2 holds at most 19 characters" in found[0]
    assert "spec.yaml:4: data element 64 is not a text element" in found[1]
