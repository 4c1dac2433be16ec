"""The IPM reader and writer on the synthesized Mastercard file, byte for byte."""

from __future__ import annotations

import io

import pytest

from gateway.errors import MalformedRecordError
from gateway.pipelines.ipm import IpmFormat, IpmRecord
from gateway.pipelines.spec import IpmOptions
from tests.pipelines.conftest import SYNTHESIZED, read_csv

IPM_FILE = SYNTHESIZED / "mastercard_ipm_sample_1014blocked.ipm"


def parsed(data: bytes) -> tuple[IpmFormat, list[IpmRecord]]:
    file_format = IpmFormat(IpmOptions())
    stream = io.BytesIO(data)
    file_format.open(stream, "sample.ipm")
    rows = [
        row for partition in file_format.partitions(stream) for row in file_format.parse(partition)
    ]
    assert all(row.problem is None for row in rows)
    return file_format, [row.record for row in rows]


def test_sample_records_match_their_source_csv() -> None:
    _, records = parsed(IPM_FILE.read_bytes())
    expected = read_csv(SYNTHESIZED / "ipm_input.csv")
    assert len(records) == len(expected) == 3
    for record, source in zip(records, expected, strict=True):
        assert record.mti.decode("cp500") == source["MTI"]
        assert record.elements[2].decode("cp500") == source["DE2"]
        assert record.elements[42].decode("cp500") == source["DE42"]
        assert record.elements[49].decode("cp500") == source["DE49"]


def test_round_trip_is_byte_identical() -> None:
    data = IPM_FILE.read_bytes()
    file_format, records = parsed(data)
    assert file_format.serialize(records) == data


def test_longer_element_gets_new_length_prefix() -> None:
    file_format, records = parsed(IPM_FILE.read_bytes())
    records[0].elements[2] = "5555555555554444000".encode("cp500")
    _, again = parsed(file_format.serialize(records))
    assert again[0].elements[2].decode("cp500") == "5555555555554444000"
    assert again[1].elements == records[1].elements


def test_truncated_block_is_malformed() -> None:
    with pytest.raises(MalformedRecordError, match="multiple of 1014 bytes"):
        parsed(IPM_FILE.read_bytes()[:-1])


def test_unknown_element_is_malformed() -> None:
    data = bytearray(IPM_FILE.read_bytes())
    data[4 + 4 + 7] |= 0x01  # set bit 64, an element the layout does not define
    file_format = IpmFormat(IpmOptions())
    stream = io.BytesIO(bytes(data))
    file_format.open(stream, "sample.ipm")
    rows = [
        row for partition in file_format.partitions(stream) for row in file_format.parse(partition)
    ]
    assert rows[0].problem == "data element 64 is not in the IPM layout this reader knows"
    assert rows[1].problem is None
