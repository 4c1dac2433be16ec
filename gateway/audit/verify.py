"""Verify an audit file: every line a valid record, and the records one unbroken chain."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.records import ChainPosition, CheckedRecord, LineProblem, check_line
from gateway.secret import Secret


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of verifying a file of audit records.

    When ``bad_line`` is None every line verified. Otherwise it is the 1-based number of the
    first bad line, ``problem`` names what is wrong (``invalid JSON``, ``invalid record``,
    ``invalid mac``, ``not canonical``, ``sequence gap``, ``sequence out of order``, ``broken
    chain`` or ``incomplete line``) and ``detail`` explains it. ``records``, ``last_seq`` and
    ``last_mac`` describe the records before the bad line, or the whole file.
    """

    records: int
    last_seq: int
    """The ``seq`` of the last good record, or 0 when there is none."""
    last_mac: str
    """The ``mac`` of the last good record, or ``GENESIS`` when there is none."""
    bad_line: int | None = None
    problem: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def verify_audit_file(path: Path, key: Secret[bytes]) -> VerifyResult:
    """Verify every record of the audit file at ``path`` under the audit ``key``.

    Removing, editing, reordering or inserting a line makes the result name that line, or the
    first line after it. Removing lines at the end cannot be seen from the file alone, because
    a shorter chain is still a valid chain, and neither can replacing the file with an older
    copy. Compare ``last_seq`` and ``last_mac`` with a record of the chain's end kept elsewhere
    to detect that: the sequence and mac the gateway logs when it closes the file, or the last
    entry of the Redis stream that copies it.

    Raises ``OSError`` when the file cannot be read.
    """
    with path.open("rb") as file:
        return verify_lines(file, key)


def verify_lines(lines: Iterable[bytes], key: Secret[bytes]) -> VerifyResult:
    """Verify records given as lines that keep their newlines, as ``verify_audit_file`` does."""
    secret = key.reveal()
    position = ChainPosition()
    count = 0
    for number, line in enumerate(lines, start=1):
        checked = check_line(line, secret)
        if isinstance(checked, LineProblem):
            return _failed(count, position, number, checked)

        problem = _chain_problem(checked, position)
        if problem is not None:
            return _failed(count, position, number, problem)

        position = ChainPosition(checked.seq, checked.mac)
        count += 1
    return VerifyResult(count, position.seq, position.mac)


def _chain_problem(record: CheckedRecord, before: ChainPosition) -> LineProblem | None:
    seq, expected = record.seq, before.seq + 1
    if seq > expected:
        return LineProblem(
            "sequence gap",
            f"expected sequence {expected}, found {seq}: a record before this line is missing, "
            "or the lines are out of order",
        )
    if seq < expected:
        return LineProblem(
            "sequence out of order",
            f"expected sequence {expected}, found {seq}: the lines are out of order, or a "
            "record appears twice",
        )
    if record.prev != before.mac:
        where = "the start of a chain" if before.seq == 0 else "the line before"
        return LineProblem(
            "broken chain",
            f"prev does not match {where}: a line was removed, reordered or inserted",
        )
    return None


def _failed(count: int, position: ChainPosition, number: int, problem: LineProblem) -> VerifyResult:
    return VerifyResult(count, position.seq, position.mac, number, problem.kind, problem.detail)
