"""Apply a phase's field operations to a message, in two steps around one vault call.

``prepare_rewrite`` decodes and parses what the operations need and collects the values to
tokenize and the tokens to detokenize. The caller sends them to the vault (one batch each) and
passes the results to ``PendingRewrite.apply``, which writes them into the message and encodes
it again. Neither step does I/O, so the reverse proxy, the forward proxy and the tests drive
them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.bodies import (
    FormData,
    MediaType,
    check_charset,
    dump_json,
    json_number,
    parse_form,
    parse_form_body,
    parse_json,
    parse_media_type,
)
from gateway.engine.encoding import decode_body, encode_body, parse_codings
from gateway.engine.multipart import (
    MULTIPART_MEDIA_TYPE,
    FileValue,
    boundary_of,
    file_envelope,
    parse_multipart,
)
from gateway.engine.routing import Action, Operation
from gateway.engine.selectors import (
    FormSelector,
    HeaderSelector,
    JsonSelector,
    MultipartSelector,
    QuerySelector,
)
from gateway.errors import (
    BodyTooLargeError,
    InvalidBodyError,
    InvalidTokenError,
    InvalidValueError,
    MissingFieldError,
    UnsupportedMediaError,
)
from gateway.tokens.vault import Revealed, TokenizeItem, ValueType


@dataclass(slots=True)
class MessageParts:
    """The parts of a request or response that field operations read and write."""

    headers: CIMultiDict[str]
    body: bytes
    query: str | None = None
    """The raw query string of a request without ``?``; None for a response."""


@dataclass(slots=True)
class RewriteCounts:
    tokenized: int = 0
    detokenized: int = 0


type Setter = Callable[[str, ValueType], None]


@dataclass(slots=True)
class PendingRewrite:
    """The fields found in a message, waiting for the vault's results."""

    parts: MessageParts
    tokenize_items: list[TokenizeItem] = field(default_factory=list)
    detokenize_tokens: list[str] = field(default_factory=list)
    _tokenize_setters: list[Setter] = field(default_factory=list)
    _detokenize_setters: list[Setter] = field(default_factory=list)
    _detokenize_selectors: list[str] = field(default_factory=list)
    _commit: list[Callable[[], None]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.tokenize_items and not self.detokenize_tokens

    @property
    def counts(self) -> RewriteCounts:
        return RewriteCounts(len(self.tokenize_items), len(self.detokenize_tokens))

    def apply(
        self,
        tokens: Sequence[str | InvalidValueError],
        revealed: Sequence[Revealed | InvalidTokenError],
    ) -> MessageParts:
        """Write the vault's results into the message and return the encoded parts.

        Raises the first per-field error, so that a message with one bad field is rejected whole.
        """
        if len(tokens) != len(self.tokenize_items) or len(revealed) != len(self.detokenize_tokens):
            raise ValueError("the vault returned a different number of results than asked")

        for token, set_token in zip(tokens, self._tokenize_setters, strict=True):
            if isinstance(token, InvalidValueError):
                raise token
            set_token(token, ValueType.STRING)
        for result, set_value, selector in zip(
            revealed, self._detokenize_setters, self._detokenize_selectors, strict=True
        ):
            if isinstance(result, InvalidTokenError):
                raise InvalidTokenError(
                    f"field {selector} does not hold a known token (unknown, expired, or not a "
                    "token)"
                ) from result
            set_value(result.value, result.value_type)

        for commit in self._commit:
            commit()
        return self.parts


def prepare_rewrite(
    operations: Sequence[Operation], parts: MessageParts, limits: Limits
) -> PendingRewrite:
    """Find every field that the operations select and collect the work for the vault.

    Raises ``MessageError`` subclasses for a message that cannot be processed: a missing
    required field (400), a malformed body (400), a wrong content type or encoding (415), a
    body over the limit after decompression (413), or too many fields (400).
    """
    parts = MessageParts(CIMultiDict(parts.headers), parts.body, parts.query)
    pending = PendingRewrite(parts)

    body_operations = [
        op
        for op in operations
        if isinstance(op.selector, JsonSelector | FormSelector | MultipartSelector)
    ]
    if body_operations:
        _collect_body_fields(body_operations, pending, limits)

    query_operations = [op for op in operations if isinstance(op.selector, QuerySelector)]
    if query_operations:
        _collect_query_fields(query_operations, pending)

    for operation in operations:
        if isinstance(operation.selector, HeaderSelector):
            _collect_header_fields(operation, operation.selector, pending)

    if len(pending.tokenize_items) + len(pending.detokenize_tokens) > limits.max_fields:
        raise InvalidBodyError(
            f"message has more than {limits.max_fields} fields to process (limits.max_fields)"
        )
    return pending


def _add(
    pending: PendingRewrite, operation: Operation, value: str, kind: ValueType, set_value: Setter
) -> None:
    if operation.action is Action.TOKENIZE:
        pending.tokenize_items.append(
            TokenizeItem(
                value=value,
                format=operation.format,
                value_type=kind,
                deterministic=operation.deterministic,
                ttl=operation.ttl,
                class_name=operation.class_name,
            )
        )
        pending._tokenize_setters.append(set_value)
    else:
        pending.detokenize_tokens.append(value)
        pending._detokenize_setters.append(set_value)
        pending._detokenize_selectors.append(str(operation.selector))


def _missing(operation: Operation) -> None:
    if operation.required:
        raise MissingFieldError(f"required field {operation.selector} is missing")


# Bodies


def _decoded_body(parts: MessageParts, limits: Limits) -> tuple[bytes, list[str]]:
    # Repeated Content-Encoding lines form one list (RFC 9110, 5.3).
    codings = parse_codings(", ".join(parts.headers.getall("Content-Encoding", [])))
    if len(parts.body) > limits.max_body_bytes:
        raise BodyTooLargeError(f"body is larger than {limits.max_body_bytes} bytes")
    if not parts.body:
        return b"", codings
    return decode_body(parts.body, codings, max_bytes=limits.max_body_bytes), codings


_EXPECTED_MEDIA = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "multipart": MULTIPART_MEDIA_TYPE,
}


def _require_media(media_type: MediaType | None, wanted: str) -> MediaType:
    accepted = media_type is not None and (
        media_type.is_json
        if wanted == "json"
        else media_type.is_form
        if wanted == "form"
        else media_type.type == MULTIPART_MEDIA_TYPE
    )
    if media_type is None or not accepted:
        expected = _EXPECTED_MEDIA[wanted]
        if media_type is None:
            raise UnsupportedMediaError(
                f"Content-Type header is missing; send Content-Type: {expected}"
            )
        raise UnsupportedMediaError(
            f"Content-Type {media_type.type} does not fit the route, which reads {expected} bodies"
        )
    check_charset(media_type)
    return media_type


def _collect_body_fields(
    operations: list[Operation], pending: PendingRewrite, limits: Limits
) -> None:
    parts = pending.parts
    body, codings = _decoded_body(parts, limits)
    if not body:
        for operation in operations:
            _missing(operation)
        return

    media_type = parse_media_type(parts.headers.get("Content-Type"))
    if isinstance(operations[0].selector, JsonSelector):
        _require_media(media_type, "json")
        encode = _collect_json_body(operations, body, pending, limits)
    elif isinstance(operations[0].selector, MultipartSelector):
        _require_media(media_type, "multipart")
        boundary = boundary_of(parts.headers.get("Content-Type"))
        encode = _collect_multipart_body(operations, body, boundary, pending)
    else:
        _require_media(media_type, "form")
        encode = _collect_form_body(operations, body, pending)

    def commit() -> None:
        parts.body = encode_body(encode(), codings)

    pending._commit.append(commit)


def _collect_json_body(
    operations: list[Operation], body: bytes, pending: PendingRewrite, limits: Limits
) -> Callable[[], bytes]:
    document = parse_json(body, max_depth=limits.max_json_depth)
    for operation in operations:
        assert isinstance(operation.selector, JsonSelector)
        _collect_json_fields(operation, operation.selector, document, pending)
    return lambda: dump_json(document)


def _collect_form_body(
    operations: list[Operation], body: bytes, pending: PendingRewrite
) -> Callable[[], bytes]:
    form = parse_form_body(body)
    for operation in operations:
        assert isinstance(operation.selector, FormSelector)
        _collect_form_fields(operation, operation.selector.name, form, pending)
    return lambda: form.encode().encode("ascii")


def _collect_multipart_body(
    operations: list[Operation], body: bytes, boundary: str, pending: PendingRewrite
) -> Callable[[], bytes]:
    form = parse_multipart(body, boundary)
    for operation in operations:
        assert isinstance(operation.selector, MultipartSelector)
        found = form.find(operation.selector.name)
        if not found:
            _missing(operation)
        for part in found:
            if part.filename is not None:
                value = file_envelope(FileValue(part.filename, part.content_type, part.data))
            else:
                value = part.text()

            def set_value(new: str, _: ValueType, part: Any = part) -> None:
                form.replace_with_text(part, new)

            _add(pending, operation, value, ValueType.STRING, set_value)
    return form.encode


def _collect_json_fields(
    operation: Operation, selector: JsonSelector, document: Any, pending: PendingRewrite
) -> None:
    places = selector.path.locate(document)
    found = False
    for container, key in places:
        value = container[key]  # type: ignore[index]
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, dict | list):
            kind = "an object" if isinstance(value, dict) else "an array"
            raise InvalidBodyError(
                f"field {selector} is {kind}; the route expects a string or number"
            )
        if isinstance(value, str):
            text, kind_of_value = value, ValueType.STRING
        else:
            text, kind_of_value = str(value), ValueType.NUMBER
        found = True

        def set_value(
            new: str, value_type: ValueType, container: Any = container, key: Any = key
        ) -> None:
            container[key] = json_number(new) if value_type is ValueType.NUMBER else new

        _add(pending, operation, text, kind_of_value, set_value)
    if not found:
        _missing(operation)


def _collect_form_fields(
    operation: Operation, name: str, form: FormData, pending: PendingRewrite
) -> None:
    fields = form.find(name)
    if not fields:
        _missing(operation)
    for form_field in fields:

        def set_value(new: str, _: ValueType, form_field: Any = form_field) -> None:
            form.set_value(form_field, new)

        _add(pending, operation, form_field.value, ValueType.STRING, set_value)


# Query strings and headers


def _is_control(character: str) -> bool:
    return (ord(character) < 0x20 and character != "\t") or ord(character) == 0x7F


def _collect_query_fields(operations: list[Operation], pending: PendingRewrite) -> None:
    parts = pending.parts
    form = parse_form(parts.query or "", what="query string")
    for operation in operations:
        assert isinstance(operation.selector, QuerySelector)
        _collect_form_fields(operation, operation.selector.name, form, pending)

    def commit() -> None:
        parts.query = form.encode()

    pending._commit.append(commit)


def _collect_header_fields(
    operation: Operation, selector: HeaderSelector, pending: PendingRewrite
) -> None:
    headers = pending.parts.headers
    # CGI-style servers (Rack, older WSGI) read X-Card_Number as X-Card-Number, so both count.
    fields = [
        (position, name, value)
        for position, (name, value) in enumerate(headers.items())
        if name.lower().replace("_", "-") == selector.name
    ]
    if not fields:
        _missing(operation)
        return

    replacements: dict[int, str] = {}

    def commit() -> None:
        rewritten = [
            (name, replacements.get(position, value))
            for position, (name, value) in enumerate(headers.items())
        ]
        headers.clear()
        headers.extend(rewritten)

    for position, _, value in fields:

        def set_value(new: str, _: ValueType, position: int = position) -> None:
            if any(_is_control(character) for character in new):
                raise InvalidValueError(
                    f"value for {selector} has a control character, which a header cannot carry"
                )
            replacements[position] = new

        _add(pending, operation, value, ValueType.STRING, set_value)
    pending._commit.append(commit)


__all__ = ["MessageParts", "PendingRewrite", "RewriteCounts", "prepare_rewrite"]
