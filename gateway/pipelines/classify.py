"""Classify a column from its header and a sample of its values.

A column gets a class from its header keywords (``SSN``, ``BIRTHDATE``, ``email``), from the
share of sampled values that pass a validator (the Luhn check and issuer ranges for cards,
mod-97 for IBANs), or from both. One value never decides: a validator alone needs
``MIN_VALUES`` values and ``VALIDATOR_SHARE`` of them passing, and a free-text column is
scanned only when ``SCAN_SHARE`` of its values contain a detection.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import phonenumbers

from gateway.pipelines.detectors import (
    PHONE_REGIONS,
    detect,
    is_card_number,
    is_ip_address,
    is_valid_iban,
)

MIN_VALUES: Final = 5
VALIDATOR_SHARE: Final = 0.9
"""Share of non-empty sampled values a validator must accept to classify a column alone."""
KEYWORD_SHARE: Final = 0.5
"""Share a validator must accept when the header keyword already points at the class."""
SCAN_SHARE: Final = 0.1
FREE_TEXT_MIN_LENGTH: Final = 20
"""Average characters per value above which a column with spaces counts as free text."""

_SSN_SHAPE: Final = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}")
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,24}")
_WORDS: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def _has_ssn_shape(value: str) -> bool:
    # Only the shape: test data often uses area numbers that are never issued, such as 999.
    return _SSN_SHAPE.fullmatch(value) is not None


def _is_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None


def _is_phone(value: str) -> bool:
    for region in PHONE_REGIONS[:4]:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ClassRule:
    class_name: str
    keywords: frozenset[str]
    validator: Callable[[str], bool] | None = None
    format_name: str = "uuid"
    validator_alone: bool = False
    """Whether the validator classifies a column whose header has no keyword."""


# Each keyword matches one word of the header, split at non-letters and case changes, so that
# "BIRTHDATE", "birth_date" and "birthDate" all give "birth".
CLASS_RULES: Final = (
    ClassRule(
        "card.pan", frozenset({"card", "pan", "cc", "ccnumber"}), is_card_number, "pan", True
    ),
    ClassRule("person.ssn", frozenset({"ssn", "social"}), _has_ssn_shape),
    ClassRule("bank.iban", frozenset({"iban"}), is_valid_iban, "uuid", True),
    ClassRule("contact.email", frozenset({"email", "mail"}), _is_email, "uuid", True),
    ClassRule("network.ip", frozenset({"ip", "ipv4", "ipv6"}), is_ip_address, "uuid", True),
    ClassRule(
        "contact.phone",
        frozenset({"phone", "tel", "telephone", "mobile", "cell", "fax"}),
        _is_phone,
    ),
    ClassRule("person.birthdate", frozenset({"birth", "birthdate", "dob"})),
    ClassRule(
        "person.name",
        frozenset(
            {"first", "last", "given", "family", "surname", "maiden", "name", "fullname"}
            | {"firstname", "lastname"}
        ),
    ),
    ClassRule("person.address", frozenset({"address", "street", "addr", "address1", "address2"})),
    ClassRule("person.drivers_license", frozenset({"drivers", "driver", "license", "licence"})),
    ClassRule("person.passport", frozenset({"passport"})),
    ClassRule("person.id", frozenset({"patient", "member", "memberid", "mrn"})),
)

# Headers that contain a keyword but name something that is not about a person.
_NOT_PERSONAL: Final = frozenset({"organization", "provider", "payer", "merchant"})


@dataclass(frozen=True, slots=True)
class ColumnClass:
    """A proposed rule for one column, with the evidence for it."""

    column: str
    action: str
    """``tokenize`` (whole value) or ``scan`` (free text)."""
    class_name: str
    token_format: str
    evidence: str
    detectors: tuple[str, ...] = ()


def header_words(header: str) -> set[str]:
    """Return the lowercase words of a header: ``birthDate`` gives {"birth", "date"}."""
    words = {word.lower() for word in _WORDS.findall(header)}
    compact = re.sub(r"[^a-z0-9]", "", header.lower())
    return words | {compact}


def classify_column(
    column: str, values: Sequence[str], header: str | None = None
) -> ColumnClass | None:
    """Return the rule to propose for a column, or None when it looks not sensitive.

    ``header`` is the name whose words are matched against keywords, by default ``column``.
    For a JSONPath it is the last member name, so that ``$.patient.lat`` is not a patient id.
    """
    sample = [value for value in values if value.strip()]
    words = header_words(column if header is None else header)
    personal = not words & _NOT_PERSONAL

    for rule in CLASS_RULES:
        keyword = personal and bool(words & rule.keywords)
        if rule.validator is None:
            if keyword:
                return ColumnClass(
                    column,
                    "tokenize",
                    rule.class_name,
                    rule.format_name,
                    f"header keyword {sorted(words & rule.keywords)[0]!r}",
                )
            continue
        passed = sum(1 for value in sample if rule.validator(value.strip()))
        share = passed / len(sample) if sample else 0.0
        evidence = f"{passed} of {len(sample)} sampled values pass the {rule.class_name} check"
        if keyword and (not sample or share >= KEYWORD_SHARE):
            return ColumnClass(
                column,
                "tokenize",
                rule.class_name,
                rule.format_name,
                f"header keyword and {evidence}",
            )
        if rule.validator_alone and len(sample) >= MIN_VALUES and share >= VALIDATOR_SHARE:
            return ColumnClass(column, "tokenize", rule.class_name, rule.format_name, evidence)
    return _free_text(column, sample)


def _free_text(column: str, sample: Sequence[str]) -> ColumnClass | None:
    if len(sample) < MIN_VALUES:
        return None
    if sum(len(value) for value in sample) / len(sample) < FREE_TEXT_MIN_LENGTH:
        return None
    if not any(" " in value for value in sample):
        return None
    found: Counter[str] = Counter()
    with_detection = 0
    for value in sample:
        detections = detect(value)
        if detections:
            with_detection += 1
            found.update({detection.detector for detection in detections})
    if with_detection / len(sample) < SCAN_SHARE:
        return None
    detectors = tuple(sorted(found))
    evidence = f"free text; {with_detection} of {len(sample)} sampled values contain " + ", ".join(
        detectors
    )
    return ColumnClass(column, "scan", "", "", evidence, detectors)
