"""JSONPath selection with RFC 9535 semantics, parsed by jsonpath-ng.

jsonpath-ng parses the expression; evaluation is done here because jsonpath-ng differs from
RFC 9535 where it matters for rewriting: its ``[*]`` on an object treats the object as a one-item
list, where RFC 9535 selects the object's member values. Supported segments are the ones a
field rule needs: member names (``.a``, ``['a', 'b']``), indexes (negative ones too), slices,
wildcards and the descendant segment ``..``. Filters and functions are rejected at parse time.

``locate`` returns the places that hold the selected values, as (container, key) pairs, so that a
caller can replace each value in place. The root itself is never a place.

One deliberate difference from RFC 9535: a member name also selects a member whose name differs
only in case, because Go's encoding/json and ASP.NET Core bind ``"NUMBER"`` to a field named
``number``. A rule that skipped it would let the backend read the value in plaintext.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonpath_ng import jsonpath as ast
from jsonpath_ng.parser import parse as parse_jsonpath_ng


class JsonPathSyntaxError(ValueError):
    """The expression is not valid JSONPath, or uses a feature that field rules do not support."""


@dataclass(frozen=True, slots=True)
class Names:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Indexes:
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Slice:
    start: int | None
    end: int | None
    step: int | None


@dataclass(frozen=True, slots=True)
class Wildcard:
    pass


type Selector = Names | Indexes | Slice | Wildcard


@dataclass(frozen=True, slots=True)
class Segment:
    selector: Selector
    descendant: bool
    """True for ``..``: apply the selector to the node and to every node below it."""


type Place = tuple[dict[str, Any] | list[Any], str | int]


@dataclass(frozen=True, slots=True)
class JsonPath:
    expression: str
    segments: tuple[Segment, ...]

    def locate(self, document: Any) -> list[Place]:
        """Return the (container, key) places of the selected nodes, in document order.

        A place appears once even when several selectors reach it.
        """
        nodes: list[tuple[Place | None, Any]] = [(None, document)]
        for segment in self.segments:
            next_nodes: list[tuple[Place | None, Any]] = []
            for _, value in nodes:
                targets = _descendants_and_self(value) if segment.descendant else iter((value,))
                for target in targets:
                    next_nodes.extend(_select(segment.selector, target))
            nodes = next_nodes

        places: list[Place] = []
        seen: set[tuple[int, str | int]] = set()
        for place, _ in nodes:
            if place is None:
                continue
            identity = (id(place[0]), place[1])
            if identity not in seen:
                seen.add(identity)
                places.append(place)
        return places


def parse_json_path(expression: str) -> JsonPath:
    """Parse an expression such as ``$.card.number`` or ``$..cvc``."""
    if not expression.startswith("$"):
        raise JsonPathSyntaxError("a JSONPath expression starts with '$'")
    if "[?" in expression or "(" in expression:
        raise JsonPathSyntaxError(
            "filter and function expressions are not supported; select by member name, "
            "index, slice, [*] or .."
        )
    try:
        tree = parse_jsonpath_ng(expression)
    except Exception as exc:  # jsonpath-ng raises bare Exception subclasses of several kinds
        unclosed = expression.count("[") != expression.count("]")
        reason = "an unclosed '['" if unclosed else "a syntax error"
        raise JsonPathSyntaxError(f"invalid JSONPath: {reason}") from exc

    segments = tuple(_segments_of(tree))
    if not segments:
        raise JsonPathSyntaxError("'$' alone selects the whole body; select a field below it")
    return JsonPath(expression, segments)


def _segments_of(node: Any) -> Iterator[Segment]:
    if isinstance(node, ast.Root):
        return
    if isinstance(node, ast.Child):
        yield from _segments_of(node.left)
        yield Segment(_selector_of(node.right), descendant=False)
        return
    if isinstance(node, ast.Descendants):
        yield from _segments_of(node.left)
        yield Segment(_selector_of(node.right), descendant=True)
        return
    raise JsonPathSyntaxError(f"unsupported JSONPath element {type(node).__name__}")


def _selector_of(node: Any) -> Selector:
    if isinstance(node, ast.Fields):
        names = tuple(str(name) for name in node.fields)
        if names == ("*",):
            return Wildcard()
        return Names(names)
    if isinstance(node, ast.Wildcard):
        return Wildcard()
    if isinstance(node, ast.Index):
        return Indexes(tuple(int(index) for index in node.indices))
    if isinstance(node, ast.Slice):
        return Slice(node.start, node.end, node.step)
    raise JsonPathSyntaxError(
        f"unsupported JSONPath element {type(node).__name__}; "
        "use member names, indexes, slices, '*' and '..'"
    )


def _select(selector: Selector, value: Any) -> Iterator[tuple[Place, Any]]:
    match selector:
        case Names(names):
            if isinstance(value, dict):
                # A freshly parsed object knows its folded keys; any other object is searched.
                folded_keys: dict[str, str] | None = getattr(value, "folded", None)
                if folded_keys is not None and len(folded_keys) != len(value):
                    folded_keys = None
                for name in names:
                    if name in value:
                        yield (value, name), value[name]
                    folded = name.casefold()
                    if folded_keys is not None:
                        key = folded_keys.get(folded)
                        if key is not None and key != name and key in value:
                            yield (value, key), value[key]
                        continue
                    for key, member in value.items():
                        if key != name and key.casefold() == folded:
                            yield (value, key), member
        case Indexes(indexes):
            if isinstance(value, list):
                for index in indexes:
                    position = index + len(value) if index < 0 else index
                    if 0 <= position < len(value):
                        yield (value, position), value[position]
        case Slice(start, end, step):
            if isinstance(value, list):
                for position in range(len(value))[slice(start, end, step)]:
                    yield (value, position), value[position]
        case Wildcard():
            if isinstance(value, dict):
                for name, member in value.items():
                    yield (value, name), member
            elif isinstance(value, list):
                for position, item in enumerate(value):
                    yield (value, position), item


def _descendants_and_self(value: Any) -> Iterator[Any]:
    """Yield the node and every node below it, parents before children (RFC 9535, 2.5.2.2)."""
    stack = [value]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, dict):
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
