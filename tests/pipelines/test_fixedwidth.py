"""Fixed-width records in ASCII and EBCDIC, on the synthesized Visa-style files."""

from __future__ import annotations

import io

from gateway.pipelines.fixedwidth import FixedWidthFormat
from gateway.pipelines.records import ParsedRow
from gateway.pipelines.spec import ColumnRule, FieldRef, FixedWidthOptions, RecordType
from gateway.tokens.record import ValueType
from tests.pipelines.conftest import SYNTHESIZED

TYPES = (RecordType("tc05", 0, 4, "0500"), RecordType("tc05_tcr1", 0, 4, "0501"))


def rows_of(data: bytes, encoding: str) -> tuple[FixedWidthFormat, list[ParsedRow]]:
    file_format = FixedWidthFormat(FixedWidthOptions(168, "\n", encoding, TYPES))
    stream = io.BytesIO(data)
    file_format.open(stream, "sample.ctf")
    rows = [
        row for partition in file_format.partitions(stream) for row in file_format.parse(partition)
    ]
    return file_format, rows


def test_ascii_and_ebcdic_files_read_the_same() -> None:
    _, ascii_rows = rows_of(
        (SYNTHESIZED / "visa_base2_style_sample_ascii.ctf").read_bytes(), "ascii"
    )
    _, ebcdic_rows = rows_of(
        (SYNTHESIZED / "visa_base2_style_sample_ebcdic_cp500.ctf").read_bytes(), "cp500"
    )
    assert len(ascii_rows) == 8
    assert [row.record for row in ascii_rows] == [row.record for row in ebcdic_rows]
    assert all(row.problem is None for row in ebcdic_rows)


def test_round_trip_is_byte_identical() -> None:
    data = (SYNTHESIZED / "visa_base2_style_sample_ebcdic_cp500.ctf").read_bytes()
    file_format, rows = rows_of(data, "cp500")
    assert file_format.serialize([row.record for row in rows]) == data


def test_account_number_slot_of_one_record_type() -> None:
    file_format, rows = rows_of(
        (SYNTHESIZED / "visa_base2_style_sample_ascii.ctf").read_bytes(), "ascii"
    )
    adapter, labels = file_format.bind([_rule(5, 20, "tc05"), _rule(92, 116, "tc05")])
    assert labels == ["positions 5-20 of record tc05", "positions 92-116 of record tc05"]
    handle, slots = adapter.slots(rows[1].record)
    assert [slot.value for slot in slots] == ["4242424242424242", "TEST MERCHANT ONE"]
    _, none = adapter.slots(rows[2].record)
    assert none == []

    new = adapter.replace(
        rows[1].record,
        handle,
        [("4242420000004242", ValueType.STRING), ("QWER TYUIOPAS DFG", ValueType.STRING)],
    )
    assert len(new) == 168
    assert new[4:20] == "4242420000004242"
    assert new[91:116] == "QWER TYUIOPAS DFG        "
    assert new[20:91] == rows[1].record[20:91]


def test_wrong_length_record_is_malformed() -> None:
    data = b"A" * 168 + b"\n" + b"B" * 167 + b"\n" + b"C" * 168 + b"\n"
    _, rows = rows_of(data, "ascii")
    assert [row.problem for row in rows] == [
        None,
        "record is 167 characters long, expected 168",
        None,
    ]


def _rule(first: int, last: int, record: str) -> ColumnRule:
    return ColumnRule(FieldRef(start=first - 1, end=last, record=record), format="pan")
