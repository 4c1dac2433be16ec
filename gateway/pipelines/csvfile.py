"""CSV: a header row names the columns; fields may be quoted and span lines.

The output keeps the input's delimiter, quote character, line ending (``\\r\\n`` or ``\\n``, as
the header row has it) and UTF-8 byte-order mark. Fields are quoted where the CSV rules need
it, so a field that was quoted without need comes out unquoted.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.fileformat import (
    MAX_RECORD_BYTES,
    PARTITION_BYTES,
    FileFormat,
    split_records,
)
from gateway.pipelines.records import ParsedRow, RecordAdapter, Slot
from gateway.pipelines.spec import ColumnRule, CsvOptions, ScanRule
from gateway.tokens.record import ValueType

MAX_COLUMNS_SHOWN: Final = 20
"""Header columns that an error about a missing column lists."""

UTF8_BOM: Final = b"\xef\xbb\xbf"
_HEADER_LIMIT: Final = 1024 * 1024

# The csv module rejects fields longer than 131,072 characters by default, while a record may
# have up to MAX_RECORD_BYTES. The limit is global to the process, and worker processes import
# this module too.
csv.field_size_limit(MAX_RECORD_BYTES)


@dataclass
class CsvFormat(FileFormat):
    options: CsvOptions
    name: str = ""
    columns: list[str] = field(default_factory=list)
    bom: bytes = b""
    header: bytes = b""
    line_terminator: str = "\r\n"
    pending: bytes = b""
    """Bytes read while looking for a byte-order mark that belong to the first record."""

    def open(self, stream: BinaryIO, name: str) -> bytes:
        self.name = name
        start = stream.read(len(UTF8_BOM))
        if start == UTF8_BOM and self.options.encoding.replace("_", "-").lower() in (
            "utf-8",
            "utf8",
            "utf-8-sig",
        ):
            self.bom = UTF8_BOM
            start = b""
        if not self.options.header:
            self.pending = start
            return self.bom
        header = start + stream.readline(_HEADER_LIMIT)
        if not header.endswith(b"\n"):
            raise MalformedRecordError(name, 0, "the header row is missing or longer than 1 MiB")
        self.line_terminator = "\r\n" if header.endswith(b"\r\n") else "\n"
        try:
            text = header.decode(self.options.encoding)
        except UnicodeDecodeError as exc:
            raise MalformedRecordError(
                name, 0, f"the header row is not valid {self.options.encoding} at byte {exc.start}"
            ) from None
        try:
            self.columns = next(csv.reader([text], **self._dialect()))
        except (csv.Error, StopIteration) as exc:
            raise MalformedRecordError(name, 0, f"the header row cannot be parsed: {exc}") from None
        self.header = header
        self.pending = b""
        return self.bom + header

    def _dialect(self) -> dict[str, Any]:
        return {
            "delimiter": self.options.delimiter,
            "quotechar": self.options.quotechar,
            "strict": True,
        }

    def bind(self, rules: Sequence[ColumnRule | ScanRule]) -> tuple[RecordAdapter, list[str]]:
        positions: list[tuple[int, int]] = []
        labels: list[str] = []
        missing: list[str] = []
        for rule_index, rule in enumerate(rules):
            column = rule.field.column or ""
            labels.append(f"column {column}")
            if self.options.header:
                if column not in self.columns:
                    missing.append(column)
                    continue
                positions.append((rule_index, self.columns.index(column)))
            elif column.isdigit() and int(column) >= 1:
                positions.append((rule_index, int(column) - 1))
            else:
                missing.append(column)
        if missing:
            where = "the header of " if self.options.header else ""
            hint = "" if self.options.header else " (without a header, name columns 1, 2, ...)"
            if self.options.header:
                hint = _header_hint(missing, self.columns)
            raise SourceError(f"{where}{self.name} has no column {', '.join(missing)}{hint}")
        return CsvAdapter(tuple(positions)), labels

    def partitions(self, stream: BinaryIO, size: int = PARTITION_BYTES) -> Iterator[bytes]:
        quote = self.options.quotechar.encode(self.options.encoding)

        def outside_quotes(data: bytes, end: int) -> bool:
            return data.count(quote, 0, end) % 2 == 0

        # The bytes read while looking for a BOM may contain a quote, which shifts every boundary.
        return split_records(stream, self.name, outside_quotes, size, prefix=self.pending)

    def parse(self, partition: bytes) -> Iterator[ParsedRow]:
        lines = _LineSource(partition, self.options.encoding)
        reader = csv.reader(lines, **self._dialect())
        expected = len(self.columns) if self.options.header else None
        number = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                yield ParsedRow(number, lines.take(), problem=f"broken quoting: {exc}")
                continue
            raw = lines.take()
            if not fields:
                continue  # an empty line
            number += 1
            if lines.problem is not None:
                yield ParsedRow(number, raw, problem=lines.problem)
                lines.problem = None
            elif expected is not None and len(fields) != expected:
                yield ParsedRow(
                    number, raw, problem=f"{len(fields)} fields where the header has {expected}"
                )
            else:
                yield ParsedRow(number, raw, fields)

    def serialize(self, records: Sequence[Any]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(
            buffer,
            delimiter=self.options.delimiter,
            quotechar=self.options.quotechar,
            lineterminator=self.line_terminator,
        )
        writer.writerows(records)
        return buffer.getvalue().encode(self.options.encoding)

    def reject_preamble(self) -> bytes:
        return self.bom + self.header


class _LineSource:
    """The lines of a partition for ``csv.reader``, decoded, keeping the raw bytes of the row
    being read and the first decoding problem in it."""

    def __init__(self, partition: bytes, encoding: str) -> None:
        pieces = partition.split(b"\n")
        lines = [piece + b"\n" for piece in pieces[:-1]]
        if pieces[-1]:
            lines.append(pieces[-1])
        self._lines = iter(lines)
        self._encoding = encoding
        self._raw: list[bytes] = []
        self.problem: str | None = None

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._raw.append(line)
        try:
            return line.decode(self._encoding)
        except UnicodeDecodeError as exc:
            if self.problem is None:
                self.problem = f"invalid {self._encoding} at byte {exc.start} of a line"
            return line.decode(self._encoding, errors="replace")

    def take(self) -> bytes:
        raw = b"".join(self._raw)
        self._raw.clear()
        return raw


@dataclass(frozen=True, slots=True)
class CsvAdapter(RecordAdapter):
    positions: tuple[tuple[int, int], ...]
    """Pairs of rule index and column index."""

    def slots(self, record: Any) -> tuple[Any, list[Slot]]:
        row: list[str] = record
        width = len(row)
        # Without a header, rows may be shorter than a ruled column; such a cell is absent.
        present = [pair for pair in self.positions if pair[1] < width]
        return present, [Slot(rule, row[column]) for rule, column in present]

    def replace(self, record: Any, handle: Any, values: Sequence[tuple[str, ValueType]]) -> Any:
        row: list[str] = record
        for (_, column), (value, _) in zip(handle, values, strict=True):
            row[column] = value
        return row


def _header_hint(missing: list[str], columns: list[str]) -> str:
    """Return a suggestion for the first missing column and the header's columns, for errors."""
    close = difflib.get_close_matches(missing[0], columns, n=1)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    listed_columns = ", ".join(columns[:MAX_COLUMNS_SHOWN])
    more = (
        f" and {len(columns) - MAX_COLUMNS_SHOWN} more" if len(columns) > MAX_COLUMNS_SHOWN else ""
    )
    return f"{suggestion}; its columns are {listed_columns}{more}"
