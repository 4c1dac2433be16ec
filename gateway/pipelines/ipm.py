"""Mastercard IPM clearing files: ISO 8583 messages with 4-byte length prefixes, usually in
EBCDIC and in 1014-byte blocks.

Layout, as the IPM clearing format defines it:

- Blocking: each 1014-byte block is 1012 bytes of the record stream and two pad bytes (``@@``
  in EBCDIC). The record stream ends with a zero length prefix and is padded with the same byte.
- A record is a 4-byte big-endian length, then the message: a 4-character message type
  indicator, the primary bitmap (8 bytes), the secondary bitmap when bit 1 is set, and the data
  elements of the set bits in order.
- A data element is fixed length, or variable with a 2 (LLVAR) or 3 (LLLVAR) character length.

Only the elements in ``ELEMENTS`` can be parsed. A record with another one is malformed. The
output is written with the same blocking; a variable element that changes length gets a new
length prefix and its record a new length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.fileformat import MAX_RECORD_BYTES, PARTITION_BYTES, FileFormat
from gateway.pipelines.ipmlayout import ELEMENTS
from gateway.pipelines.records import ParsedRow, RecordAdapter, Slot
from gateway.pipelines.spec import ColumnRule, IpmOptions, ScanRule
from gateway.tokens.record import ValueType

BLOCK_DATA_BYTES: Final = 1012
BLOCK_PAD_BYTES: Final = 2
_LENGTH: Final = struct.Struct(">I")
_BITMAP_BYTES: Final = 8


@dataclass(slots=True)
class IpmRecord:
    mti: bytes
    secondary_bitmap: bool = False
    """Whether the message has a secondary bitmap, which it keeps even when all zero."""
    elements: dict[int, bytes] = field(default_factory=dict)
    """Each present element's content, without its length prefix, in the file's encoding."""


@dataclass
class IpmFormat(FileFormat):
    options: IpmOptions
    name: str = ""
    pad: bytes = b"\x40"

    def open(self, stream: BinaryIO, name: str) -> bytes:
        self.name = name
        self.pad = " ".encode(self.options.encoding)
        return b""

    def bind(self, rules: Sequence[ColumnRule | ScanRule]) -> tuple[RecordAdapter, list[str]]:
        elements = []
        for index, rule in enumerate(rules):
            number = rule.field.element
            assert number is not None
            if number not in ELEMENTS or ELEMENTS[number][2]:
                raise SourceError(f"data element {number} is not a text element this reader knows")
            elements.append((index, number))
        return IpmAdapter(tuple(elements), self.options.encoding), [
            str(rule.field) for rule in rules
        ]

    def partitions(self, stream: BinaryIO, size: int = PARTITION_BYTES) -> Iterator[bytes]:
        # NOTE: an IPM file is one partition, read whole whatever ``size`` is, because blocks do
        # not end at record boundaries. Files over MAX_RECORD_BYTES are rejected.
        data = stream.read(MAX_RECORD_BYTES + 1)
        if len(data) > MAX_RECORD_BYTES:
            raise MalformedRecordError(
                self.name, 0, f"IPM files over {MAX_RECORD_BYTES} bytes are not supported"
            )
        if data:
            yield data

    def parse(self, partition: bytes) -> Iterator[ParsedRow]:
        stream = self._deblock(partition)
        position = 0
        number = 0
        while position + _LENGTH.size <= len(stream):
            (length,) = _LENGTH.unpack_from(stream, position)
            if length == 0:
                return
            number += 1
            raw = stream[position : position + _LENGTH.size + length]
            position += _LENGTH.size + length
            if len(raw) != _LENGTH.size + length:
                yield ParsedRow(number, raw, problem="record is cut off by the end of the file")
                return
            try:
                yield ParsedRow(number, raw, self._parse_message(raw[_LENGTH.size :]))
            except ValueError as exc:
                yield ParsedRow(number, raw, problem=str(exc))
        raise MalformedRecordError(
            self.name, number, "the file does not end with a zero-length record"
        )

    def _deblock(self, data: bytes) -> bytes:
        if not self.options.blocked:
            return data
        block = BLOCK_DATA_BYTES + BLOCK_PAD_BYTES
        if len(data) % block:
            raise MalformedRecordError(
                self.name, 0, f"a blocked IPM file is a multiple of {block} bytes, not {len(data)}"
            )
        return b"".join(
            data[start : start + BLOCK_DATA_BYTES] for start in range(0, len(data), block)
        )

    def _parse_message(self, message: bytes) -> IpmRecord:
        if len(message) < 4 + _BITMAP_BYTES:
            raise ValueError("record is shorter than a message type and a bitmap")
        record = IpmRecord(message[:4])
        bitmap = message[4 : 4 + _BITMAP_BYTES]
        position = 4 + _BITMAP_BYTES
        if bitmap[0] & 0x80:
            record.secondary_bitmap = True
            bitmap += message[position : position + _BITMAP_BYTES]
            position += _BITMAP_BYTES
        numbers = [
            bit + 1 for bit in range(1, len(bitmap) * 8) if bitmap[bit // 8] & (0x80 >> (bit % 8))
        ]
        for number in numbers:
            if number not in ELEMENTS:
                raise ValueError(
                    f"data element {number} is not in the IPM layout this reader knows"
                )
            digits, size, _ = ELEMENTS[number]
            if digits:
                length_text = message[position : position + digits].decode(
                    self.options.encoding, "replace"
                )
                if not length_text.isdigit() or int(length_text) > size:
                    raise ValueError(f"data element {number} has an invalid length prefix")
                position += digits
                size = int(length_text)
            content = message[position : position + size]
            if len(content) != size:
                raise ValueError(f"data element {number} runs past the end of the record")
            record.elements[number] = content
            position += size
        if position != len(message):
            raise ValueError(f"{len(message) - position} bytes follow the last data element")
        return record

    def serialize(self, records: Sequence[Any]) -> bytes:
        stream = b"".join(self._encode(record) for record in records) + _LENGTH.pack(0)
        if not self.options.blocked:
            return stream
        stream += self.pad * (-len(stream) % BLOCK_DATA_BYTES)
        pad = self.pad * BLOCK_PAD_BYTES
        return b"".join(
            stream[start : start + BLOCK_DATA_BYTES] + pad
            for start in range(0, len(stream), BLOCK_DATA_BYTES)
        )

    def _encode(self, record: IpmRecord) -> bytes:
        numbers = sorted(record.elements)
        secondary = record.secondary_bitmap or any(number > 64 for number in numbers)
        bitmap = bytearray(_BITMAP_BYTES * (2 if secondary else 1))
        if secondary:
            bitmap[0] |= 0x80
        parts = [record.mti, b""]
        for number in numbers:
            bitmap[(number - 1) // 8] |= 0x80 >> ((number - 1) % 8)
            digits = ELEMENTS[number][0]
            content = record.elements[number]
            if digits:
                parts.append(str(len(content)).zfill(digits).encode(self.options.encoding))
            parts.append(content)
        parts[1] = bytes(bitmap)
        message = b"".join(parts)
        return _LENGTH.pack(len(message)) + message


@dataclass(frozen=True, slots=True)
class IpmAdapter(RecordAdapter):
    elements: tuple[tuple[int, int], ...]
    """Rule index and data element number of each rule."""
    encoding: str

    def slots(self, record: Any) -> tuple[Any, list[Slot]]:
        message: IpmRecord = record
        present: list[int] = []
        slots: list[Slot] = []
        for rule, number in self.elements:
            content = message.elements.get(number)
            if content is None:
                continue
            value = content.decode(self.encoding).strip(" ")
            if value:
                present.append(number)
                slots.append(Slot(rule, value))
        return present, slots

    def replace(self, record: Any, handle: Any, values: Sequence[tuple[str, ValueType]]) -> Any:
        message: IpmRecord = record
        for number, (value, _) in zip(handle, values, strict=True):
            digits, size, _ = ELEMENTS[number]
            if len(value) > size or (not digits and len(value) != size):
                raise ValueError(
                    f"a value of {len(value)} characters does not fit data element {number}"
                )
            message.elements[number] = value.encode(self.encoding)
        return message
