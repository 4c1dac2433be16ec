"""Built-in steps on message dictionaries, without sockets."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import InvalidBodyError, InvalidValueError, MissingFieldError
from gateway.functions.builtins import ArgumentError, compile_builtin


def json_message(body: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/",
        "query": [],
        "headers": {},
        "body_type": "json",
        "body": body,
    }


def form_message(pairs: list[list[str]]) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/",
        "query": [],
        "headers": {},
        "body_type": "form",
        "body": pairs,
    }


def run(name: str, args: dict[str, Any], message: dict[str, Any]) -> Any:
    return compile_builtin(name, args)(copy.deepcopy(message))["body"]


@pytest.mark.parametrize(
    ("name", "args", "body", "expected"),
    [
        pytest.param(
            "split_date",
            {"field": "$.at", "day": "$.d", "month": "$.m", "year": "$.y", "time": "$.t"},
            {"at": "2030-12-31T23:59:07Z"},
            {"at": "2030-12-31T23:59:07Z", "d": "31", "m": "12", "y": "2030", "t": "23:59:07"},
            id="split-datetime",
        ),
        pytest.param(
            "split_date",
            {"field": "$.at", "day": "$.x.d", "time": "$.x.t", "remove": True, "numbers": True},
            {"at": "2030-01-02"},
            {"x": {"d": 2}},
            id="split-date-only-has-no-time",
        ),
        pytest.param(
            "split_date",
            {"field": "$.at", "day": "$.d"},
            {"other": 1},
            {"other": 1},
            id="split-absent-field-is-skipped",
        ),
        pytest.param(
            "set",
            {"field": "$.a.b[0]", "value": "x"},
            {"a": {"b": [1, 2]}},
            {"a": {"b": ["x", 2]}},
            id="set-array-item",
        ),
        pytest.param(
            "set",
            {"field": "$.new.deep", "value": {"k": [1]}},
            {},
            {"new": {"deep": {"k": [1]}}},
            id="set-creates-objects",
        ),
        pytest.param(
            "set",
            {"field": "$.Card", "value": 1},
            {"card": 0},
            {"card": 1},
            id="set-keeps-spelling-of-existing-member",
        ),
        pytest.param(
            "rename",
            {"field": "$.card.number", "to": "pan"},
            {"card": {"number": "1", "cvc": "2"}},
            {"card": {"pan": "1", "cvc": "2"}},
            id="rename-member",
        ),
        pytest.param(
            "move",
            {"from": "$.card.exp", "to": "$.expiry"},
            {"card": {"exp": "12/30"}},
            {"card": {}, "expiry": "12/30"},
            id="move-member",
        ),
        pytest.param(
            "remove",
            {"fields": ["$.items[*].secret", "$.top"]},
            {"items": [{"secret": 1, "a": 1}, {"secret": 2}], "top": 0, "keep": 1},
            {"items": [{"a": 1}, {}], "keep": 1},
            id="remove-with-wildcard",
        ),
        pytest.param(
            "remove",
            {"field": "$.list[0:2]"},
            {"list": [0, 1, 2, 3]},
            {"list": [2, 3]},
            id="remove-slice-from-the-back",
        ),
        pytest.param(
            "map",
            {"fields": {"$.order.id": "$.id", "$.total": "$.amount.value", "$.gone": "$.none"}},
            {"id": "o-1", "amount": {"value": Decimal("12.50")}, "extra": True},
            {"order": {"id": "o-1"}, "total": Decimal("12.50")},
            id="map-builds-new-body",
        ),
    ],
)
def test_builtin_on_json(name: str, args: dict[str, Any], body: Any, expected: Any) -> None:
    assert run(name, args, json_message(body)) == expected


def test_map_to_form_changes_body_type() -> None:
    step = compile_builtin(
        "map", {"fields": {"amount": "$.amount", "card[number]": "$.card.n"}, "to": "form"}
    )
    result = step(json_message({"amount": 5, "card": {"n": "tok"}}))
    assert result["body_type"] == "form"
    assert result["body"] == [["amount", "5"], ["card[number]", "tok"]]


@pytest.mark.parametrize(
    ("name", "args", "pairs", "expected"),
    [
        pytest.param(
            "split_date",
            {"field": "exp", "month": "exp_month", "year": "exp_year", "remove": True},
            [["exp", "2030-04-01"]],
            [["exp_month", "04"], ["exp_year", "2030"]],
            id="split-form-field",
        ),
        pytest.param("set", {"field": "a", "value": 1}, [["a", "0"]], [["a", "1"]], id="set-form"),
        pytest.param(
            "rename", {"field": "a", "to": "b"}, [["A", "1"]], [["b", "1"]], id="rename-form"
        ),
        pytest.param(
            "remove",
            {"field": "a"},
            [["a", "1"], ["b", "2"], ["A", "3"]],
            [["b", "2"]],
            id="remove-form",
        ),
        pytest.param("move", {"from": "a", "to": "b"}, [["a", "1"]], [["b", "1"]], id="move-form"),
    ],
)
def test_builtin_on_form(
    name: str, args: dict[str, Any], pairs: list[list[str]], expected: list[list[str]]
) -> None:
    assert run(name, args, form_message(pairs)) == expected


@pytest.mark.parametrize(
    ("name", "args", "argument", "message"),
    [
        ("split_date", {"day": "$.d"}, None, "needs the argument 'field'"),
        ("split_date", {"field": "$.a"}, None, "at least one of day, month, year and time"),
        ("split_date", {"field": "$.a", "day": "$..d"}, "day", "must name one place"),
        ("split_date", {"field": "$.a", "day": "$.d", "remove": "yes"}, "remove", "true or false"),
        ("set", {"field": "$.a"}, None, "needs the argument 'value'"),
        ("set", {"field": "$.a[*]", "value": 1}, "field", "must name one place"),
        ("set", {"field": "$.a", "value": 1, "valeu": 2}, "valeu", "has no argument 'valeu'"),
        ("rename", {"field": "$.a", "to": "$.b"}, "to", "the new name"),
        ("move", {"from": "$.a", "to": "b"}, "to", "two JSONPaths or two form field names"),
        ("remove", {}, None, "needs the argument 'field' or 'fields'"),
        ("remove", {"fields": "$.a"}, "fields", "must be a list"),
        ("map", {"fields": {"$.a": "b"}}, "fields", "must be a JSONPath"),
        ("map", {"fields": {"a": "$.b"}}, "fields", "must be a JSONPath for to: json"),
        ("map", {"fields": {"$.a": "$.b"}, "to": "xml"}, "to", "json or form"),
        ("set", {"field": "$[", "value": 1}, "field", "invalid JSONPath"),
    ],
)
def test_builtin_argument_errors(
    name: str, args: dict[str, Any], argument: str | None, message: str
) -> None:
    with pytest.raises(ArgumentError) as caught:
        compile_builtin(name, args)
    assert caught.value.argument == argument
    assert message in caught.value.message


def test_split_date_rejects_non_iso_value() -> None:
    step = compile_builtin("split_date", {"field": "$.at", "day": "$.d"})
    with pytest.raises(InvalidValueError, match=r"field \$\.at is not an ISO 8601 date"):
        step(json_message({"at": "31/12/2030"}))


def test_split_date_required_field_missing() -> None:
    step = compile_builtin("split_date", {"field": "$.at", "day": "$.d", "required": True})
    with pytest.raises(MissingFieldError, match="required field"):
        step(json_message({}))


def test_json_step_on_form_body_is_rejected() -> None:
    step = compile_builtin("set", {"field": "$.a", "value": 1})
    with pytest.raises(InvalidBodyError, match="needs a json body, but the body is form"):
        step(form_message([]))


def test_form_set_rejects_object_value() -> None:
    with pytest.raises(InvalidValueError, match="takes a string or number"):
        compile_builtin("set", {"field": "a", "value": {"x": 1}})
