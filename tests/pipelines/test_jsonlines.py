"""JSON Lines: JSONPath slots, numbers kept as numbers, malformed lines."""

from __future__ import annotations

import io

import pytest

from gateway.engine.jsonpath import parse_json_path
from gateway.pipelines.jsonlines import JsonLinesFormat
from gateway.pipelines.spec import ColumnRule, FieldRef
from gateway.tokens.record import ValueType


def test_slots_and_replace() -> None:
    file_format = JsonLinesFormat()
    stream = io.BytesIO(
        b'{"patient": {"ssn": "123-45-6789", "mrn": 1234.50}, "visits": [{"card": "4242424242424242"}]}\n'
        b"\n"
        b'{"patient": {"ssn": null}}\n'
        b'{"patient": \n'
        b'{"patient": {"ssn": {"nested": 1}}}\n'
    )
    file_format.open(stream, "input.jsonl")
    adapter, labels = file_format.bind(
        [
            ColumnRule(FieldRef(json=parse_json_path("$.patient.ssn"))),
            ColumnRule(FieldRef(json=parse_json_path("$.patient.mrn"))),
            ColumnRule(FieldRef(json=parse_json_path("$.visits[*].card"))),
        ]
    )
    assert labels == ["json $.patient.ssn", "json $.patient.mrn", "json $.visits[*].card"]
    rows = [
        row for partition in file_format.partitions(stream) for row in file_format.parse(partition)
    ]
    assert [row.number for row in rows] == [1, 2, 3, 4]

    handle, slots = adapter.slots(rows[0].record)
    assert [(slot.value, slot.value_type) for slot in slots] == [
        ("123-45-6789", ValueType.STRING),
        ("1234.50", ValueType.NUMBER),
        ("4242424242424242", ValueType.STRING),
    ]
    record = adapter.replace(
        rows[0].record,
        handle,
        [("tok_a", ValueType.STRING), ("99.10", ValueType.NUMBER), ("tok_b", ValueType.STRING)],
    )
    assert (
        file_format.serialize([record])
        == b'{"patient":{"ssn":"tok_a","mrn":99.10},"visits":[{"card":"tok_b"}]}\n'
    )

    assert adapter.slots(rows[1].record)[1] == []
    assert rows[2].problem is not None
    assert rows[2].problem.startswith("malformed JSON line")
    with pytest.raises(ValueError, match=r"json \$\.patient\.ssn is an object"):
        adapter.slots(rows[3].record)
