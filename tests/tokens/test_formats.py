from __future__ import annotations

import re
import string

import pytest

from gateway.errors import InvalidValueError
from gateway.tokens.formats import (
    MAX_TOKEN_LENGTH,
    format_names,
    get_format,
    has_control_characters,
    is_luhn_valid,
    luhn_check_digit,
)
from tests.data import load_test_card_rows

TOKENS_PER_VALUE = 25


def luhn_number(length: int, prefix: str = "4") -> str:
    payload = (prefix + "73" * length)[: length - 1]
    return payload + luhn_check_digit(payload)


TEST_CARDS = load_test_card_rows()
CARD_NUMBERS = [row["pan"] for row in TEST_CARDS] + [luhn_number(n) for n in (12, 13, 17, 18)]


def test_card_list_covers_lengths() -> None:
    lengths = {len(number) for number in CARD_NUMBERS}

    assert {12, 13, 14, 15, 16, 17, 18, 19} <= lengths


@pytest.mark.parametrize("row", TEST_CARDS, ids=lambda row: row["pan"])
def test_is_luhn_valid_matches_card_list(row: dict[str, str]) -> None:
    assert is_luhn_valid(row["pan"]) is (row["luhn_valid"] == "True")


@pytest.mark.parametrize(
    ("payload", "check_digit"),
    [("7992739871", "3"), ("424242424242424", "2"), ("37828224631000", "5"), ("0", "0")],
)
def test_luhn_check_digit(payload: str, check_digit: str) -> None:
    assert luhn_check_digit(payload) == check_digit


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_pan_token_keeps_bin_and_last4(number: str) -> None:
    pan = get_format("pan")
    pan.validate(number)

    for _ in range(TOKENS_PER_VALUE):
        token = pan.generate(number)
        assert len(token) == len(number)
        assert token.isascii()
        assert token.isdigit()
        if len(number) >= 14:
            assert token[:6] == number[:6]
        assert token[-4:] == number[-4:]
        assert is_luhn_valid(token)
        assert token != number


@pytest.mark.parametrize("length", [12, 13])
def test_short_pan_token_keeps_no_prefix(length: int) -> None:
    # Six kept digits would leave two or three hidden ones, one fixed by Luhn.
    number = luhn_number(length)
    tokens = {get_format("pan").generate(number) for _ in range(200)}
    assert len({token[:6] for token in tokens}) > 1
    assert all(token[-4:] == number[-4:] for token in tokens)


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_pan_last4_token_keeps_last4(number: str) -> None:
    pan_last4 = get_format("pan_last4")
    pan_last4.validate(number)

    tokens = {pan_last4.generate(number) for _ in range(TOKENS_PER_VALUE)}

    for token in tokens:
        assert len(token) == len(number)
        assert token.isascii()
        assert token.isdigit()
        assert token[-4:] == number[-4:]
        assert is_luhn_valid(token)
        assert token != number
    assert len({token[:6] for token in tokens}) > 1


def test_pan_token_of_14_digits_covers_space() -> None:
    number = luhn_number(14)
    pan = get_format("pan")

    tokens = {pan.generate(number) for _ in range(20000)}

    # Four middle digits, the last fixed by the Luhn check: 1000 numbers, minus the input.
    assert len(tokens) == 999
    assert number not in tokens


@pytest.mark.parametrize("format_name", ["pan", "pan_last4"])
@pytest.mark.parametrize(
    "number",
    ["4242 4242 4242 4242", "4242-4242-4242-4242", "3782 822463 10005", "4242424242-424242"],
)
def test_card_token_keeps_separators(format_name: str, number: str) -> None:
    token_format = get_format(format_name)
    token_format.validate(number)

    token = token_format.generate(number)

    assert len(token) == len(number)
    assert [i for i, c in enumerate(token) if not c.isdigit()] == [
        i for i, c in enumerate(number) if not c.isdigit()
    ]
    assert [c for c in token if not c.isdigit()] == [c for c in number if not c.isdigit()]
    assert is_luhn_valid(token.replace(" ", "").replace("-", ""))
    assert token[-4:] == number[-4:]


@pytest.mark.parametrize("format_name", ["pan", "pan_last4"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("42424242424", id="11-digits"),
        pytest.param("42424242424242424242", id="20-digits"),
        pytest.param("4242 4242 4242 424x", id="letter"),
        pytest.param("4242  4242 4242 4242", id="double-space"),
        pytest.param(" 4242424242424242", id="leading-space"),
        pytest.param("4242424242424242-", id="trailing-dash"),
        pytest.param("4242.4242.4242.4242", id="dots"),
        pytest.param("\uff14\uff12" * 8, id="fullwidth-digits"),
        pytest.param("\u0664\u0662" * 8, id="arabic-indic-digits"),
    ],
)
def test_card_format_rejects_value(format_name: str, value: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        get_format(format_name).validate(value)

    message = str(caught.value)
    assert format_name in message
    if value.strip():
        assert value.strip() not in message


def test_pan_accepts_luhn_invalid_number() -> None:
    number = next(row["pan"] for row in TEST_CARDS if row["luhn_valid"] == "False")
    pan = get_format("pan")
    pan.validate(number)

    assert is_luhn_valid(pan.generate(number))


@pytest.mark.parametrize("value", ["0", "7", "42", "0000", "123456789", "9" * MAX_TOKEN_LENGTH])
def test_numeric_token_keeps_length(value: str) -> None:
    numeric = get_format("numeric")
    numeric.validate(value)

    for _ in range(TOKENS_PER_VALUE):
        token = numeric.generate(value)
        assert len(token) == len(value)
        assert set(token) <= set(string.digits)
        assert token != value


@pytest.mark.parametrize(
    "value", ["", "12a", "-12", "12.5", " 12", "\uff11\uff12", "9" * (MAX_TOKEN_LENGTH + 1)]
)
def test_numeric_rejects_value(value: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        get_format("numeric").validate(value)

    assert "numeric" in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ["a", "Z", "5", "AB-12 x", "Jane.Doe@example.com", "ünï-Cödé 42", "x" * MAX_TOKEN_LENGTH],
)
def test_alphanumeric_token_keeps_character_classes(value: str) -> None:
    alphanumeric = get_format("alphanumeric")
    alphanumeric.validate(value)

    for _ in range(TOKENS_PER_VALUE):
        token = alphanumeric.generate(value)
        assert len(token) == len(value)
        assert token != value
        for original, replaced in zip(value, token, strict=True):
            if original in string.digits:
                assert replaced in string.digits
            elif original in string.ascii_lowercase:
                assert replaced in string.ascii_lowercase
            elif original in string.ascii_uppercase:
                assert replaced in string.ascii_uppercase
            else:
                assert replaced == original


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("--- ...", id="no-letters"),
        pytest.param("üéï ✓", id="only-non-ascii"),
        pytest.param("ab\ncd", id="newline"),
        pytest.param("ab\x00cd", id="nul"),
        pytest.param("ab\x85cd", id="c1-control"),
        pytest.param("x" * (MAX_TOKEN_LENGTH + 1), id="too-long"),
    ],
)
def test_alphanumeric_rejects_value(value: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        get_format("alphanumeric").validate(value)

    assert "alphanumeric" in str(caught.value)


def test_uuid_tokens_unique_hex() -> None:
    uuid = get_format("uuid")

    tokens = {uuid.generate("any value") for _ in range(1000)}

    assert len(tokens) == 1000
    for token in tokens:
        assert re.fullmatch(r"tok_[0-9a-f]{32}", token)


@pytest.mark.parametrize("value", ["", "plain", "x" * 10_000, "multi\nline", "ünïcödé ✓"])
def test_uuid_accepts_any_text(value: str) -> None:
    get_format("uuid").validate(value)


@pytest.mark.parametrize("format_name", sorted(format_names()))
def test_formats_reject_lone_surrogate(format_name: str) -> None:
    with pytest.raises(InvalidValueError):
        get_format(format_name).validate("4242424242\ud8004242")


def test_format_registry_names_and_classes() -> None:
    assert format_names() == {"uuid", "pan", "pan_last4", "numeric", "alphanumeric"}
    assert {name: get_format(name).default_class for name in format_names()} == {
        "uuid": "generic.uuid",
        "pan": "card.pan",
        "pan_last4": "card.pan",
        "numeric": "generic.numeric",
        "alphanumeric": "generic.alphanumeric",
    }


def test_get_format_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="ssn"):
        get_format("ssn")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("tok_abc", False), ("a\tb", True), ("a\x7fb", True), ("a\x9fb", True), ("ü ✓", False)],
)
def test_has_control_characters(text: str, expected: bool) -> None:
    assert has_control_characters(text) is expected
