from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.engine.bodies import (
    dump_json,
    json_number,
    parse_form,
    parse_form_body,
    parse_json,
    parse_media_type,
)
from gateway.errors import InvalidBodyError


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": 1', "malformed"),
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate"),
        (b"[NaN]", "malformed"),
        (b'{"a": Infinity}', "malformed"),
        (b"[-Infinity]", "malformed"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": 1} trailing', "malformed"),
        (b"", "malformed"),
        (b"[" * 100 + b"]" * 100, "deeper"),
        (b"[" * 100_000 + b"]" * 100_000, "deeper"),
        (b"1" * 5000, "out of range"),
        (b"1e-99999999999999999999", "out of range"),
        (b'{"number": "1", "NUMBER": "2"}', "duplicate"),
    ],
)
def test_parse_json_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidBodyError, match=reason):
        parse_json(body, max_depth=64)


def test_parse_json_depth_limit_is_inclusive() -> None:
    assert parse_json(b"[" * 64 + b"]" * 64, max_depth=64) is not None
    with pytest.raises(InvalidBodyError):
        parse_json(b"[" * 65 + b"]" * 65, max_depth=64)


def test_json_numbers_keep_their_digits() -> None:
    body = b'{"amount":1.10,"big":12345678901234567890.123456789,"exp":1E+5,"n":10}'
    assert dump_json(parse_json(body, max_depth=8)) == body


def test_dump_json_keeps_unicode_as_utf8() -> None:
    assert dump_json({"name": "Zoë"}) == '{"name":"Zoë"}'.encode()


def test_dump_json_rejects_lone_surrogate() -> None:
    document = parse_json(b'{"a": "\\ud800"}', max_depth=8)
    with pytest.raises(InvalidBodyError, match="surrogate"):
        dump_json(document)


def test_json_number_types() -> None:
    assert json_number("4242424242424242") == 4242424242424242
    assert json_number("1.50") == Decimal("1.50")
    assert str(json_number("1.50")) == "1.50"


def test_error_messages_do_not_quote_content() -> None:
    with pytest.raises(InvalidBodyError) as caught:
        parse_json(b'{"4242424242424242": 1, "4242424242424242": 2}', max_depth=8)
    assert "4242" not in str(caught.value)


def test_form_round_trip_keeps_untouched_pairs() -> None:
    text = "card%5Bnumber%5D=tok_1&card[cvc]=tok_2&name=J+Doe&empty=&flag"
    form = parse_form(text)
    assert [(field.name, field.value) for field in form.fields] == [
        ("card[number]", "tok_1"),
        ("card[cvc]", "tok_2"),
        ("name", "J Doe"),
        ("empty", ""),
        ("flag", ""),
    ]
    assert form.encode() == text


def test_form_set_value_encodes_only_that_value() -> None:
    form = parse_form("card%5Bnumber%5D=tok_1&other=a+b")
    form.set_value(form.find("card[number]")[0], "4242 4242&x=1")
    assert form.encode() == "card%5Bnumber%5D=4242+4242%26x%3D1&other=a+b"


def test_form_finds_every_repeated_field() -> None:
    form = parse_form("a=1&a=2&b=3")
    assert [field.value for field in form.find("a")] == ["1", "2"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a=1;b=2", "';'"),
        ("a=%zz", "percent"),
        ("a=%4", "percent"),
        ("a=%ff%fe", "UTF-8"),
    ],
)
def test_parse_form_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidBodyError, match=reason):
        parse_form(text)


def test_form_body_rejects_raw_non_ascii() -> None:
    with pytest.raises(InvalidBodyError, match="non-ASCII"):
        parse_form_body("name=Zoë".encode())


@pytest.mark.parametrize(
    ("header", "media_type", "charset"),
    [
        ("application/json", "application/json", None),
        ("Application/JSON; charset=UTF-8", "application/json", "utf-8"),
        (
            'application/x-www-form-urlencoded; charset="utf-8"',
            "application/x-www-form-urlencoded",
            "utf-8",
        ),
        ("application/vnd.api+json", "application/vnd.api+json", None),
    ],
)
def test_parse_media_type(header: str, media_type: str, charset: str | None) -> None:
    parsed = parse_media_type(header)
    assert parsed is not None
    assert parsed.type == media_type
    assert parsed.charset == charset


def test_media_type_kinds() -> None:
    json_type = parse_media_type("application/problem+json")
    form_type = parse_media_type("application/x-www-form-urlencoded")
    assert json_type is not None
    assert json_type.is_json
    assert form_type is not None
    assert form_type.is_form
    assert parse_media_type("") is None
    assert parse_media_type(None) is None


def test_form_find_matches_backend_spellings() -> None:
    form = parse_form("card%5Bnumber%5D%5B%5D=1&CARD[NUMBER]=2&card[number][0]=3&card[numbers]=4")
    assert [field.value for field in form.find("card[number]")] == ["1", "2", "3"]
