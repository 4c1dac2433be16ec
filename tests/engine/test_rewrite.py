"""The rewrite steps without any I/O: the vault's answers are given by hand."""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import pytest
import simplejson
from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.jsonpath import parse_json_path
from gateway.engine.rewrite import MessageParts, PendingRewrite, prepare_rewrite
from gateway.engine.routing import Action, Operation
from gateway.engine.selectors import FormSelector, HeaderSelector, JsonSelector, QuerySelector
from gateway.errors import (
    BodyTooLargeError,
    InvalidBodyError,
    InvalidTokenError,
    InvalidValueError,
    MissingFieldError,
    UnsupportedMediaError,
)
from gateway.tokens.vault import Revealed, ValueType

LIMITS = Limits(max_body_bytes=10_000, max_json_depth=16, max_fields=10)
JSON = CIMultiDict({"Content-Type": "application/json"})
FORM = CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})


def tokenize_json(path: str, **options: object) -> Operation:
    return Operation(JsonSelector(parse_json_path(path)), Action.TOKENIZE, **options)  # type: ignore[arg-type]


def detokenize_json(path: str, **options: object) -> Operation:
    return Operation(JsonSelector(parse_json_path(path)), Action.DETOKENIZE, **options)  # type: ignore[arg-type]


def answer_with_fake_tokens(pending: PendingRewrite) -> MessageParts:
    tokens = [f"tok_{index}" for index in range(len(pending.tokenize_items))]
    return pending.apply(tokens, [])


def reveal(pending: PendingRewrite, values: Sequence[tuple[str, ValueType]]) -> MessageParts:
    revealed = [Revealed(value, kind, "pan", "card.pan") for value, kind in values]
    return pending.apply([], revealed)


def test_json_fields_are_collected_and_replaced() -> None:
    body = b'{"card": {"number": "4242424242424242", "cvc": "123"}, "amount": 1.10}'
    pending = prepare_rewrite(
        [tokenize_json("$.card.number", format="pan"), tokenize_json("$.card.cvc", ttl=900.0)],
        MessageParts(JSON, body),
        LIMITS,
    )
    assert [item.value for item in pending.tokenize_items] == ["4242424242424242", "123"]
    assert pending.tokenize_items[0].format == "pan"
    assert pending.tokenize_items[1].ttl == 900.0

    parts = answer_with_fake_tokens(pending)
    assert parts.body == b'{"card":{"number":"tok_0","cvc":"tok_1"},"amount":1.10}'


def test_json_number_is_tokenized_with_its_type_and_restored() -> None:
    pending = prepare_rewrite(
        [tokenize_json("$.pan")], MessageParts(JSON, b'{"pan": 4242424242424242}'), LIMITS
    )
    assert pending.tokenize_items[0].value == "4242424242424242"
    assert pending.tokenize_items[0].value_type is ValueType.NUMBER
    assert answer_with_fake_tokens(pending).body == b'{"pan":"tok_0"}'

    pending = prepare_rewrite(
        [detokenize_json("$.pan")], MessageParts(JSON, b'{"pan": "tok_0"}'), LIMITS
    )
    assert (
        reveal(pending, [("4242424242424242", ValueType.NUMBER)]).body
        == b'{"pan":4242424242424242}'
    )


def test_null_and_boolean_fields_are_skipped() -> None:
    pending = prepare_rewrite(
        [tokenize_json("$.a"), tokenize_json("$.b")],
        MessageParts(JSON, b'{"a": null, "b": true}'),
        LIMITS,
    )
    assert pending.is_empty


@pytest.mark.parametrize("body", [b'{"a": {"n": "1"}}', b'{"a": ["1"]}'])
def test_object_or_array_at_field_is_rejected(body: bytes) -> None:
    # Skipping it would relay whatever the object holds, card numbers included.
    with pytest.raises(InvalidBodyError, match="expects a string or number"):
        prepare_rewrite([tokenize_json("$.a")], MessageParts(JSON, body), LIMITS)


def test_required_field_missing() -> None:
    with pytest.raises(MissingFieldError, match=r"\$\.card\.number"):
        prepare_rewrite(
            [tokenize_json("$.card.number", required=True)], MessageParts(JSON, b"{}"), LIMITS
        )
    with pytest.raises(MissingFieldError):
        prepare_rewrite(
            [tokenize_json("$.card.number", required=True)], MessageParts(JSON, b""), LIMITS
        )


def test_optional_field_missing_leaves_body_alone() -> None:
    parts = MessageParts(JSON, b'{"other": 1}')
    pending = prepare_rewrite([tokenize_json("$.card.number")], parts, LIMITS)
    assert pending.is_empty


def test_empty_body_without_content_type_passes() -> None:
    pending = prepare_rewrite([tokenize_json("$.a")], MessageParts(CIMultiDict(), b""), LIMITS)
    assert pending.is_empty


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        (None, UnsupportedMediaError),
        ("text/plain", UnsupportedMediaError),
        ("application/x-www-form-urlencoded", UnsupportedMediaError),
        ("application/json; charset=latin-1", UnsupportedMediaError),
    ],
)
def test_json_route_wrong_content_type(content_type: str | None, error: type[Exception]) -> None:
    headers = CIMultiDict({"Content-Type": content_type} if content_type else {})
    with pytest.raises(error):
        prepare_rewrite([tokenize_json("$.a")], MessageParts(headers, b'{"a": "1"}'), LIMITS)


def test_plus_json_media_type_accepted() -> None:
    headers = CIMultiDict({"Content-Type": "application/vnd.api+json; charset=utf-8"})
    pending = prepare_rewrite([tokenize_json("$.a")], MessageParts(headers, b'{"a": "1"}'), LIMITS)
    assert len(pending.tokenize_items) == 1


def test_gzip_body_is_decoded_and_reencoded() -> None:
    headers = CIMultiDict({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    body = gzip.compress(b'{"card": {"number": "4242424242424242"}}')
    pending = prepare_rewrite([tokenize_json("$.card.number")], MessageParts(headers, body), LIMITS)
    parts = answer_with_fake_tokens(pending)
    assert parts.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(parts.body) == b'{"card":{"number":"tok_0"}}'


def test_body_over_limit_after_decompression() -> None:
    headers = CIMultiDict({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    body = gzip.compress(b'{"a": "' + b"x" * 20_000 + b'"}')
    assert len(body) < LIMITS.max_body_bytes
    with pytest.raises(BodyTooLargeError):
        prepare_rewrite([tokenize_json("$.a")], MessageParts(headers, body), LIMITS)


def test_unknown_content_encoding() -> None:
    headers = CIMultiDict({"Content-Type": "application/json", "Content-Encoding": "compress"})
    with pytest.raises(UnsupportedMediaError):
        prepare_rewrite([tokenize_json("$.a")], MessageParts(headers, b"x"), LIMITS)


def test_too_many_fields() -> None:
    body = simplejson.dumps({"items": [{"n": str(i)} for i in range(11)]}).encode()
    with pytest.raises(InvalidBodyError, match="max_fields"):
        prepare_rewrite([tokenize_json("$.items[*].n")], MessageParts(JSON, body), LIMITS)


def test_form_fields_detokenized_in_place() -> None:
    body = b"type=card&card%5Bnumber%5D=tok_a&card%5Bcvc%5D=tok_b&card%5Bexp_month%5D=12"
    operations = [
        Operation(FormSelector("card[number]"), Action.DETOKENIZE),
        Operation(FormSelector("card[cvc]"), Action.DETOKENIZE),
    ]
    pending = prepare_rewrite(operations, MessageParts(FORM, body), LIMITS)
    assert pending.detokenize_tokens == ["tok_a", "tok_b"]
    parts = reveal(pending, [("4242424242424242", ValueType.STRING), ("123", ValueType.STRING)])
    assert parts.body == (
        b"type=card&card%5Bnumber%5D=4242424242424242&card%5Bcvc%5D=123&card%5Bexp_month%5D=12"
    )


def test_repeated_form_field_is_processed_every_time() -> None:
    # Processing only the first would let the second reach the upstream as sent.
    operation = Operation(FormSelector("pan"), Action.TOKENIZE)
    pending = prepare_rewrite([operation], MessageParts(FORM, b"pan=1111&pan=2222"), LIMITS)
    assert [item.value for item in pending.tokenize_items] == ["1111", "2222"]
    assert answer_with_fake_tokens(pending).body == b"pan=tok_0&pan=tok_1"


def test_query_and_header_fields() -> None:
    operations = [
        Operation(QuerySelector("card"), Action.TOKENIZE),
        Operation(HeaderSelector("x-card"), Action.TOKENIZE),
    ]
    headers = CIMultiDict({"X-Card": "5555555555554444", "Accept": "*/*"})
    pending = prepare_rewrite(
        operations, MessageParts(headers, b"", "a=1&card=4242424242424242"), LIMITS
    )
    parts = answer_with_fake_tokens(pending)
    assert parts.query == "a=1&card=tok_0"
    assert parts.headers["X-Card"] == "tok_1"
    assert parts.headers["Accept"] == "*/*"


def test_detokenized_header_value_with_newline_is_rejected() -> None:
    operation = Operation(HeaderSelector("x-card"), Action.DETOKENIZE)
    pending = prepare_rewrite(
        [operation], MessageParts(CIMultiDict({"X-Card": "tok"}), b""), LIMITS
    )
    with pytest.raises(InvalidValueError, match="control character"):
        reveal(pending, [("a\r\nX-Injected: 1", ValueType.STRING)])


def test_first_field_error_rejects_message() -> None:
    pending = prepare_rewrite(
        [detokenize_json("$.a"), detokenize_json("$.b")],
        MessageParts(JSON, b'{"a": "tok_a", "b": "tok_b"}'),
        LIMITS,
    )
    with pytest.raises(InvalidTokenError):
        pending.apply(
            [], [Revealed("1", ValueType.STRING, "uuid", "x"), InvalidTokenError("unknown")]
        )

    pending = prepare_rewrite([tokenize_json("$.a")], MessageParts(JSON, b'{"a": "x"}'), LIMITS)
    with pytest.raises(InvalidValueError):
        pending.apply([InvalidValueError("not a card number")], [])


def test_result_count_mismatch_is_an_error() -> None:
    pending = prepare_rewrite([tokenize_json("$.a")], MessageParts(JSON, b'{"a": "x"}'), LIMITS)
    with pytest.raises(ValueError, match="number of results"):
        pending.apply([], [])


def test_input_parts_are_not_modified() -> None:
    headers = CIMultiDict({"Content-Type": "application/json", "X-Card": "1"})
    original = MessageParts(headers, b'{"a": "x"}')
    pending = prepare_rewrite(
        [tokenize_json("$.a"), Operation(HeaderSelector("x-card"), Action.TOKENIZE)],
        original,
        LIMITS,
    )
    answer_with_fake_tokens(pending)
    assert original.body == b'{"a": "x"}'
    assert original.headers["X-Card"] == "1"


def test_underscore_header_variant_is_processed() -> None:
    operation = Operation(HeaderSelector("x-card-number"), Action.TOKENIZE)
    headers = CIMultiDict([("X-Card_Number", "1"), ("X-Card-Number", "2"), ("Accept", "*/*")])
    pending = prepare_rewrite([operation], MessageParts(headers, b""), LIMITS)
    parts = answer_with_fake_tokens(pending)
    assert list(parts.headers.items()) == [
        ("X-Card_Number", "tok_0"),
        ("X-Card-Number", "tok_1"),
        ("Accept", "*/*"),
    ]


def test_repeated_content_encoding_lines_form_one_list() -> None:
    headers = CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "identity"),
            ("Content-Encoding", "gzip"),
        ]
    )
    body = gzip.compress(b'{"a": "x"}')
    pending = prepare_rewrite([tokenize_json("$.a")], MessageParts(headers, body), LIMITS)
    assert pending.tokenize_items[0].value == "x"
