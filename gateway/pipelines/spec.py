"""Pipeline specs: which input format, and what to do with which field of each record.

A spec is YAML, which ``specfile.load_spec`` reads into these frozen values::

    format: csv                     # csv, jsonl, fixed_width or ipm
    input: data/patients.csv        # optional; the command line's inputs win
    output: clean/patients.csv
    csv: {delimiter: ",", header: true}
    columns:                        # values replaced whole
      - {column: SSN, action: tokenize, class: person.ssn, deterministic: true}
    scan:                           # free text searched with detectors
      - {column: NOTES, detectors: [card, email, phone]}

Fields are named by CSV header (``column``), JSONPath for JSON Lines (``json``), 1-based
inclusive character positions for fixed-width records (``positions: 5-20``, with ``record``
naming a record type), and data element numbers for IPM (``element: 2``).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Final

from gateway.engine.jsonpath import JsonPath
from gateway.pipelines.detectors import DETECTOR_NAMES

DEFAULT_BATCH_SIZE: Final = 5000
UUID_TOKEN_LENGTH: Final = 36
"""Length of a ``uuid`` token: ``tok_`` and 32 hex digits."""
LENGTH_PRESERVING_FORMATS: Final = frozenset({"pan", "pan_last4", "numeric", "alphanumeric"})


class InputFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    FIXED_WIDTH = "fixed_width"
    IPM = "ipm"


class Action(enum.StrEnum):
    TOKENIZE = "tokenize"
    DETOKENIZE = "detokenize"


@dataclass(frozen=True, slots=True)
class CsvOptions:
    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    encoding: str = "utf-8"
    """The text encoding; a UTF-8 byte-order mark is recognized and written back."""


@dataclass(frozen=True, slots=True)
class RecordType:
    """Records whose characters ``start:end`` (0-based, end exclusive) equal ``value``."""

    name: str
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class FixedWidthOptions:
    record_length: int
    separator: str = "\n"
    """Text between records, in the code page's characters; empty for none."""
    encoding: str = "ascii"
    record_types: tuple[RecordType, ...] = ()


@dataclass(frozen=True, slots=True)
class IpmOptions:
    encoding: str = "cp500"
    blocked: bool = True
    """Whether the file is in 1014-byte blocks: 1012 bytes of records, then two pad bytes."""


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Where a value sits in a record; exactly one of the four kinds is set."""

    column: str | None = None
    json: JsonPath | None = None
    start: int | None = None
    """Fixed-width: 0-based start and exclusive end of the field."""
    end: int | None = None
    record: str | None = None
    """Fixed-width: the record type the positions apply to; None means every record."""
    element: int | None = None

    def __str__(self) -> str:
        if self.column is not None:
            return f"column {self.column}"
        if self.json is not None:
            return f"json {self.json.expression}"
        if self.element is not None:
            return f"element {self.element}"
        record = f" of record {self.record}" if self.record else ""
        return f"positions {(self.start or 0) + 1}-{self.end}{record}"

    @property
    def width(self) -> int | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """A field whose whole value is tokenized or detokenized, as a route operation is."""

    field: FieldRef
    action: Action = Action.TOKENIZE
    format: str = "uuid"
    deterministic: bool = False
    ttl: float | None = None
    class_name: str | None = None
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)
    """Which of format, deterministic and ttl the spec set itself."""


@dataclass(frozen=True, slots=True)
class ScanRule:
    """A free-text field in which every detected value is replaced by a token."""

    field: FieldRef
    detectors: tuple[str, ...] = DETECTOR_NAMES
    formats: dict[str, str] = dataclasses.field(default_factory=dict)
    """Token format by detector name, filled in for every detector at load time."""
    deterministic: bool = True
    ttl: float | None = None
    class_settings: dict[str, tuple[bool, float | None]] = dataclasses.field(default_factory=dict)
    """Determinism and expiry by detector name, from the detector's data class in the
    configuration. A detector without an entry uses the rule's ``deterministic`` and ``ttl``."""

    def settings(self, detector: str) -> tuple[bool, float | None]:
        """Return whether a detection is tokenized deterministically, and its expiry."""
        return self.class_settings.get(detector, (self.deterministic, self.ttl))


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    source: str
    format: InputFormat
    inputs: tuple[str, ...] = ()
    """Inputs to use when the command line names none."""
    output: str | None = None
    csv: CsvOptions = CsvOptions()
    fixed_width: FixedWidthOptions | None = None
    ipm: IpmOptions = IpmOptions()
    columns: tuple[ColumnRule, ...] = ()
    scans: tuple[ScanRule, ...] = ()
    batch_size: int = DEFAULT_BATCH_SIZE
    """Values per store round trip."""

    def reveals(self) -> bool:
        return any(rule.action is Action.DETOKENIZE for rule in self.columns)


def default_detection_format(detector: str, *, fixed: bool) -> str:
    """Return the token format for a detection: ``pan`` for cards, else uuid or alphanumeric."""
    if detector == "card":
        return "pan"
    return "alphanumeric" if fixed else "uuid"
