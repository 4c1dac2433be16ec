"""JSON Lines: one JSON value per line, fields selected by JSONPath as in route files.

Each line is parsed like a JSON body of the gateway: numbers keep their digits, and duplicate
keys, NaN and nesting deeper than ``MAX_JSON_DEPTH`` make the row malformed. Lines are written
back compactly (no spaces), and empty lines are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from gateway.engine.bodies import dump_json, json_number, parse_json
from gateway.engine.jsonpath import JsonPath
from gateway.errors import InvalidBodyError
from gateway.pipelines.fileformat import PARTITION_BYTES, FileFormat, split_records
from gateway.pipelines.records import ParsedRow, RecordAdapter, Slot
from gateway.pipelines.spec import ColumnRule, ScanRule
from gateway.tokens.record import ValueType

MAX_JSON_DEPTH: Final = 64
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass
class JsonLinesFormat(FileFormat):
    name: str = ""

    def open(self, stream: BinaryIO, name: str) -> bytes:
        self.name = name
        return b""

    def bind(self, rules: Sequence[ColumnRule | ScanRule]) -> tuple[RecordAdapter, list[str]]:
        paths = tuple(
            (index, rule.field.json) for index, rule in enumerate(rules) if rule.field.json
        )
        labels = [str(rule.field) for rule in rules]
        return JsonAdapter(paths), labels

    def partitions(self, stream: BinaryIO, size: int = PARTITION_BYTES) -> Iterator[bytes]:
        return split_records(stream, self.name, lambda data, end: True, size)

    def parse(self, partition: bytes) -> Iterator[ParsedRow]:
        number = 0
        for line in partition.splitlines(keepends=True):
            if not line.strip():
                continue
            number += 1
            try:
                document = parse_json(line, max_depth=MAX_JSON_DEPTH)
                # A lone surrogate escape parses, but fails when the line is written back.
                if _SURROGATE_ESCAPE.search(line):
                    dump_json(document)
            except InvalidBodyError as exc:
                reason = exc.message.replace("JSON body", "JSON line")
                yield ParsedRow(number, line, problem=reason)
                continue
            yield ParsedRow(number, line, document)

    def serialize(self, records: Sequence[Any]) -> bytes:
        return b"".join(dump_json(document) + b"\n" for document in records)


@dataclass(frozen=True, slots=True)
class JsonAdapter(RecordAdapter):
    paths: tuple[tuple[int, JsonPath | None], ...]

    def slots(self, record: Any) -> tuple[Any, list[Slot]]:
        places: list[tuple[Any, Any]] = []
        slots: list[Slot] = []
        for rule, path in self.paths:
            assert path is not None
            for place in path.locate(record):
                container: Any = place[0]
                key = place[1]
                value = container[key]
                if value is None or isinstance(value, bool):
                    continue
                if isinstance(value, dict | list):
                    kind = "an object" if isinstance(value, dict) else "an array"
                    raise ValueError(f"json {path.expression} is {kind}, not a string or number")
                if isinstance(value, str):
                    slots.append(Slot(rule, value))
                else:
                    slots.append(Slot(rule, str(value), ValueType.NUMBER))
                places.append((container, key))
        return places, slots

    def replace(self, record: Any, handle: Any, values: Sequence[tuple[str, ValueType]]) -> Any:
        for (container, key), (value, value_type) in zip(handle, values, strict=True):
            container[key] = json_number(value) if value_type is ValueType.NUMBER else value
        return record
