"""Body codecs for routed messages: content types, strict JSON, and URL-encoded forms.

Parsing is strict because the gateway and the upstream must read a body the same way. A body
that one parser could read differently from another (duplicate JSON keys, NaN, a raw ``;`` that
Rack 2 splits form fields on) is rejected with ``InvalidBodyError`` instead of being relayed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import simplejson

from gateway.errors import InvalidBodyError, UnsupportedMediaError

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class MediaType:
    type: str
    """``type/subtype`` in lower case, without parameters."""
    charset: str | None

    @property
    def is_json(self) -> bool:
        return self.type == "application/json" or (
            self.type.startswith("application/") and self.type.endswith("+json")
        )

    @property
    def is_form(self) -> bool:
        return self.type == FORM_MEDIA_TYPE


def parse_media_type(content_type: str | None) -> MediaType | None:
    """Parse a Content-Type header value; None when the header is absent or empty."""
    if not content_type or not content_type.strip():
        return None
    main, _, parameters = content_type.partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return MediaType(main.strip().lower(), charset)


def check_charset(media_type: MediaType) -> None:
    if media_type.charset not in (None, "utf-8", "utf8"):
        raise UnsupportedMediaError(
            f"charset {media_type.charset} is not supported for {media_type.type}; send UTF-8"
        )


# JSON


class JsonObject(dict[str, Any]):
    """A parsed JSON object that also maps each key's case-folded form to the key itself."""

    __slots__ = ("folded",)
    folded: dict[str, str]


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> JsonObject:
    # Keys that differ only in case count as duplicates, because Go's encoding/json and
    # ASP.NET Core bind them to one field: the backend could read the copy a rule skipped.
    document = JsonObject(pairs)
    document.folded = {key.casefold(): key for key in document}
    if len(document.folded) != len(pairs):
        raise InvalidBodyError(
            "JSON body has a duplicate object key (keys that differ only in case count too)"
        )
    return document


def parse_json(body: bytes, *, max_depth: int) -> Any:
    """Parse a UTF-8 JSON body; floats become ``Decimal`` so that they keep their digits.

    Raises ``InvalidBodyError`` for malformed JSON, invalid UTF-8, a byte order mark, duplicate
    keys, NaN or Infinity, and nesting deeper than ``max_depth``.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        raise InvalidBodyError("JSON body starts with a byte order mark; send it without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBodyError(f"JSON body is not valid UTF-8 at byte {exc.start}") from exc
    try:
        document = simplejson.loads(
            text, use_decimal=True, object_pairs_hook=_reject_duplicate_keys, allow_nan=False
        )
    except simplejson.JSONDecodeError as exc:
        raise InvalidBodyError(f"malformed JSON body: {exc.msg} at offset {exc.pos}") from exc
    except RecursionError as exc:
        raise InvalidBodyError(f"JSON body is nested deeper than {max_depth} levels") from exc
    except (ValueError, ArithmeticError) as exc:
        # An integer longer than sys.get_int_max_str_digits(), or an exponent out of the
        # range of Decimal (decimal.InvalidOperation).
        raise InvalidBodyError("JSON body has a number out of range") from exc

    if _depth_exceeds(document, max_depth):
        raise InvalidBodyError(f"JSON body is nested deeper than {max_depth} levels")
    return document


def _depth_exceeds(document: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def dump_json(document: Any) -> bytes:
    """Serialize compactly as UTF-8, keeping every number's digits."""
    try:
        text = simplejson.dumps(
            document, ensure_ascii=False, separators=(",", ":"), use_decimal=True
        )
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidBodyError("JSON body has a string with an unpaired surrogate escape") from exc


def json_number(text: str) -> int | Decimal:
    """Return a JSON number for its source text, as ``parse_json`` would have."""
    if any(character in text for character in ".eE"):
        return Decimal(text)
    return int(text)


# URL-encoded forms and query strings


@dataclass(slots=True)
class FormField:
    raw: str
    """The pair as it came; relayed unchanged unless the value is rewritten."""
    name: str
    value: str


@dataclass(slots=True)
class FormData:
    """An ``application/x-www-form-urlencoded`` body or query string, field order kept."""

    fields: list[FormField]

    def find(self, name: str) -> list[FormField]:
        """Return every field that a backend could read as ``name``.

        That is the name in any letter case (ASP.NET Core binds query names so), and the name
        with an array suffix such as ``card[number][]`` or ``card[number][0]``, which Rack, PHP
        and Node's qs read as the same field.
        """
        folded = name.casefold()
        return [
            field
            for field in self.fields
            if field.name.casefold() == folded or field.name.casefold().startswith(folded + "[")
        ]

    def set_value(self, field: FormField, value: str) -> None:
        raw_name = field.raw.split("=", 1)[0]
        field.raw = f"{raw_name}={quote_plus(value, safe='')}"
        field.value = value

    def encode(self) -> str:
        return "&".join(field.raw for field in self.fields)


def parse_form(text: str, *, what: str = "form body") -> FormData:
    """Parse URL-encoded pairs strictly; ``what`` names the part in error messages.

    Raises ``InvalidBodyError`` for an invalid percent escape, escapes that decode to invalid
    UTF-8, and a raw ``;``, which some servers treat as a field separator.
    """
    if ";" in text:
        raise InvalidBodyError(f"{what} contains a raw ';'; percent-encode it as %3B")
    if _BAD_ESCAPE.search(text):
        raise InvalidBodyError(f"{what} contains an invalid percent escape")

    fields: list[FormField] = []
    if not text:
        return FormData(fields)
    for raw in text.split("&"):
        raw_name, _, raw_value = raw.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidBodyError(f"{what} has an escape that is not valid UTF-8") from exc
        fields.append(FormField(raw, name, value))
    return FormData(fields)


def parse_form_body(body: bytes) -> FormData:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidBodyError(
            f"form body has a raw non-ASCII byte at offset {exc.start}; percent-encode it"
        ) from exc
    return parse_form(text)
