"""Rows, slots, rejects and counts: the values passed between the file formats and the transform."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.tokens.record import ValueType


@dataclass(slots=True)
class ParsedRow:
    """One record of a partition, or the reason it could not be parsed."""

    number: int
    """Position of the record in its partition, from 1."""
    raw: bytes
    """The record's bytes as they came, for the reject file."""
    record: Any = None
    problem: str | None = None


class Slot(NamedTuple):
    """A value that a field rule applies to, found in a record.

    A named tuple rather than a dataclass, because a run makes one per ruled cell.
    """

    rule: int
    """Index of the rule in ``Plan.rules``."""
    value: str
    value_type: ValueType = ValueType.STRING


@dataclass(frozen=True, slots=True)
class Reject:
    number: int
    reason: str
    raw: bytes


@dataclass(slots=True)
class PartitionStats:
    """Counts for the report; none of them contains a value."""

    rows: int = 0
    bytes_in: int = 0
    rejected: int = 0
    cells: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Cells tokenized or revealed, by field and class."""
    detections: Counter[str] = field(default_factory=Counter)
    """Values found in free text, by detector."""

    def add(self, other: PartitionStats) -> None:
        self.rows += other.rows
        self.bytes_in += other.bytes_in
        self.rejected += other.rejected
        self.cells.update(other.cells)
        self.detections.update(other.detections)


@dataclass(slots=True)
class PartitionResult:
    records: list[Any]
    rejects: list[Reject]
    stats: PartitionStats


class RecordAdapter(ABC):
    """One file format's view of a parsed record: where the ruled values are, and how to put
    new values back.

    ``slots`` returns the values the rules select with a handle that ``replace`` gets back
    with the new values, in the same order. It raises ``ValueError`` with a reason, which names
    no value, when a selected field cannot be processed, and the row is then rejected.
    """

    @abstractmethod
    def slots(self, record: Any) -> tuple[Any, list[Slot]]: ...

    @abstractmethod
    def replace(self, record: Any, handle: Any, values: Sequence[tuple[str, ValueType]]) -> Any: ...
