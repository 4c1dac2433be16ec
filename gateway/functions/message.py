"""The message that function steps read and return, and its checks on the way back.

A function sees a request as a plain dictionary that survives a trip through JSON::

    {"method": "POST", "path": "/pay/stripe", "query": [["expand", "card"]],
     "headers": {"content-type": "application/json", ...},
     "body_type": "json", "body": {...}}

A response has ``status`` too, and its method and path are those of the request.
``body_type`` is ``json`` (any JSON value, numbers as ``Decimal``), ``form`` (a list of
``[name, value]`` pairs), ``multipart`` (a list of parts, each ``{"name", "value"}`` or
``{"name", "filename", "content_type", "data"}`` with the file's bytes in base64), ``none``
(no body) or ``raw`` (a body of another type, which functions cannot read and which is relayed
unchanged). Header names are lower case; repeated header lines arrive joined with ``, ``.

A function may return a message with another body type, method, path, query or headers. What
it returns is checked like any body the gateway relays: the body limits, the JSON depth and
strictness, and header and path syntax. Framing headers stay under the relay's control.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.bodies import (
    FORM_MEDIA_TYPE,
    check_charset,
    dump_json,
    parse_form,
    parse_form_body,
    parse_json,
    parse_media_type,
)
from gateway.engine.encoding import decode_body, parse_codings
from gateway.engine.headers import HOP_BY_HOP
from gateway.engine.multipart import (
    MULTIPART_MEDIA_TYPE,
    FileValue,
    boundary_of,
    file_part,
    new_form,
    parse_multipart,
    text_part,
)
from gateway.engine.paths import normalize_path
from gateway.engine.rewrite import MessageParts
from gateway.errors import BodyTooLargeError, InvalidBodyError, MessageError

BODY_TYPES = ("json", "form", "multipart", "none", "raw")
_MESSAGE_KEYS = frozenset({"method", "path", "query", "headers", "body_type", "body", "status"})
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Set by the relay from the body it sends; a function that changes them is rejected.
_FRAMING_HEADERS = HOP_BY_HOP | {"content-length", "content-encoding", "host"}
_JSON_MEDIA_TYPE = "application/json"


class InvalidReturnError(ValueError):
    """A function returned something that is not a valid message; the message names the problem."""


@dataclass(slots=True)
class HttpMessage:
    """A request or a response on its way through the steps of a phase."""

    parts: MessageParts
    method: str
    path: str
    """The path below the connection's mount, which is what goes upstream."""
    status: int | None = None
    """The response status, or None for a request."""


def to_function_message(message: HttpMessage, limits: Limits) -> dict[str, Any]:
    """Return the plain dictionary that a function step receives.

    Raises ``MessageError`` subclasses for a body that cannot be read, as field operations do.
    """
    parts = message.parts
    headers: dict[str, str] = {}
    for name, value in parts.headers.items():
        folded = name.lower()
        headers[folded] = f"{headers[folded]}, {value}" if folded in headers else value

    body_type, body = _read_body(parts, limits)
    result: dict[str, Any] = {
        "method": message.method,
        "path": message.path,
        "query": [
            [field.name, field.value]
            for field in parse_form(parts.query or "", what="query string").fields
        ],
        "headers": headers,
        "body_type": body_type,
        "body": body,
    }
    if message.status is not None:
        result["status"] = message.status
    return result


def _read_body(parts: MessageParts, limits: Limits) -> tuple[str, Any]:
    if len(parts.body) > limits.max_body_bytes:
        raise BodyTooLargeError(f"body is larger than {limits.max_body_bytes} bytes")
    codings = parse_codings(", ".join(parts.headers.getall("Content-Encoding", [])))
    body = decode_body(parts.body, codings, max_bytes=limits.max_body_bytes) if parts.body else b""
    if not body:
        return "none", None

    media_type = parse_media_type(parts.headers.get("Content-Type"))
    if media_type is None:
        return "raw", None
    if media_type.is_json:
        check_charset(media_type)
        return "json", parse_json(body, max_depth=limits.max_json_depth)
    if media_type.is_form:
        check_charset(media_type)
        return "form", [[field.name, field.value] for field in parse_form_body(body).fields]
    if media_type.type == MULTIPART_MEDIA_TYPE:
        form = parse_multipart(body, boundary_of(parts.headers.get("Content-Type")))
        return "multipart", [_part_to_plain(part) for part in form.parts]
    return "raw", None


def _part_to_plain(part: Any) -> dict[str, Any]:
    if part.filename is None and part.content_type is None:
        return {"name": part.name, "value": part.text()}
    return {
        "name": part.name,
        "filename": part.filename,
        "content_type": part.content_type,
        "data": base64.b64encode(part.data).decode("ascii"),
    }


def from_function_message(result: Any, original: HttpMessage, limits: Limits) -> HttpMessage:
    """Check what a function returned and build the message that goes on.

    Raises ``InvalidReturnError`` naming the first problem. Limits that any body has
    (``max_body_bytes``, ``max_json_depth``) are checked on the encoded result.
    """
    if not isinstance(result, dict):
        raise InvalidReturnError(f"returned {type(result).__name__}, not a message dictionary")
    unknown = sorted(set(result) - _MESSAGE_KEYS)
    if unknown:
        raise InvalidReturnError(f"returned unknown message key {unknown[0]!r}")

    method = _method(result.get("method", original.method))
    path = _path(result.get("path", original.path))
    status = _status(result.get("status", original.status), original.status)
    query = _query(result.get("query", []))
    headers = _headers(result.get("headers", {}), original.parts.headers)
    body = _body(result.get("body_type"), result.get("body"), original, headers, limits)
    return HttpMessage(MessageParts(headers, body, query), method, path, status)


def _method(value: Any) -> str:
    if not isinstance(value, str) or not _METHOD.match(value):
        raise InvalidReturnError("method must be an upper-case HTTP method such as POST")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidReturnError("path must be a string starting with '/'")
    if any(character in value for character in "?# ") or _CONTROL.search(value):
        raise InvalidReturnError(
            "path must not contain '?', '#', spaces or control characters; put the query in query"
        )
    return normalize_path(value)


def _status(value: Any, original: int | None) -> int | None:
    if original is None:
        if value is not None:
            raise InvalidReturnError("a request has no status")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise InvalidReturnError("status must be a whole number from 200 to 599")
    return value


def _pairs(value: Any, what: str) -> list[tuple[str, str]]:
    items = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise InvalidReturnError(f"{what} must be a list of [name, value] pairs or a dictionary")
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise InvalidReturnError(f"{what} must be a list of [name, value] pairs")
        name, field_value = item
        if not isinstance(name, str) or isinstance(field_value, bool | dict | list):
            raise InvalidReturnError(f"{what} names must be strings and values strings or numbers")
        if field_value is None:
            continue
        pairs.append((name, str(field_value)))
    return pairs


def _encode_pairs(pairs: list[tuple[str, str]]) -> str:
    return "&".join(
        f"{quote_plus(name, safe='[]')}={quote_plus(value, safe='')}" for name, value in pairs
    )


def _query(value: Any) -> str | None:
    return _encode_pairs(_pairs(value, "query")) or None


def _headers(value: Any, original: CIMultiDict[str]) -> CIMultiDict[str]:
    """Apply the function's header dictionary to the original headers as a set of changes.

    Headers the function left as they were keep their original lines, so repeated lines
    survive. A changed or new header gets one line, and a header missing from the result is
    removed.
    """
    if not isinstance(value, dict):
        raise InvalidReturnError("headers must be a dictionary of names to strings")
    before: dict[str, str] = {}
    for name, text in original.items():
        folded = name.lower()
        before[folded] = f"{before[folded]}, {text}" if folded in before else text

    after: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidReturnError(f"header name {str(name)[:40]!r} is not valid")
        if not isinstance(text, str) or _CONTROL.search(text):
            raise InvalidReturnError(f"header {name} must be a string without control characters")
        after[name.lower()] = text

    headers: CIMultiDict[str] = CIMultiDict()
    for name, text in original.items():
        folded = name.lower()
        if folded in after and after[folded] == before[folded]:
            headers.add(name, text)
    for folded, text in after.items():
        if before.get(folded) == text:
            continue
        if folded in _FRAMING_HEADERS:
            raise InvalidReturnError(f"header {folded} is set by the relay and cannot be changed")
        headers[folded] = text
    return headers


def _body(
    body_type: Any, body: Any, original: HttpMessage, headers: CIMultiDict[str], limits: Limits
) -> bytes:
    if body_type not in BODY_TYPES:
        raise InvalidReturnError("body_type must be one of " + ", ".join(BODY_TYPES))
    if body_type == "raw":
        if body is not None:
            raise InvalidReturnError("a raw body cannot be changed; set body_type to change it")
        original_type = parse_media_type(original.parts.headers.get("Content-Type"))
        if original_type is not None and (original_type.is_json or original_type.is_form):
            raise InvalidReturnError("body_type raw is only for bodies functions cannot read")
        return original.parts.body

    # The body is sent decoded from here on.
    headers.popall("Content-Encoding", None)
    if body_type == "none":
        if body is not None:
            raise InvalidReturnError("body_type none needs body None")
        headers.popall("Content-Type", None)
        return b""
    if body_type == "json":
        encoded = _json_body(body, limits)
        _set_content_type(headers, _JSON_MEDIA_TYPE, lambda media: media.is_json)
    elif body_type == "form":
        encoded = _encode_pairs(_pairs(body, "form body")).encode("ascii")
        _set_content_type(headers, FORM_MEDIA_TYPE, lambda media: media.is_form)
    else:
        form = _multipart_body(body)
        encoded = form.encode()
        headers["Content-Type"] = form.content_type
    if len(encoded) > limits.max_body_bytes:
        raise InvalidReturnError(
            f"returned a body of {len(encoded)} bytes, more than limits.max_body_bytes "
            f"({limits.max_body_bytes})"
        )
    return encoded


def _json_body(body: Any, limits: Limits) -> bytes:
    try:
        encoded = dump_json(body)
    except (TypeError, ValueError) as exc:
        raise InvalidReturnError(f"body is not JSON: {type(exc).__name__}") from None
    except InvalidBodyError as exc:
        raise InvalidReturnError(exc.message) from None
    # The same strict parse as a client's body: depth, duplicate keys, NaN.
    try:
        parse_json(encoded, max_depth=limits.max_json_depth)
    except MessageError as exc:
        raise InvalidReturnError(f"body fails the JSON checks: {exc.message}") from None
    return encoded


def _set_content_type(headers: CIMultiDict[str], default: str, fits: Any) -> None:
    media = parse_media_type(headers.get("Content-Type"))
    if media is None or not fits(media):
        headers["Content-Type"] = default


def _multipart_body(body: Any) -> Any:
    if not isinstance(body, list):
        raise InvalidReturnError("a multipart body must be a list of parts")
    form = new_form()
    for part in body:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise InvalidReturnError("each multipart part must be a dictionary with a name")
        name = part["name"]
        if "data" in part:
            form.parts.append(file_part(name, _file_of(part)))
        elif isinstance(part.get("value"), str):
            form.parts.append(text_part(name, part["value"]))
        else:
            raise InvalidReturnError(f"multipart part {name} needs a string value or file data")
    return form


def _file_of(part: dict[str, Any]) -> FileValue:
    filename, content_type = part.get("filename"), part.get("content_type")
    if not isinstance(filename, str | None) or not isinstance(content_type, str | None):
        raise InvalidReturnError("filename and content_type of a part must be strings")
    data = part["data"]
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except (ValueError, binascii.Error):
        raw = None
    if raw is None:
        raise InvalidReturnError(f"data of multipart part {part['name']} is not base64 text")
    return FileValue(filename, content_type, raw)


__all__ = [
    "BODY_TYPES",
    "HttpMessage",
    "InvalidReturnError",
    "from_function_message",
    "to_function_message",
]
