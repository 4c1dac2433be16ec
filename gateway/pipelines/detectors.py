"""Detectors that find sensitive values in free text, each a pattern plus a validator.

=========  ============  ==========================================================
detector   class         finds
=========  ============  ==========================================================
card       card.pan      12 to 19 digits, optionally grouped by spaces or dashes, that
                         pass the Luhn check and fall in a known issuer range
ssn        person.ssn    ``AAA-GG-SSSS`` (or spaces) with the area, group and serial
                         numbers the US Social Security Administration issues
email      contact.email an address of the form local@domain.tld
phone      contact.phone numbers the phonenumbers library finds valid for one of
                         ``PHONE_REGIONS``, or in any region with a leading ``+``
iban       bank.iban     a country code, check digits and account that pass mod-97
                         and have that country's length
ip         network.ip    an IPv4 or IPv6 address that the ipaddress module accepts
=========  ============  ==========================================================

Digits that are part of a decimal number (``40.79815162129809``) are never a card, an SSN or
a phone number, because a value next to a decimal point or inside a longer word is skipped.
Where detections overlap, the one of the detector listed first in ``DETECTOR_NAMES`` wins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Final

import phonenumbers

from gateway.tokens.formats import is_luhn_valid

DETECTOR_NAMES: Final = ("card", "iban", "ssn", "email", "ip", "phone")
"""Every detector, in order of precedence when two detections overlap."""

DETECTOR_CLASSES: Final = {
    "card": "card.pan",
    "iban": "bank.iban",
    "ssn": "person.ssn",
    "email": "contact.email",
    "ip": "network.ip",
    "phone": "contact.phone",
}

PHONE_REGIONS: Final = (
    "US",
    "GB",
    "DE",
    "FR",
    "IT",
    "ES",
    "NL",
    "BE",
    "CH",
    "AT",
    "SE",
    "AU",
    "BR",
    "IN",
    "IL",
    "CA",
)
"""Regions whose national number formats the phone detector accepts.

Numbers written with a leading ``+`` and a country code are found whatever their country.
"""


@dataclass(frozen=True, slots=True)
class Detection:
    start: int
    end: int
    detector: str


# A candidate may not touch a letter, a digit or a decimal point followed by a digit, so that
# parts of longer numbers, identifiers and floats are not taken.
_CARD: Final = re.compile(r"(?<![\w.,+-])[0-9](?:[ -]?[0-9]){11,18}(?![\w]|[.,-][0-9])")
_SSN: Final = re.compile(r"(?<![\w.-])([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})(?![\w]|[.-][0-9])")
_EMAIL: Final = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_IBAN: Final = re.compile(
    r"(?<![\w])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?(?![\w])"
)
_IPV4: Final = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.[0-9])")
_IPV6: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?"
    r"(?![\w:])"
)
_DIGIT: Final = re.compile(r"[0-9]")
_DIGIT_GROUP: Final = re.compile(r"[0-9]+")
MIN_PHONE_DIGITS: Final = 7
PHONE_CONTEXT_CHARACTERS: Final = 40
"""How far before a two-group number a context word such as "phone" may stand."""
_PHONE_CONTEXT: Final = re.compile(
    r"\b(?:phone|telephone|tel|mobile|cell|fax|call|dial|text|number|contact|reach)", re.IGNORECASE
)
MAX_PHONE_DIGITS: Final = 15
"""ITU-T E.164 allows at most 15 digits; fewer than 7 is no phone number in any plan."""

# Country code and IBAN length of the countries in the SWIFT IBAN registry.
IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Issuer prefix ranges (inclusive, compared on as many leading digits as the bounds have) and
# the card lengths each issues, after the ISO/IEC 7812 registrations the brands publish.
_ISSUER_RANGES: Final = (
    ("visa", "4", "4", (13, 16, 19)),
    ("mastercard", "51", "55", (16,)),
    ("mastercard", "2221", "2720", (16,)),
    ("amex", "34", "34", (15,)),
    ("amex", "37", "37", (15,)),
    ("discover", "6011", "6011", (16, 17, 18, 19)),
    ("discover", "644", "649", (16, 17, 18, 19)),
    ("discover", "65", "65", (16, 17, 18, 19)),
    ("unionpay", "62", "62", (16, 17, 18, 19)),
    ("diners", "300", "305", (14, 15, 16, 17, 18, 19)),
    ("diners", "3095", "3095", (14, 15, 16, 17, 18, 19)),
    ("diners", "36", "36", (14, 15, 16, 17, 18, 19)),
    ("diners", "38", "39", (14, 15, 16, 17, 18, 19)),
    # JCB registered 3528-3589. The whole 35 prefix is accepted because generated test data
    # has JCB numbers from all of it.
    ("jcb", "35", "35", (15, 16, 17, 18, 19)),
    ("jcb", "1800", "1800", (15,)),
    ("jcb", "2131", "2131", (15,)),
    ("mir", "2200", "2204", (16, 17, 18, 19)),
    ("maestro", "50", "50", tuple(range(12, 20))),
    ("maestro", "56", "69", tuple(range(12, 20))),
    ("troy", "9792", "9792", (16,)),
)


def card_issuer(digits: str) -> str | None:
    """Return the brand whose issuer range and lengths include ``digits``, or None."""
    for brand, low, high, lengths in _ISSUER_RANGES:
        prefix = digits[: len(low)]
        if low <= prefix <= high and len(digits) in lengths:
            return brand
    return None


def is_card_number(text: str) -> bool:
    """Return whether ``text`` is 12 to 19 digits (spaces or dashes allowed) of a real issuer range
    that pass the Luhn check."""
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    return is_luhn_valid(digits) and card_issuer(digits) is not None


def is_issued_ssn(area: str, group: str, serial: str) -> bool:
    """Return whether an SSN's parts are in ranges that are issued.

    Area 000, 666 and 900 to 999, group 00 and serial 0000 are never issued.
    """
    if area in ("000", "666") or area >= "900":
        return False
    return group != "00" and serial != "0000"


def is_valid_iban(text: str) -> bool:
    """Return whether ``text`` (spaces allowed, any letter case) is an IBAN of a known country
    length whose check digits pass mod-97 (ISO 13616)."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(character, 36)) for character in rearranged)
    return int(number) % 97 == 1


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _find_cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        if is_card_number(match.group()):
            yield match.span()


def _find_ssns(text: str) -> Iterator[tuple[int, int]]:
    for match in _SSN.finditer(text):
        if is_issued_ssn(match.group(1), match.group(3), match.group(4)):
            yield match.span()


def _find_emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield match.span()


def _find_ibans(text: str) -> Iterator[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # A match may run into a following word group; trim trailing groups until it validates.
        while candidate:
            if is_valid_iban(candidate):
                yield match.start(), match.start() + len(candidate)
                break
            candidate = candidate[: candidate.rfind(" ")] if " " in candidate else ""


def _find_ips(text: str) -> Iterator[tuple[int, int]]:
    if "." in text:
        for match in _IPV4.finditer(text):
            if is_ip_address(match.group()):
                yield match.span()
    if text.count(":") >= 2:
        for match in _IPV6.finditer(text):
            candidate = match.group()
            if any(character.isalnum() for character in candidate) and is_ip_address(candidate):
                yield match.span()


def _find_phones(text: str) -> Iterator[tuple[int, int]]:
    if len(_DIGIT.findall(text)) < MIN_PHONE_DIGITS:
        return
    found: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.POSSIBLE
        )
        for match in matcher:
            span = (match.start, match.end)
            if span in found or _is_inside_word_or_number(text, *span):
                continue
            if _looks_like_phone(match.raw_string, match.number, text[: match.start]):
                found.add(span)
                yield span


def _looks_like_phone(raw: str, number: phonenumbers.PhoneNumber, before: str) -> bool:
    """Return whether a possible number is a phone number rather than some other digits.

    A number written with a ``+`` or parentheses is one, and so is one in three or more groups
    of digits. One unbroken run of digits is one only when it is valid in its region. Two groups
    of digits are also what an address gives (a house number and a postal code), so they count
    only after a word such as "phone" or "call".
    """
    digits = len(_DIGIT.findall(raw))
    if not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS:
        return False
    if raw.startswith("+") or "(" in raw:
        return True
    groups = len(_DIGIT_GROUP.findall(raw))
    if groups >= 3:
        return True
    if groups == 1:
        return phonenumbers.is_valid_number(number)
    return _PHONE_CONTEXT.search(before[-PHONE_CONTEXT_CHARACTERS:]) is not None


def _is_inside_word_or_number(text: str, start: int, end: int) -> bool:
    """Return whether a span continues a word (``F1628...``) or a decimal number (``40.79...``)."""
    if start > 0 and text[start - 1].isalnum():
        return True
    if end < len(text) and text[end].isalnum():
        return True
    before = text[start - 2 : start]
    after = text[end : end + 2]
    return (len(before) == 2 and before[1] == "." and before[0].isdigit()) or (
        len(after) == 2 and after[0] == "." and after[1].isdigit()
    )


_FINDERS: Final[dict[str, Callable[[str], Iterator[tuple[int, int]]]]] = {
    "card": _find_cards,
    "iban": _find_ibans,
    "ssn": _find_ssns,
    "email": _find_emails,
    "ip": _find_ips,
    "phone": _find_phones,
}


def detect(text: str, detectors: Collection[str] = DETECTOR_NAMES) -> list[Detection]:
    """Return the non-overlapping detections in ``text``, ordered by position.

    Of two overlapping detections, the one whose detector comes first in ``DETECTOR_NAMES``
    is kept, so a card number is not also reported as a phone number.
    """
    accepted: list[Detection] = []
    for name in DETECTOR_NAMES:
        if name not in detectors:
            continue
        for start, end in _FINDERS[name](text):
            if not any(start < other.end and other.start < end for other in accepted):
                accepted.append(Detection(start, end, name))
    accepted.sort(key=lambda detection: detection.start)
    return accepted
