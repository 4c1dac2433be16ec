"""The interface of a file format: split a byte stream into partitions of whole records, parse a
partition into rows, and write records back.

A format object is created from the spec, reads the start of the input in ``open`` (a CSV
header, a byte-order mark), and is then pickled to the worker processes, so everything it keeps
after ``open`` must be plain data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, Final

from gateway.errors import MalformedRecordError
from gateway.pipelines.records import ParsedRow, RecordAdapter
from gateway.pipelines.spec import ColumnRule, ScanRule

PARTITION_BYTES: Final = 4 * 1024 * 1024
"""Bytes read per partition. Each worker has a few partitions in and out at a time."""
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
"""Maximum record length in bytes. A longer record is malformed, which bounds memory when a
quoted CSV field is never closed."""


class FileFormat(ABC):
    """One input format, bound to one input after ``open``."""

    name: str
    """The input's name in messages, set by ``open``."""

    @abstractmethod
    def open(self, stream: BinaryIO, name: str) -> bytes:
        """Read what comes before the first record and return the bytes the output starts with.

        Raises ``MalformedRecordError`` when the start of the input cannot be read.
        """

    @abstractmethod
    def bind(self, rules: Sequence[ColumnRule | ScanRule]) -> tuple[RecordAdapter, list[str]]:
        """Return the adapter for these rules and the label of each rule's field.

        Raises ``SourceError`` when a field that a rule names is missing from the input.
        """

    @abstractmethod
    def partitions(self, stream: BinaryIO, size: int = PARTITION_BYTES) -> Iterator[bytes]:
        """Yield the rest of the input in partitions of about ``size`` bytes that each end at a
        record boundary."""

    @abstractmethod
    def parse(self, partition: bytes) -> Iterator[ParsedRow]:
        """Yield each record of a partition, numbered from 1, or the reason it is malformed."""

    @abstractmethod
    def serialize(self, records: Sequence[Any]) -> bytes:
        """Return the bytes of transformed records, as they are written to the output."""

    def finish(self) -> bytes:
        """Return the bytes that end the output, after the last partition."""
        return b""

    def reject_preamble(self) -> bytes:
        """Return the bytes a reject file starts with, so that it reads like the input."""
        return b""


def split_records(
    stream: BinaryIO,
    name: str,
    is_boundary_safe: Any,
    size: int = PARTITION_BYTES,
    *,
    prefix: bytes = b"",
) -> Iterator[bytes]:
    """Yield blocks of ``prefix`` and then ``stream`` that end after a newline where
    ``is_boundary_safe`` allows.

    ``is_boundary_safe(data, end)`` returns whether ``data[:end]`` ends outside a quoted field.
    ``prefix`` is the start of the first record, already read from ``stream``; it counts when
    the first boundary is chosen.
    """
    carry = prefix
    while True:
        block = stream.read(size)
        if not block:
            if carry:
                yield carry
            return
        data = carry + block
        cut = data.rfind(b"\n")
        while cut != -1 and not is_boundary_safe(data, cut + 1):
            cut = data.rfind(b"\n", 0, cut)
        if cut == -1:
            if len(data) > MAX_RECORD_BYTES:
                raise MalformedRecordError(
                    name,
                    0,
                    f"no record ends within {MAX_RECORD_BYTES} bytes (a quoted field "
                    "that is never closed, or the wrong format)",
                )
            carry = data
            continue
        yield data[: cut + 1]
        carry = data[cut + 1 :]
