"""Shared values of the audit tests: a fixed audit key and numbered events."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.events import AuditEvent, Outcome
from gateway.audit.records import AuditRecord, ChainPosition, seal_events
from gateway.secret import Secret

AUDIT_KEY = Secret(bytes(range(64, 96)))
OTHER_KEY = Secret(bytes(range(96, 128)))
MOMENT = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_event(number: int) -> AuditEvent:
    """A detokenize event whose token fingerprint is ``number`` in hex, so records differ."""
    return AuditEvent(
        action="detokenize",
        outcome=Outcome.ALLOWED,
        client="backend",
        connection="stripe",
        operation="create-payment-method",
        class_name="card.pan",
        token_fingerprint=f"{number:016x}",
        view="plain",
    )


def make_records(
    count: int, *, key: Secret[bytes] = AUDIT_KEY, after: ChainPosition | None = None
) -> list[AuditRecord]:
    events = [make_event(number) for number in range(1, count + 1)]
    return seal_events(events, after or ChainPosition(), key.reveal(), MOMENT)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def read_lines(path: Path) -> list[bytes]:
    """Return the lines of a file, each with its newline."""
    return path.read_bytes().splitlines(keepends=True)


def fingerprints(lines: list[bytes]) -> list[int]:
    """Return the event number of each record, as ``make_event`` put it in the fingerprint."""
    return [int(json.loads(line)["token_fingerprint"], 16) for line in lines]


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
