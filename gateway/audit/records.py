"""Audit records: an ``AuditEvent`` with its place in a chain and a MAC over both.

A record is one JSON object on one line, its keys sorted::

    {"action":"detokenize","class_name":"card.pan","client":"backend","connection":"stripe",
     "mac":"9c1f...","operation":"create-payment-method","outcome":"allowed","prev":"41d0...",
     "reason":null,"seq":7,"time":"2025-06-01T12:00:00.123Z","token_fingerprint":"5be2...",
     "view":"plain"}

- ``seq`` numbers the records of one chain from 1.
- ``time`` is UTC in RFC 3339 form with milliseconds.
- ``prev`` is the ``mac`` of the record before, or ``GENESIS`` for the first record.
- ``mac`` is the hex HMAC-SHA256, under the audit key, of the canonical encoding of every other
  field: JSON with sorted keys, the separators ``,`` and ``:`` without spaces, and text as UTF-8
  (Python's ``json.dumps`` with ``sort_keys=True, separators=(",", ":"), ensure_ascii=False``).
- The line itself is the canonical encoding of the whole record, ``mac`` included, and a newline.

Any change to a line's bytes therefore makes its mac fail to verify, or makes the line
non-canonical. Each mac covers ``prev``, so removing, reordering or inserting a line breaks the
chain at the next line. Computing a mac takes the audit key (``KeyRing.audit_key``), so a chain
that verifies was written by a holder of that key. The other fields are the event's, which never
include a value or a token: a token appears only as its keyed fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.audit.events import AuditEvent, Outcome

GENESIS: Final = "0" * 64
"""The ``prev`` of the first record of a chain."""

EVENT_FIELDS: Final = (
    "action",
    "outcome",
    "client",
    "connection",
    "operation",
    "class_name",
    "token_fingerprint",
    "view",
    "reason",
)
CHAIN_FIELDS: Final = ("seq", "time", "prev", "mac")
RECORD_FIELDS: Final = frozenset(EVENT_FIELDS + CHAIN_FIELDS)

_REQUIRED_TEXT: Final = frozenset({"action", "operation"})
_OUTCOMES: Final = frozenset(outcome.value for outcome in Outcome)
_HEX_MAC: Final = re.compile(r"[0-9a-f]{64}")
_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """The end of a chain: the last record's ``seq`` and ``mac``, or 0 and ``GENESIS``."""

    seq: int = 0
    mac: str = GENESIS


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One sealed record, ready to append."""

    seq: int
    mac: str
    line: bytes
    """The canonical encoding of the record, ending with a newline."""


@dataclass(frozen=True, slots=True)
class CheckedRecord:
    """The chain fields of a record whose line verified on its own."""

    seq: int
    prev: str
    mac: str


@dataclass(frozen=True, slots=True)
class LineProblem:
    """The reason a line is not a valid record: a short ``kind``, such as ``invalid mac``."""

    kind: str
    detail: str


def format_time(moment: datetime) -> str:
    """Return ``moment`` as UTC in RFC 3339 form with milliseconds: ``2025-06-01T12:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def canonical_json(fields: Mapping[str, object]) -> bytes:
    """Return the canonical encoding of ``fields`` that macs are computed over.

    Raises ``TypeError`` for a value JSON cannot hold and ``UnicodeEncodeError`` for text that
    UTF-8 cannot encode, such as a lone surrogate.
    """
    text = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def compute_mac(key: bytes, fields: Mapping[str, object]) -> str:
    """Return the hex HMAC-SHA256 of the canonical encoding of ``fields`` under ``key``."""
    return hmac.new(key, canonical_json(fields), hashlib.sha256).hexdigest()


def event_fields(event: AuditEvent) -> dict[str, object]:
    return {
        "action": event.action,
        "outcome": event.outcome.value,
        "client": event.client,
        "connection": event.connection,
        "operation": event.operation,
        "class_name": event.class_name,
        "token_fingerprint": event.token_fingerprint,
        "view": event.view,
        "reason": event.reason,
    }


def seal_events(
    events: Sequence[AuditEvent], after: ChainPosition, key: bytes, moment: datetime
) -> list[AuditRecord]:
    """Turn ``events`` into records that continue the chain ending at ``after``.

    Every record gets the time ``moment``. Raises ``TypeError`` or ``ValueError`` when an event
    field cannot be encoded, before any record is returned.
    """
    time = _encode_text(format_time(moment))
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    records: list[AuditRecord] = []
    seq, prev = after.seq, after.mac
    for event in events:
        seq += 1
        unsigned = _canonical_event(event, seq, time, prev)
        mac_context = keyed.copy()
        mac_context.update(unsigned)
        mac = mac_context.hexdigest()
        records.append(AuditRecord(seq, mac, _with_mac(unsigned, mac) + b"\n"))
        prev = mac
    return records


def _canonical_event(event: AuditEvent, seq: int, time: str, prev: str) -> bytes:
    """Return ``canonical_json`` of the event's fields with ``seq``, ``time`` and ``prev``.

    It writes the keys in their sorted order by hand, because this runs once per record and
    ``json.dumps`` with ``sort_keys`` costs about five times more. Every field is text or None
    except ``seq``, and text is escaped by the function ``json.dumps`` uses with
    ``ensure_ascii=False``, so the bytes are the same. ``time`` comes already escaped.
    """
    text = (
        f'{{"action":{_encode_text(event.action)}'
        f',"class_name":{_encode_optional(event.class_name)}'
        f',"client":{_encode_optional(event.client)}'
        f',"connection":{_encode_optional(event.connection)}'
        f',"operation":{_encode_text(event.operation)}'
        f',"outcome":{_encode_text(event.outcome.value)}'
        f',"prev":{_encode_text(prev)}'
        f',"reason":{_encode_optional(event.reason)}'
        f',"seq":{int(seq)}'
        f',"time":{time}'
        f',"token_fingerprint":{_encode_optional(event.token_fingerprint)}'
        f',"view":{_encode_optional(event.view)}}}'
    )
    return text.encode("utf-8")


_encode_text: Final[Callable[[str], str]] = json.encoder.encode_basestring
"""JSON string encoding without ASCII escaping: what ``json.dumps`` uses with
``ensure_ascii=False``. It raises ``TypeError`` for anything but ``str``."""


def _encode_optional(value: str | None) -> str:
    return "null" if value is None else _encode_text(value)


def _with_mac(unsigned: bytes, mac: str) -> bytes:
    """Insert ``"mac"`` into a canonical encoding at its sorted place, before ``"operation"``.

    This equals encoding the fields with the mac again, because keys are sorted and ``mac``
    sorts between ``connection`` and ``operation``. The text ``,"operation":`` cannot occur
    inside a string value, where every quote is escaped, so its first occurrence is the key.
    """
    position = unsigned.index(b',"operation":')
    return unsigned[:position] + b',"mac":"' + mac.encode() + b'"' + unsigned[position:]


def check_line(line: bytes, key: bytes) -> CheckedRecord | LineProblem:
    """Check one line on its own: complete, a well-formed record, canonical, and its mac valid.

    Returns the record's chain fields, or the first problem found. ``line`` includes its
    newline. The chain (``seq`` and ``prev`` against the line before) is the caller's to check,
    because one line alone cannot show it.
    """
    if not line.endswith(b"\n"):
        return LineProblem("incomplete line", "the line does not end with a newline")
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return LineProblem("invalid JSON", str(exc))
    if not isinstance(record, dict):
        return LineProblem("invalid record", "the line is JSON but not an object")

    problem = _check_fields(record)
    if problem is not None:
        return LineProblem("invalid record", problem)
    seq, prev, mac = record["seq"], record["prev"], record["mac"]
    assert isinstance(seq, int)
    assert isinstance(prev, str)
    assert isinstance(mac, str)

    fields = {name: value for name, value in record.items() if name != "mac"}
    expected_mac = compute_mac(key, fields)
    if not hmac.compare_digest(expected_mac, mac):
        return LineProblem(
            "invalid mac",
            "the record was changed, or it was written under another audit key",
        )
    # The mac covers the parsed fields, so spacing, key order, escapes or a duplicate key could
    # change without it. Only the canonical bytes are accepted, which makes any edit visible.
    if canonical_json(record) + b"\n" != line:
        return LineProblem(
            "not canonical", "the line differs from the canonical encoding of its record"
        )
    return CheckedRecord(seq, prev, mac)


def _check_fields(record: dict[str, object]) -> str | None:
    """Return what is wrong with the record's fields and their types, or None."""
    missing = sorted(RECORD_FIELDS - record.keys())
    if missing:
        return "missing fields " + ", ".join(missing)
    unknown = sorted(record.keys() - RECORD_FIELDS)
    if unknown:
        return "unknown fields " + ", ".join(unknown)

    seq = record["seq"]
    # bool is an int in Python, and `"seq": true` is not a sequence number.
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "seq must be a whole number from 1"
    for name in ("prev", "mac"):
        value = record[name]
        if not isinstance(value, str) or not _HEX_MAC.fullmatch(value):
            return f"{name} must be 64 lowercase hex digits"
    time = record["time"]
    if not isinstance(time, str) or not _TIME.fullmatch(time):
        return "time must be UTC with milliseconds, such as 2025-06-01T12:00:00.123Z"
    if record["outcome"] not in _OUTCOMES:
        return "outcome must be one of " + ", ".join(sorted(_OUTCOMES))
    for name in EVENT_FIELDS:
        value = record[name]
        if name in _REQUIRED_TEXT and not isinstance(value, str):
            return f"{name} must be a string"
        if value is not None and not isinstance(value, str):
            return f"{name} must be a string or null"
    return None
