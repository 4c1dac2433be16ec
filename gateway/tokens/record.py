"""The metadata sealed beside each tokenized value."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ValueType(enum.Enum):
    """The JSON type a value had before tokenization; detokenize restores it."""

    STRING = "string"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Metadata of a token record, authenticated together with its value.

    Times are Unix times in whole milliseconds, the unit of the blob layout and of Redis
    ``PEXPIREAT``.
    """

    class_name: str
    format: str
    value_type: ValueType
    created_at_ms: int
    expires_at_ms: int | None
    """None keeps the record until it is deleted."""

    @property
    def expires_at(self) -> float | None:
        """The expiry as Unix time in seconds, as ``StoredRecord.expires_at`` has it."""
        return None if self.expires_at_ms is None else self.expires_at_ms / 1000

    def is_expired(self, now_ms: int) -> bool:
        return self.expires_at_ms is not None and self.expires_at_ms <= now_ms
