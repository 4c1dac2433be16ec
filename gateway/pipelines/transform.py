"""The per-partition transform: parsed rows in, transformed records and rejects out.

``transform_partition`` is a plain function of its arguments. It does no I/O except through
the ``Tokenizer`` it is given, and keeps no state between calls, so a Spark or Dask task can
call it on a partition as the worker processes here do.

A row whose ruled value cannot be tokenized or revealed is rejected whole, so a ruled field is
never written in plaintext. In free text, values that the detectors find are replaced by
tokens and every other character stays as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

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
from gateway.tokens.vault import TokenizeItem

# Candidates for tokens inside free text when revealing: uuid tokens, and digit runs that may be
# card tokens or length-preserving tokens of other detections.
_TOKEN_CANDIDATE: Final = re.compile(r"tok_[0-9a-f]{32}|[0-9](?:[ -]?[0-9]){6,18}")


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules of a spec, bound to one input, in the order the adapter's slots name them."""

    rules: tuple[ColumnRule | ScanRule, ...]
    labels: tuple[str, ...]
    """How each rule's field is named in reject reasons and the report."""
    reveal: bool = False
    """Reveal instead of tokenize: every column rule detokenizes, every scan looks for tokens."""
    batch_size: int = 5000
    """Values per store round trip; rows are taken until their values reach it."""


@dataclass(slots=True)
class _Change:
    """A planned replacement in one slot: whole (``start`` None) or a span of free text."""

    slot: int
    request: int
    class_name: str = ""
    """The class the report counts a tokenized value under; a revealed one names its own."""
    start: int | None = None
    end: int | None = None


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
    for row in rows:
        result.stats.rows += 1
        result.stats.bytes_in += len(row.raw)
        batch.append(row)
        pending_values += len(plan.rules)
        if pending_values >= plan.batch_size:
            _transform_batch(batch, adapter, plan, tokenizer, result)
            batch, pending_values = [], 0
    if batch:
        _transform_batch(batch, adapter, plan, tokenizer, result)
    return result


def _transform_batch(
    batch: list[ParsedRow],
    adapter: RecordAdapter,
    plan: Plan,
    tokenizer: Tokenizer,
    result: PartitionResult,
) -> None:
    items: list[TokenizeItem] = []
    tokens: list[str] = []
    planned: list[tuple[ParsedRow, object, list[Slot], list[_Change]] | None] = []

    for row in batch:
        if row.problem is not None:
            result.rejects.append(Reject(row.number, row.problem, row.raw))
            planned.append(None)
            continue
        try:
            handle, slots = adapter.slots(row.record)
        except ValueError as exc:
            result.rejects.append(Reject(row.number, str(exc), row.raw))
            planned.append(None)
            continue
        changes: list[_Change] = []
        for position, slot in enumerate(slots):
            rule = plan.rules[slot.rule]
            if isinstance(rule, ColumnRule):
                _plan_column(position, slot, rule, plan.reveal, items, tokens, changes)
            else:
                _plan_scan(position, slot, rule, plan.reveal, items, tokens, changes)
        planned.append((row, handle, slots, changes))

    token_results = tokenizer.tokenize(items) if items else []
    value_results = tokenizer.detokenize(tokens) if tokens else []

    for entry in planned:
        if entry is None:
            continue
        row, handle, slots, changes = entry
        outcome = _apply(row, slots, changes, plan, token_results, value_results, result.stats)
        if isinstance(outcome, Reject):
            result.rejects.append(outcome)
            continue
        try:
            result.records.append(adapter.replace(row.record, handle, outcome))
        except ValueError as exc:
            result.rejects.append(Reject(row.number, str(exc), row.raw))
    result.stats.rejected = len(result.rejects)


def _reveals(rule: ColumnRule, reveal: bool) -> bool:
    return reveal or rule.action is Action.DETOKENIZE


def _plan_column(
    position: int,
    slot: Slot,
    rule: ColumnRule,
    reveal: bool,
    items: list[TokenizeItem],
    tokens: list[str],
    changes: list[_Change],
) -> None:
    if not slot.value:
        return
    if _reveals(rule, reveal):
        changes.append(_Change(position, len(tokens)))
        tokens.append(slot.value)
        return
    class_name = rule.class_name or get_format(rule.format).default_class
    changes.append(_Change(position, len(items), class_name))
    items.append(
        TokenizeItem(
            value=slot.value,
            format=rule.format,
            value_type=slot.value_type,
            deterministic=rule.deterministic,
            ttl=rule.ttl,
            class_name=rule.class_name,
        )
    )


def _plan_scan(
    position: int,
    slot: Slot,
    rule: ScanRule,
    reveal: bool,
    items: list[TokenizeItem],
    tokens: list[str],
    changes: list[_Change],
) -> None:
    if reveal:
        for match in _TOKEN_CANDIDATE.finditer(slot.value):
            changes.append(_Change(position, len(tokens), "", match.start(), match.end()))
            tokens.append(match.group())
        return
    for detection in detect(slot.value, rule.detectors):
        class_name = DETECTOR_CLASSES[detection.detector]
        changes.append(_Change(position, len(items), class_name, detection.start, detection.end))
        items.append(
            TokenizeItem(
                value=slot.value[detection.start : detection.end],
                format=rule.formats[detection.detector],
                deterministic=rule.deterministic,
                ttl=rule.ttl,
                class_name=class_name,
            )
        )


def _apply(
    row: ParsedRow,
    slots: list[Slot],
    changes: list[_Change],
    plan: Plan,
    token_results: Sequence[object],
    value_results: Sequence[object],
    stats: PartitionStats,
) -> list[tuple[str, ValueType]] | Reject:
    """Return the new value of every slot, or a reject when a ruled value failed."""
    values = [(slot.value, slot.value_type) for slot in slots]
    counted: list[tuple[str, str]] = []
    detections: list[str] = []
    # Spans are replaced from the end of the text, so earlier offsets stay valid.
    for change in sorted(changes, key=lambda item: (item.slot, -(item.start or 0))):
        slot = slots[change.slot]
        rule = plan.rules[slot.rule]
        label = plan.labels[slot.rule]
        reveal = plan.reveal or (isinstance(rule, ColumnRule) and rule.action is Action.DETOKENIZE)
        answer = (value_results if reveal else token_results)[change.request]

        if isinstance(answer, InvalidValueError | InvalidTokenError):
            if isinstance(rule, ScanRule) and reveal:
                continue  # text that only looks like a token stays as it is
            return Reject(row.number, f"{label}: {answer.message}", row.raw)

        text, value_type = values[change.slot]
        if reveal:
            new_text, class_name = answer.value, answer.class_name  # type: ignore[attr-defined]
            new_type = answer.value_type  # type: ignore[attr-defined]
        else:
            new_text, new_type = str(answer), value_type
            class_name = change.class_name
        if change.start is None:
            values[change.slot] = (new_text, new_type)
        else:
            values[change.slot] = (text[: change.start] + new_text + text[change.end :], value_type)
            if not reveal:
                detections.append(_detector_of(class_name))
        counted.append((label, class_name))

    stats.cells.update(counted)
    stats.detections.update(detections)
    return values


_DETECTOR_OF_CLASS: Final = {class_name: name for name, class_name in DETECTOR_CLASSES.items()}


def _detector_of(class_name: str) -> str:
    return _DETECTOR_OF_CLASS.get(class_name, class_name)
