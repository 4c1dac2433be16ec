"""Fixed-width records, as card networks' clearing files have them, in ASCII or EBCDIC.

Every record has ``record_length`` characters of a single-byte code page (``cp500`` is EBCDIC),
followed by ``separator`` unless that is empty. Record types pick out records by the characters
at some positions, so that a rule can apply to the account number of one record type only.

A field's value is its characters without leading and trailing spaces. A replacement is put
where the value started and padded with spaces to the field's width, so every record keeps its
length. The spec therefore allows only token formats that fit: those in
``spec.LENGTH_PRESERVING_FORMATS``, and ``uuid`` in fields of 36 characters or more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from gateway.errors import MalformedRecordError
from gateway.pipelines.fileformat import MAX_RECORD_BYTES, PARTITION_BYTES, FileFormat
from gateway.pipelines.records import ParsedRow, RecordAdapter, Slot
from gateway.pipelines.spec import ColumnRule, FixedWidthOptions, RecordType, ScanRule
from gateway.tokens.record import ValueType


@dataclass
class FixedWidthFormat(FileFormat):
    options: FixedWidthOptions
    name: str = ""

    @property
    def _separator(self) -> bytes:
        return self.options.separator.encode(self.options.encoding)

    def open(self, stream: BinaryIO, name: str) -> bytes:
        self.name = name
        return b""

    def bind(self, rules: Sequence[ColumnRule | ScanRule]) -> tuple[RecordAdapter, list[str]]:
        fields = []
        for index, rule in enumerate(rules):
            ref = rule.field
            assert ref.start is not None, "fixed-width rules have positions"
            assert ref.end is not None, "fixed-width rules have positions"
            fields.append((index, ref.start, ref.end, ref.record))
        return FixedWidthAdapter(tuple(fields), self.options.record_types), [
            str(rule.field) for rule in rules
        ]

    def partitions(self, stream: BinaryIO, size: int = PARTITION_BYTES) -> Iterator[bytes]:
        separator = self._separator
        record_bytes = self.options.record_length + len(separator)
        size = max(size - size % record_bytes, record_bytes)
        carry = b""
        while True:
            block = stream.read(size)
            if not block:
                if carry:
                    yield carry
                return
            data = carry + block
            if separator:
                position = data.rfind(separator)
                cut = position + len(separator) if position != -1 else 0
            else:
                cut = len(data) - len(data) % record_bytes
            if cut <= 0:
                if len(data) > MAX_RECORD_BYTES:
                    raise MalformedRecordError(
                        self.name, 0, f"no record separator within {MAX_RECORD_BYTES} bytes"
                    )
                carry = data
                continue
            yield data[:cut]
            carry = data[cut:]

    def parse(self, partition: bytes) -> Iterator[ParsedRow]:
        separator = self._separator
        length = self.options.record_length
        if separator:
            pieces = partition.split(separator)
            raw_records = [piece + separator for piece in pieces[:-1]]
            if pieces[-1]:
                raw_records.append(pieces[-1])
        else:
            raw_records = [
                partition[start : start + length] for start in range(0, len(partition), length)
            ]

        for number, raw in enumerate(raw_records, start=1):
            body = (
                raw[: len(raw) - len(separator)] if separator and raw.endswith(separator) else raw
            )
            try:
                text = body.decode(self.options.encoding)
            except UnicodeDecodeError as exc:
                yield ParsedRow(
                    number,
                    raw,
                    problem=f"invalid {self.options.encoding} at character {exc.start + 1}",
                )
                continue
            if len(text) != length:
                yield ParsedRow(
                    number, raw, problem=f"record is {len(text)} characters long, expected {length}"
                )
                continue
            yield ParsedRow(number, raw, text)

    def serialize(self, records: Sequence[Any]) -> bytes:
        separator = self.options.separator
        return "".join(record + separator for record in records).encode(self.options.encoding)


@dataclass(frozen=True, slots=True)
class FixedWidthAdapter(RecordAdapter):
    fields: tuple[tuple[int, int, int, str | None], ...]
    """Rule index, start, end and record type of each ruled field."""
    record_types: tuple[RecordType, ...]

    def _type_of(self, record: str) -> str | None:
        for record_type in self.record_types:
            if record[record_type.start : record_type.end] == record_type.value:
                return record_type.name
        return None

    def slots(self, record: Any) -> tuple[Any, list[Slot]]:
        text: str = record
        record_type = self._type_of(text) if self.record_types else None
        spans: list[tuple[int, int, int]] = []
        slots: list[Slot] = []
        for rule, start, end, rule_record_type in self.fields:
            if rule_record_type is not None and rule_record_type != record_type:
                continue
            field_text = text[start:end]
            value = field_text.strip(" ")
            if not value:
                continue
            offset = start + field_text.index(value)
            spans.append((start, end, offset))
            slots.append(Slot(rule, value))
        return spans, slots

    def replace(self, record: Any, handle: Any, values: Sequence[tuple[str, ValueType]]) -> Any:
        text: str = record
        for (start, end, offset), (value, _) in zip(handle, values, strict=True):
            width = end - start
            placed = " " * (offset - start) + value
            if len(placed) > width:
                placed = value
            if len(placed) > width:
                raise ValueError(
                    f"a value of {len(value)} characters does not fit a field of {width}"
                )
            text = text[:start] + placed.ljust(width) + text[end:]
        return text
