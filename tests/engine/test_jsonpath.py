from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.bodies import parse_json
from gateway.engine.jsonpath import JsonPathSyntaxError, parse_json_path

DOCUMENT: dict[str, Any] = {
    "card": {"number": "4242424242424242", "cvc": "123"},
    "items": [{"number": "a"}, {"number": "b"}, {"other": "c"}],
    "map": {"x": {"number": "m1"}, "y": {"number": "m2"}},
    "number": "top",
}


def selected(expression: str, document: Any = DOCUMENT) -> list[Any]:
    return [container[key] for container, key in parse_json_path(expression).locate(document)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$.card.number", ["4242424242424242"]),
        ("$['card']['cvc']", ["123"]),
        ("$.card['number','cvc']", ["4242424242424242", "123"]),
        ("$.items[*].number", ["a", "b"]),
        ("$.items[0].number", ["a"]),
        ("$.items[-1].other", ["c"]),
        ("$.items[0:2].number", ["a", "b"]),
        ("$.missing.number", []),
        ("$.card.number.deeper", []),
    ],
)
def test_child_segments(expression: str, expected: list[Any]) -> None:
    assert selected(expression) == expected


def test_wildcard_on_object_selects_member_values() -> None:
    # RFC 9535: [*] on an object selects its member values (jsonpath-ng would not).
    assert selected("$.map[*].number") == ["m1", "m2"]


def test_member_name_on_array_selects_nothing() -> None:
    assert selected("$.items.number") == []


def test_descendant_segment_in_document_order() -> None:
    # The root node comes first, so its own member precedes the deeper ones (RFC 9535, 2.5.2.2).
    assert selected("$..number") == ["top", "4242424242424242", "a", "b", "m1", "m2"]


def test_descendant_wildcard_reaches_every_leaf() -> None:
    document = {"a": [1, {"b": 2}]}
    assert selected("$..[*]", document) == [[1, {"b": 2}], 1, {"b": 2}, 2]


def test_place_listed_once_for_overlapping_selectors() -> None:
    places = parse_json_path("$.card['number','number']").locate(DOCUMENT)
    assert len(places) == 1


def test_places_allow_replacement() -> None:
    document = parse_json(b'{"a": [{"n": "1"}, {"n": "2"}]}', max_depth=10)
    for container, key in parse_json_path("$.a[*].n").locate(document):
        container[key] = "tok"  # type: ignore[index]
    assert document == {"a": [{"n": "tok"}, {"n": "tok"}]}


@pytest.mark.parametrize(
    "expression",
    ["card.number", "$", "$.a[?(@.b)]", "$.a[", "$.`this`"],
)
def test_invalid_or_unsupported_expressions(expression: str) -> None:
    with pytest.raises(JsonPathSyntaxError):
        parse_json_path(expression)


def test_member_name_selects_case_variants() -> None:
    # Go's encoding/json and ASP.NET Core bind "NUMBER" to a field named number.
    assert selected("$.card.number", {"card": {"NUMBER": "x"}}) == ["x"]
    assert selected("$..cvc", {"a": {"CVC": "1"}, "cvc": "2"}) == ["2", "1"]
