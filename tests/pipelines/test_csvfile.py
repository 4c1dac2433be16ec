"""CSV reading and writing: header, BOM, quoting, line endings and malformed rows."""

from __future__ import annotations

import io

import pytest

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.csvfile import CsvFormat
from gateway.pipelines.records import ParsedRow
from gateway.pipelines.spec import ColumnRule, CsvOptions, FieldRef


def opened(data: bytes, options: CsvOptions | None = None) -> tuple[CsvFormat, io.BytesIO, bytes]:
    file_format = CsvFormat(options or CsvOptions())
    stream = io.BytesIO(data)
    preamble = file_format.open(stream, "input.csv")
    return file_format, stream, preamble


def all_rows(file_format: CsvFormat, stream: io.BytesIO) -> list[ParsedRow]:
    return [
        row for partition in file_format.partitions(stream) for row in file_format.parse(partition)
    ]


def test_bom_and_crlf_are_kept() -> None:
    file_format, stream, preamble = opened(b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    assert preamble == b"\xef\xbb\xbfa,b\r\n"
    rows = all_rows(file_format, stream)
    assert [row.record for row in rows] == [["1", "2"]]
    assert file_format.serialize([["x", "y"]]) == b"x,y\r\n"


def test_quoted_multiline_field_and_delimiter() -> None:
    data = b'id;note\n1;"line one\nline two; with ""quotes"""\n2;plain\n'
    file_format, stream, _ = opened(data, CsvOptions(delimiter=";"))
    rows = all_rows(file_format, stream)
    assert [row.record for row in rows] == [
        ["1", 'line one\nline two; with "quotes"'],
        ["2", "plain"],
    ]
    assert rows[0].raw == b'1;"line one\nline two; with ""quotes"""\n'
    assert file_format.serialize([row.record for row in rows]) == data.split(b"\n", 1)[1]


def test_partitions_never_split_a_quoted_field() -> None:
    rows = b"".join(b'%d,"a\nb\nc"\n' % number for number in range(2000))
    file_format = CsvFormat(CsvOptions())
    stream = io.BytesIO(b"id,text\n" + rows)
    file_format.open(stream, "input.csv")
    from gateway.pipelines import fileformat

    partitions = list(
        fileformat.split_records(
            stream, "input.csv", lambda data, end: data.count(b'"', 0, end) % 2 == 0, size=1000
        )
    )
    assert len(partitions) > 10
    parsed = [row for partition in partitions for row in file_format.parse(partition)]
    assert len(parsed) == 2000
    assert all(row.problem is None for row in parsed)


def test_headerless_partitions_count_the_first_bytes() -> None:
    # Without a header, open() reads the first three bytes to look for a BOM. They contain the
    # first quote, which the search for partition boundaries must count too.
    data = b"".join(b'"n%d","a\nb",%d\n' % (number, number) for number in range(200))
    file_format, stream, _ = opened(data, CsvOptions(header=False))
    partitions = list(file_format.partitions(stream, size=100))
    assert len(partitions) > 10
    assert b"".join(partitions) == data
    rows = [row for partition in partitions for row in file_format.parse(partition)]
    assert [row.problem for row in rows if row.problem is not None] == []
    assert [row.record for row in rows] == [[f"n{n}", "a\nb", str(n)] for n in range(200)]


def test_field_larger_than_csv_default_limit() -> None:
    # Python's csv module rejects fields over 128 KiB unless its limit is raised.
    note = "x" * 200_000
    file_format, stream, _ = opened(f'id,note\n1,"{note}"\n'.encode())
    rows = all_rows(file_format, stream)
    assert [row.problem for row in rows] == [None]
    assert [row.record for row in rows] == [["1", note]]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b"1,2,3\n", "3 fields where the header has 2", id="field-count"),
        pytest.param(b'1,"2"x\n', "broken quoting", id="quoting"),
        pytest.param(b"1,\xff\xfe\n", "invalid utf-8 at byte 2", id="encoding"),
    ],
)
def test_malformed_rows(line: bytes, reason: str) -> None:
    file_format, stream, _ = opened(b"a,b\n1,2\n" + line + b"3,4\n")
    rows = all_rows(file_format, stream)
    assert [row.number for row in rows] == [1, 2, 3]
    assert rows[1].problem is not None
    assert reason in rows[1].problem
    assert rows[1].raw == line
    assert rows[2].record == ["3", "4"]


def test_unclosed_quote_at_end() -> None:
    file_format, stream, _ = opened(b'a,b\n1,"open\n')
    rows = all_rows(file_format, stream)
    assert rows[-1].problem is not None
    assert "broken quoting" in rows[-1].problem


def test_missing_column_is_named() -> None:
    file_format, _, _ = opened(b"a,b\n")
    rules = [ColumnRule(FieldRef(column="a")), ColumnRule(FieldRef(column="SSN"))]
    with pytest.raises(SourceError, match="has no column SSN"):
        file_format.bind(rules)


def test_missing_column_suggests_header_name() -> None:
    file_format, _, _ = opened(b"id,email\n")
    rules = [ColumnRule(FieldRef(column="e_mail"))]

    with pytest.raises(SourceError) as caught:
        file_format.bind(rules)

    assert "has no column e_mail (did you mean 'email'?)" in str(caught.value)
    assert "its columns are id, email" in str(caught.value)


def test_missing_header() -> None:
    with pytest.raises(MalformedRecordError, match="header row is missing"):
        opened(b"")
