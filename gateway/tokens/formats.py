"""Token formats: what a token looks like, which values fit, and each format's default class.

=============  =======================  ================================================
format         default class            token
=============  =======================  ================================================
uuid           generic.uuid             ``tok_`` and 32 lowercase hex digits (128 random bits)
pan            card.pan                 same length and separators, first six and last
                                        four digits kept, the rest random, Luhn-valid
pan_last4      card.pan                 same length and separators, last four digits
                                        kept, the rest random, Luhn-valid
numeric        generic.numeric          as many random digits as the value has
alphanumeric   generic.alphanumeric     each ASCII digit, lowercase and uppercase letter
                                        replaced by a random one of its kind, other
                                        characters kept
=============  =======================  ================================================

Every format except ``uuid`` keeps the value's length and never returns the value itself. The
card formats accept 12 to 19 ASCII digits, optionally grouped by single spaces or dashes, and do
not require the value to pass the Luhn check (payment providers publish failing test numbers).
A value that does not fit raises ``InvalidValueError``, whose message names the format and the
reason but never the value.
"""

from __future__ import annotations

import re
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Final, NoReturn

from gateway.errors import InvalidValueError

MAX_TOKEN_LENGTH: Final = 256
"""Maximum token length that detokenize accepts. Length-preserving formats reject longer values."""

_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GROUPED_DIGITS: Final = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGITS: Final = re.compile(r"[0-9]+")
_ALPHABETS: Final = (string.digits, string.ascii_lowercase, string.ascii_uppercase)


def has_control_characters(text: str) -> bool:
    """Return whether ``text`` contains a C0 or C1 control character or DEL."""
    return _CONTROL_CHARACTERS.search(text) is not None


def is_luhn_valid(number: str) -> bool:
    """Return whether a string of ASCII digits passes the Luhn check."""
    return _luhn_sum(number) % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """Return the digit that, appended to ``payload``, makes it pass the Luhn check."""
    return _solve_luhn_digit(payload + "0", len(payload))


def _luhn_sum(number: str) -> int:
    total = 0
    for position_from_right, character in enumerate(reversed(number)):
        digit = int(character)
        if position_from_right % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total


def _solve_luhn_digit(number: str, index: int) -> str:
    """Return the digit at ``index`` that makes ``number`` pass the Luhn check.

    Exactly one digit works wherever it sits, because doubling with 9 subtracted maps 0-9 onto
    0-9 one to one.
    """
    # A 0 at ``index`` adds nothing, so the sum without it tells what the digit must add.
    rest = _luhn_sum(number[:index] + "0" + number[index + 1 :])
    doubled = (len(number) - 1 - index) % 2 == 1
    for digit in range(10):
        added = (digit * 2 - 9 if digit > 4 else digit * 2) if doubled else digit
        if (rest + added) % 10 == 0:
            return str(digit)
    raise AssertionError("unreachable: some digit always completes the Luhn check")


class TokenFormat(ABC):
    """A kind of token. Instances are stateless, and ``get_format`` returns shared ones."""

    name: str
    default_class: str

    def validate(self, value: str) -> None:
        """Raise ``InvalidValueError`` unless ``value`` can be tokenized in this format."""
        try:
            value.encode()
        except UnicodeEncodeError:
            self._reject("it is not valid Unicode text (it contains a lone surrogate)")
        self._check(value)

    @abstractmethod
    def _check(self, value: str) -> None:
        """Raise through ``_reject`` unless the format accepts ``value``."""

    @abstractmethod
    def generate(self, value: str) -> str:
        """Return a new random token for a value that passed ``validate``."""

    def _reject(self, reason: str) -> NoReturn:
        raise InvalidValueError(f"value does not fit token format {self.name}: {reason}")

    def _check_text_kept_in_token(self, value: str) -> None:
        if len(value) > MAX_TOKEN_LENGTH:
            self._reject(f"it is longer than {MAX_TOKEN_LENGTH} characters")
        if has_control_characters(value):
            self._reject("it contains control characters")


class UuidFormat(TokenFormat):
    name = "uuid"
    default_class = "generic.uuid"

    def _check(self, value: str) -> None:
        pass

    def generate(self, value: str) -> str:
        return "tok_" + secrets.token_hex(16)


class _CardFormat(TokenFormat):
    """Card numbers: random digits between a kept prefix and the kept last four, Luhn-valid."""

    kept_prefix: int

    def _check(self, value: str) -> None:
        if not _GROUPED_DIGITS.fullmatch(value):
            self._reject("it must be digits, optionally grouped by single spaces or dashes")
        digit_count = sum(character in string.digits for character in value)
        if not 12 <= digit_count <= 19:
            self._reject(f"it has {digit_count} digits, but a card number has 12 to 19")

    def generate(self, value: str) -> str:
        positions = [index for index, character in enumerate(value) if character in string.digits]
        digits = "".join(value[index] for index in positions)
        while True:
            candidate = self._random_card_digits(digits)
            if candidate != digits:
                break

        token = list(value)
        for index, digit in zip(positions, candidate, strict=True):
            token[index] = digit
        return "".join(token)

    def _random_card_digits(self, digits: str) -> str:
        # Keeping the first six digits of a 12- or 13-digit card would leave two or three
        # digits hidden, one of them fixed by Luhn, so the token would narrow the card to a
        # hundred candidates. Such cards keep only their last four.
        kept = self.kept_prefix
        if len(digits) - kept - 4 < MIN_HIDDEN_DIGITS:
            kept = 0
        middle_length = len(digits) - kept - 4
        middle = f"{secrets.randbelow(10**middle_length):0{middle_length}d}"
        candidate = digits[:kept] + middle + digits[-4:]
        # The last random digit is chosen to make the number pass the Luhn check.
        fixed_index = len(digits) - 5
        fixed_digit = _solve_luhn_digit(candidate, fixed_index)
        return candidate[:fixed_index] + fixed_digit + candidate[fixed_index + 1 :]


MIN_HIDDEN_DIGITS = 4
"""Fewest digits a card token replaces; a shorter card keeps no prefix."""


class PanFormat(_CardFormat):
    name = "pan"
    default_class = "card.pan"
    kept_prefix = 6


class PanLast4Format(_CardFormat):
    name = "pan_last4"
    default_class = "card.pan"
    kept_prefix = 0


class NumericFormat(TokenFormat):
    name = "numeric"
    default_class = "generic.numeric"

    def _check(self, value: str) -> None:
        if not _DIGITS.fullmatch(value):
            self._reject("it must be one or more ASCII digits and nothing else")
        self._check_text_kept_in_token(value)

    def generate(self, value: str) -> str:
        while True:
            token = "".join(secrets.choice(string.digits) for _ in value)
            if token != value:
                return token


class AlphanumericFormat(TokenFormat):
    name = "alphanumeric"
    default_class = "generic.alphanumeric"

    def _check(self, value: str) -> None:
        if not any(_alphabet_of(character) for character in value):
            self._reject("it has no ASCII letter or digit to replace")
        self._check_text_kept_in_token(value)

    def generate(self, value: str) -> str:
        while True:
            token = "".join(_replace_character(character) for character in value)
            if token != value:
                return token


def _alphabet_of(character: str) -> str | None:
    for alphabet in _ALPHABETS:
        if character in alphabet:
            return alphabet
    return None


def _replace_character(character: str) -> str:
    alphabet = _alphabet_of(character)
    return character if alphabet is None else secrets.choice(alphabet)


_FORMATS: Final[Mapping[str, TokenFormat]] = {
    token_format.name: token_format
    for token_format in (
        UuidFormat(),
        PanFormat(),
        PanLast4Format(),
        NumericFormat(),
        AlphanumericFormat(),
    )
}


def format_names() -> frozenset[str]:
    return frozenset(_FORMATS)


def get_format(name: str) -> TokenFormat:
    """Return the format called ``name``, or raise ``ValueError`` for an unknown name."""
    try:
        return _FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(_FORMATS))
        raise ValueError(f"unknown token format {name!r}. Use one of {known}") from None
