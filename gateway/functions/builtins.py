"""Built-in steps that need no code: ``split_date``, ``set``, ``rename``, ``move``, ``remove``
and ``map``.

They run in the gateway process on the same message dictionary that operator functions get
(``gateway.functions.message``). A field is a JSONPath such as ``$.card.expiry`` in a JSON body
or a field name such as ``card[exp]`` in a form body. Fields that a step writes must name one
place (member names and indexes only), because a write through a wildcard has no single target.

``compile_builtin`` checks a step's arguments once, when the configuration is loaded, and
returns the step ready to run; a bad argument raises ``ArgumentError`` naming it.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.engine.jsonpath import (
    Indexes,
    JsonPath,
    JsonPathSyntaxError,
    Names,
    parse_json_path,
)
from gateway.errors import InvalidBodyError, InvalidValueError, MissingFieldError

type Message = dict[str, Any]
type BuiltinStep = Callable[[Message], Message]

BUILTIN_NAMES = ("split_date", "set", "rename", "move", "remove", "map")


class ArgumentError(ValueError):
    """A built-in step's argument is missing or invalid."""

    def __init__(self, argument: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.message = message
        self.hint = hint


def compile_builtin(name: str, args: Mapping[str, Any]) -> BuiltinStep:
    """Return the built-in step ``name`` with its arguments checked; raise ``ArgumentError``."""
    compilers: dict[str, Callable[[_Args], BuiltinStep]] = {
        "split_date": _split_date,
        "set": _set,
        "rename": _rename,
        "move": _move,
        "remove": _remove,
        "map": _map,
    }
    arguments = _Args(name, dict(args))
    step = compilers[name](arguments)
    arguments.reject_unused()
    return step


# Arguments


class _Args:
    def __init__(self, step: str, values: dict[str, Any]) -> None:
        self.step = step
        self.values = values
        self.used: set[str] = set()

    def reject_unused(self) -> None:
        for key in self.values:
            if key not in self.used:
                allowed = ", ".join(sorted(self.used))
                raise ArgumentError(
                    key, f"{self.step} has no argument {key!r}", f"its arguments are {allowed}"
                )

    def raw(self, key: str, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.values or self.values[key] is None:
            if required:
                raise ArgumentError(None, f"{self.step} needs the argument {key!r}")
            return None
        return self.values[key]

    def field(self, key: str, *, required: bool = False, target: bool = False) -> _Field | None:
        text = self.raw(key, required=required)
        if text is None:
            return None
        if not isinstance(text, str) or not text.strip():
            raise ArgumentError(
                key, f"{self.step} argument {key!r} must be a field name or JSONPath"
            )
        try:
            return _Field.parse(text, single=target)
        except JsonPathSyntaxError as exc:
            raise ArgumentError(key, f"{self.step} argument {key!r}: {exc}") from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ArgumentError(key, f"{self.step} argument {key!r} must be true or false")
        return value


@dataclass(frozen=True, slots=True)
class _Field:
    """A JSONPath into a JSON body, or a field name of a form body."""

    text: str
    path: JsonPath | None

    @classmethod
    def parse(cls, text: str, *, single: bool) -> _Field:
        if not text.startswith("$"):
            return cls(text, None)
        path = parse_json_path(text)
        if single and not _is_single(path):
            raise JsonPathSyntaxError(
                "a field that is written must name one place: use member names and indexes, "
                "without '*', slices or '..'"
            )
        return cls(text, path)

    def require(self, message: Message, step: str) -> None:
        expected = "json" if self.path is not None else "form"
        if message.get("body_type") != expected:
            raise InvalidBodyError(
                f"step {step} reads {self.text}, which needs a {expected} body, but the body is "
                f"{message.get('body_type')}"
            )

    def read(self, message: Message) -> list[Any]:
        if self.path is not None:
            return [container[key] for container, key in self.path.locate(message["body"])]  # type: ignore[index]
        folded = self.text.casefold()
        return [value for name, value in message["body"] if name.casefold() == folded]

    def write(self, message: Message, value: Any) -> None:
        if self.path is not None:
            message["body"] = _json_write(message["body"], self.path, value)
            return
        pairs = message["body"]
        folded = self.text.casefold()
        for pair in pairs:
            if pair[0].casefold() == folded:
                pair[1] = _form_value(value, self.text)
                return
        pairs.append([self.text, _form_value(value, self.text)])

    def delete(self, message: Message) -> None:
        if self.path is not None:
            places = self.path.locate(message["body"])
            # Indexes from the back, so that earlier deletions do not move later places.
            for container, key in sorted(places, key=_index_or_minus_one, reverse=True):
                del container[key]  # type: ignore[arg-type]
            return
        folded = self.text.casefold()
        message["body"] = [pair for pair in message["body"] if pair[0].casefold() != folded]


def _index_or_minus_one(place: tuple[Any, str | int]) -> int:
    return place[1] if isinstance(place[1], int) else -1


def _is_single(path: JsonPath) -> bool:
    for segment in path.segments:
        if segment.descendant:
            return False
        selector = segment.selector
        if isinstance(selector, Names) and len(selector.names) == 1:
            continue
        if isinstance(selector, Indexes) and len(selector.indexes) == 1:
            continue
        return False
    return True


def _json_write(document: Any, path: JsonPath, value: Any) -> Any:
    """Set the place that a single-place path names, creating missing objects on the way."""
    if document is None:
        document = {}
    node = document
    for position, segment in enumerate(path.segments):
        last = position == len(path.segments) - 1
        selector = segment.selector
        if isinstance(selector, Names):
            if not isinstance(node, dict):
                raise InvalidBodyError(
                    f"{path.expression} cannot be written: a value on its path is not an object"
                )
            name = _existing_key(node, selector.names[0])
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
        else:
            assert isinstance(selector, Indexes)
            index = selector.indexes[0]
            if not isinstance(node, list) or not -len(node) <= index < len(node):
                raise InvalidBodyError(f"{path.expression} names an array item that is absent")
            if last:
                node[index] = value
            else:
                node = node[index]
    return document


def _existing_key(node: dict[str, Any], name: str) -> str:
    # A member that differs only in case is the same field to Go and ASP.NET Core backends.
    folded = name.casefold()
    return next((key for key in node if key.casefold() == folded), name)


def _form_value(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list) or value is None:
        raise InvalidValueError(f"form field {name} takes a string or number")
    return str(value)


def _single(values: list[Any], field: _Field, step: str, required: bool) -> Any:
    if not values:
        if required:
            raise MissingFieldError(f"step {step}: required field {field.text} is missing")
        return None
    if len(values) > 1:
        raise InvalidBodyError(f"step {step}: field {field.text} is present more than once")
    return values[0]


# Steps


def _split_date(args: _Args) -> BuiltinStep:
    source = args.field("field", required=True)
    assert source is not None
    outputs = {key: args.field(key, target=True) for key in ("day", "month", "year", "time")}
    if not any(outputs.values()):
        raise ArgumentError(None, "split_date needs at least one of day, month, year and time")
    remove = args.boolean("remove", False)
    numbers = args.boolean("numbers", False)
    required = args.boolean("required", False)

    def run(message: Message) -> Message:
        source.require(message, "split_date")
        value = _single(source.read(message), source, "split_date", required)
        if value is None:
            return message
        moment, has_time = _parse_moment(value, source.text)
        if remove:
            source.delete(message)
        texts = {
            "day": (moment.day, f"{moment.day:02d}"),
            "month": (moment.month, f"{moment.month:02d}"),
            "year": (moment.year, f"{moment.year:04d}"),
        }
        for key, target in outputs.items():
            if target is None:
                continue
            if key == "time":
                if has_time:
                    target.write(message, moment.strftime("%H:%M:%S"))
                continue
            number, text = texts[key]
            target.write(message, number if numbers else text)
        return message

    return run


def _parse_moment(value: Any, field: str) -> tuple[datetime.datetime, bool]:
    problem = (
        f"step split_date: field {field} is not an ISO 8601 date or date and time, "
        "such as 2030-12-31 or 2030-12-31T23:59:00Z"
    )
    if not isinstance(value, str):
        raise InvalidValueError(problem)
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.datetime.combine(
                datetime.date.fromisoformat(text), datetime.time()
            ), False
        return datetime.datetime.fromisoformat(text), True
    except ValueError:
        raise InvalidValueError(problem) from None


def _set(args: _Args) -> BuiltinStep:
    target = args.field("field", required=True, target=True)
    assert target is not None
    if "value" not in args.values:
        raise ArgumentError(None, "set needs the argument 'value'")
    args.used.add("value")
    value = args.values["value"]
    if target.path is None:
        _form_value(value, target.text)

    def run(message: Message) -> Message:
        target.require(message, "set")
        target.write(message, copy.deepcopy(value))
        return message

    return run


def _rename(args: _Args) -> BuiltinStep:
    source = args.field("field", required=True, target=True)
    assert source is not None
    new_name = args.raw("to", required=True)
    if not isinstance(new_name, str) or not new_name or new_name.startswith("$"):
        raise ArgumentError("to", "rename argument 'to' is the new name, such as pan, not a path")

    def run(message: Message) -> Message:
        source.require(message, "rename")
        if source.path is None:
            folded = source.text.casefold()
            for pair in message["body"]:
                if pair[0].casefold() == folded:
                    pair[0] = new_name
            return message
        for container, key in source.path.locate(message["body"]):
            if isinstance(container, dict):
                renamed = {
                    (new_name if name == key else name): item for name, item in container.items()
                }
                container.clear()
                container.update(renamed)
        return message

    return run


def _move(args: _Args) -> BuiltinStep:
    source = args.field("from", required=True, target=True)
    target = args.field("to", required=True, target=True)
    assert source is not None
    assert target is not None
    if (source.path is None) != (target.path is None):
        raise ArgumentError("to", "move needs two JSONPaths or two form field names")

    def run(message: Message) -> Message:
        source.require(message, "move")
        value = _single(source.read(message), source, "move", False)
        if value is None:
            return message
        source.delete(message)
        target.write(message, value)
        return message

    return run


def _remove(args: _Args) -> BuiltinStep:
    fields: list[_Field] = []
    single = args.field("field")
    if single is not None:
        fields.append(single)
    many = args.raw("fields")
    if many is not None:
        if not isinstance(many, list) or not all(isinstance(item, str) for item in many):
            raise ArgumentError("fields", "remove argument 'fields' must be a list of fields")
        try:
            fields.extend(_Field.parse(item, single=False) for item in many)
        except JsonPathSyntaxError as exc:
            raise ArgumentError("fields", f"remove argument 'fields': {exc}") from None
    if not fields:
        raise ArgumentError(None, "remove needs the argument 'field' or 'fields'")

    def run(message: Message) -> Message:
        for field in fields:
            field.require(message, "remove")
            field.delete(message)
        return message

    return run


def _map(args: _Args) -> BuiltinStep:
    mapping = args.raw("fields", required=True)
    output = args.raw("to") or "json"
    if output not in ("json", "form"):
        raise ArgumentError("to", "map argument 'to' must be json or form")
    if not isinstance(mapping, dict) or not mapping:
        raise ArgumentError("fields", "map argument 'fields' maps new fields to JSONPaths")
    pairs: list[tuple[_Field, _Field]] = []
    for target_text, source_text in mapping.items():
        if not isinstance(source_text, str) or not source_text.startswith("$"):
            raise ArgumentError("fields", f"map source of {target_text} must be a JSONPath")
        try:
            source = _Field.parse(source_text, single=False)
            target = _Field.parse(str(target_text), single=True)
        except JsonPathSyntaxError as exc:
            raise ArgumentError("fields", f"map field {target_text}: {exc}") from None
        if (target.path is None) != (output == "form"):
            raise ArgumentError(
                "fields",
                f"map target {target_text} must be a JSONPath for to: json and a field name "
                "for to: form",
            )
        pairs.append((target, source))

    def run(message: Message) -> Message:
        pairs[0][1].require(message, "map")
        old = {"body_type": "json", "body": message["body"]}
        new: Message = {"body_type": output, "body": {} if output == "json" else []}
        for target, source in pairs:
            values = source.read(old)
            if not values:
                continue
            value = (
                values[0]
                if len(values) == 1 or source.path is None or _is_single(source.path)
                else values
            )
            target.write(new, copy.deepcopy(value))
        message["body_type"], message["body"] = new["body_type"], new["body"]
        return message

    return run


__all__ = ["BUILTIN_NAMES", "ArgumentError", "BuiltinStep", "compile_builtin"]
