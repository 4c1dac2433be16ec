"""The per-partition transform: parsed rows in, transformed records and rejects out.

``transform_partition`` is a plain function of its arguments. It does no I/O except through
the ``Tokenizer`` it is given, and keeps no state between calls, so a Spark or Dask task can
call it on a partition as the worker processes here do.

A row whose ruled value cannot be tokenized or revealed is rejected whole, so a ruled field is
never written in plaintext. In free text, values that the detectors find are replaced by
tokens and every other character stays as it was.

The loops here run once per ruled cell, so they use tuples and dict lookups rather than
objects: equal values of a batch become one request, and one vault call serves the batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import InvalidTokenError, InvalidValueError
from gateway.pipelines.detectors import DETECTOR_CLASSES, detect
from gateway.pipelines.records import (
    ParsedRow,
    PartitionResult,
    PartitionStats,
    RecordAdapter,
    Reject,
    Slot,
)
from gateway.pipelines.spec import Action, ColumnRule, ScanRule
from gateway.pipelines.tokenizer import Tokenizer
from gateway.tokens.formats import get_format
from gateway.tokens.record import ValueType
from gateway.tokens.vault import Revealed, TokenizeItem

# Candidates for tokens inside free text when revealing: uuid tokens, and digit runs that may be
# card tokens or length-preserving tokens of other detections.
_TOKEN_CANDIDATE: Final = re.compile(r"tok_[0-9a-f]{32}|[0-9](?:[ -]?[0-9]){6,18}")

# A planned change to one slot: (slot position, reveals, request index, span start, span end,
# detector). Start and end are None for a whole value, and detector is None outside free text.
type _Change = tuple[int, bool, int, int | None, int | None, str | None]


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules of a spec, bound to one input, in the order the adapter's slots name them."""

    rules: tuple[ColumnRule | ScanRule, ...]
    labels: tuple[str, ...]
    """The name of each rule's field in reject reasons and the report."""
    reveal: bool = False
    """Reveal instead of tokenize: every column rule detokenizes, every scan looks for tokens."""
    batch_size: int = 5000
    """Values per store round trip; rows are taken until their values reach it."""

    def reveals(self, rule_index: int) -> bool:
        rule = self.rules[rule_index]
        return self.reveal or (isinstance(rule, ColumnRule) and rule.action is Action.DETOKENIZE)

    def class_of(self, rule_index: int) -> str:
        """Return the class a tokenized value of a column rule is stored and counted under."""
        rule = self.rules[rule_index]
        assert isinstance(rule, ColumnRule)
        return rule.class_name or get_format(rule.format).default_class


def transform_partition(
    rows: Iterable[ParsedRow], adapter: RecordAdapter, plan: Plan, tokenizer: Tokenizer
) -> PartitionResult:
    """Tokenize (or reveal) the ruled values of ``rows`` and return the records and rejects.

    Unparsable rows and rows with a value that cannot be processed become rejects with a
    reason that names the field but never the value. Store failures propagate.
    """
    result = PartitionResult([], [], PartitionStats())
    batch: list[ParsedRow] = []
    pending_values = 0
    values_per_row = max(len(plan.rules), 1)
    # One batch waits for its tokens while the next one is planned, so the store works on one
    # batch while this thread works on the other.
    in_flight: _Batch | None = None
    try:
        for row in rows:
            result.stats.rows += 1
            result.stats.bytes_in += len(row.raw)
            batch.append(row)
            pending_values += values_per_row
            if pending_values >= plan.batch_size:
                submitted = _Batch(plan, adapter, tokenizer, batch)
                if in_flight is not None:
                    in_flight.finish(result)
                in_flight = submitted
                batch, pending_values = [], 0
        if batch:
            submitted = _Batch(plan, adapter, tokenizer, batch)
            if in_flight is not None:
                in_flight.finish(result)
            in_flight = submitted
        if in_flight is not None:
            in_flight.finish(result)
    except BaseException:
        tokenizer.cancel_pending()
        raise
    result.stats.rejected = len(result.rejects)
    return result


class _Batch:
    """One vault round trip's worth of rows. Creating it plans every change and submits the
    values to tokenize; ``finish`` reveals, collects the tokens and applies the changes."""

    def __init__(
        self, plan: Plan, adapter: RecordAdapter, tokenizer: Tokenizer, rows: list[ParsedRow]
    ) -> None:
        self.plan = plan
        self.adapter = adapter
        self.tokenizer = tokenizer
        indexes = range(len(plan.rules))
        self.reveals = [plan.reveals(index) for index in indexes]
        self.is_column = [isinstance(rule, ColumnRule) for rule in plan.rules]
        self.classes = [plan.class_of(index) if self.is_column[index] else "" for index in indexes]
        self.requests: dict[tuple[int, str, Any], int] = {}
        """(rule, value, value type or detector) of each value to tokenize, by request index."""
        self.tokens: dict[str, int] = {}
        """Each token to reveal, by request index."""

        self.rejects: list[Reject] = []
        """Rows that could not be parsed or split into slots."""
        self.planned: list[tuple[ParsedRow, Any, list[Slot], list[_Change]]] = []
        for row in rows:
            if row.problem is not None:
                self.rejects.append(Reject(row.number, row.problem, row.raw))
                continue
            try:
                handle, slots = self.adapter.slots(row.record)
            except ValueError as exc:
                self.rejects.append(Reject(row.number, str(exc), row.raw))
                continue
            self.planned.append((row, handle, slots, self._plan(slots)))
        self.pending = tokenizer.submit(self._items()) if self.requests else None

    def finish(self, result: PartitionResult) -> None:
        result.rejects.extend(self.rejects)
        revealed = self.tokenizer.detokenize(list(self.tokens)) if self.tokens else []
        tokenized = self.pending.result() if self.pending is not None else []

        counts: dict[tuple[str, str], int] = {}
        detections: dict[str, int] = {}
        for row, handle, slots, changes in self.planned:
            outcome = self._apply(row, slots, changes, tokenized, revealed, counts, detections)
            if isinstance(outcome, Reject):
                result.rejects.append(outcome)
                continue
            try:
                result.records.append(self.adapter.replace(row.record, handle, outcome))
            except ValueError as exc:
                result.rejects.append(Reject(row.number, str(exc), row.raw))
        result.stats.cells.update(counts)
        result.stats.detections.update(detections)

    def _plan(self, slots: list[Slot]) -> list[_Change]:
        changes: list[_Change] = []
        requests, tokens = self.requests, self.tokens
        for position, (rule_index, value, value_type) in enumerate(slots):
            if not value:
                continue
            reveal = self.reveals[rule_index]
            if self.is_column[rule_index]:
                if reveal:
                    index = tokens.setdefault(value, len(tokens))
                else:
                    index = requests.setdefault((rule_index, value, value_type), len(requests))
                changes.append((position, reveal, index, None, None, None))
            elif reveal:
                for match in _TOKEN_CANDIDATE.finditer(value):
                    index = tokens.setdefault(match.group(), len(tokens))
                    changes.append((position, True, index, match.start(), match.end(), None))
            else:
                rule = self.plan.rules[rule_index]
                assert isinstance(rule, ScanRule)
                for found in detect(value, rule.detectors):
                    key = (rule_index, value[found.start : found.end], found.detector)
                    index = requests.setdefault(key, len(requests))
                    changes.append((position, False, index, found.start, found.end, found.detector))
        return changes

    def _items(self) -> list[TokenizeItem]:
        items = []
        for rule_index, value, kind in self.requests:
            rule = self.plan.rules[rule_index]
            if isinstance(rule, ColumnRule):
                items.append(
                    TokenizeItem(
                        value=value,
                        format=rule.format,
                        value_type=kind,
                        deterministic=rule.deterministic,
                        ttl=rule.ttl,
                        class_name=rule.class_name,
                    )
                )
            else:
                deterministic, ttl = rule.settings(kind)
                items.append(
                    TokenizeItem(
                        value=value,
                        format=rule.formats[kind],
                        deterministic=deterministic,
                        ttl=ttl,
                        class_name=DETECTOR_CLASSES[kind],
                    )
                )
        return items

    def _apply(
        self,
        row: ParsedRow,
        slots: list[Slot],
        changes: list[_Change],
        tokenized: list[str | InvalidValueError],
        revealed: list[Revealed | InvalidTokenError],
        counts: dict[tuple[str, str], int],
        detections: dict[str, int],
    ) -> list[tuple[str, ValueType]] | Reject:
        """Return the new value of every slot, or a reject when a ruled value failed."""
        values = [(slot.value, slot.value_type) for slot in slots]
        row_counts: list[tuple[str, str]] = []
        row_detections: list[str] = []
        # Spans are replaced from the end of the text, so earlier offsets stay valid.
        if any(change[3] is not None for change in changes):
            changes = sorted(changes, key=lambda change: (change[0], -(change[3] or 0)))
        for position, reveal, index, start, end, detector in changes:
            rule_index = slots[position].rule
            label = self.plan.labels[rule_index]
            answer = revealed[index] if reveal else tokenized[index]
            if isinstance(answer, InvalidValueError | InvalidTokenError):
                if start is not None and reveal:
                    continue  # text that only looks like a token stays as it is
                return Reject(row.number, f"{label}: {answer.message}", row.raw)

            text, value_type = values[position]
            if isinstance(answer, Revealed):
                new_text, new_type, class_name = answer.value, answer.value_type, answer.class_name
            elif detector is not None:
                new_text, new_type, class_name = answer, value_type, DETECTOR_CLASSES[detector]
                row_detections.append(detector)
            else:
                new_text, new_type, class_name = answer, value_type, self.classes[rule_index]
            if start is None:
                values[position] = (new_text, new_type)
            else:
                values[position] = (text[:start] + new_text + text[end:], value_type)
            row_counts.append((label, class_name))

        # Counted only now, because a rejected row counts no cells.
        for key in row_counts:
            counts[key] = counts.get(key, 0) + 1
        for name in row_detections:
            detections[name] = detections.get(name, 0) + 1
        return values
