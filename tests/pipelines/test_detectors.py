"""Detectors on named cases: what each finds, what it must leave alone, and precedence."""

from __future__ import annotations

import pytest

from gateway.pipelines.detectors import (
    card_issuer,
    detect,
    is_card_number,
    is_issued_ssn,
    is_valid_iban,
)
from tests.pipelines.conftest import DATA, read_csv


def found(text: str, detector: str | None = None) -> list[str]:
    return [
        text[item.start : item.end]
        for item in detect(text)
        if detector is None or item.detector == detector
    ]


def test_every_published_test_card_is_found() -> None:
    cards = read_csv(DATA / "test_card_numbers.csv")
    assert len(cards) == 43
    for card in cards:
        text = f"paid with {card['pan']} yesterday"
        expected = [card["pan"]] if card["luhn_valid"] == "True" else []
        assert found(text, "card") == expected, card["brand_or_scenario"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("card 4242 4242 4242 4242 ok", ["4242 4242 4242 4242"], id="spaces"),
        pytest.param("card 4242-4242-4242-4242.", ["4242-4242-4242-4242"], id="dashes"),
        pytest.param("mc 2223003122003222", ["2223003122003222"], id="mastercard-2-series"),
        pytest.param("amex 378282246310005", ["378282246310005"], id="amex-15"),
        pytest.param("n 4242424242424241", [], id="luhn-fails"),
        pytest.param("n 1234567812345670", [], id="luhn-passes-no-issuer"),
        pytest.param("lat 40.79815162129809", [], id="latitude"),
        pytest.param("lon -96.67877314083218,", [], id="longitude"),
        pytest.param("id A4242424242424242", [], id="inside-word"),
        pytest.param("v 4242424242424242.5", [], id="integer-part-of-decimal"),
    ],
)
def test_card_cases(text: str, expected: list[str]) -> None:
    assert found(text, "card") == expected


def test_issuer_ranges() -> None:
    assert card_issuer("2221000000000009") == "mastercard"
    assert card_issuer("2720990000000007") == "mastercard"
    assert card_issuer("2721000000000004") is None
    assert card_issuer("4111111111111") == "visa"
    assert not is_card_number("411111111111111")  # Visa numbers have 13, 16 or 19 digits


@pytest.mark.parametrize(
    ("area", "group", "serial", "issued"),
    [
        ("123", "45", "6789", True),
        ("000", "45", "6789", False),
        ("666", "45", "6789", False),
        ("999", "49", "3983", False),
        ("123", "00", "6789", False),
        ("123", "45", "0000", False),
    ],
)
def test_ssn_ranges(area: str, group: str, serial: str, issued: bool) -> None:
    assert is_issued_ssn(area, group, serial) is issued


@pytest.mark.parametrize(
    ("text", "detector", "expected"),
    [
        pytest.param("SSN 588-46-6702.", "ssn", ["588-46-6702"], id="ssn"),
        pytest.param("SSN 999-49-3983", "ssn", [], id="ssn-area-never-issued"),
        pytest.param(
            "mail jo.doe+x@mail.example.com!", "email", ["jo.doe+x@mail.example.com"], id="email"
        ),
        pytest.param(
            "IBAN GB82 WEST 1234 5698 7654 32 paid",
            "iban",
            ["GB82 WEST 1234 5698 7654 32"],
            id="iban-spaced",
        ),
        pytest.param(
            "iban gb42nawi04454264788619", "iban", ["gb42nawi04454264788619"], id="iban-lowercase"
        ),
        pytest.param("IBAN GB83WEST12345698765432", "iban", [], id="iban-bad-check-digits"),
        pytest.param("from 192.168.1.20 to", "ip", ["192.168.1.20"], id="ipv4"),
        pytest.param("version 1.2.3.4.5", "ip", [], id="ipv4-in-version"),
        pytest.param("host 999.1.1.1", "ip", [], id="ipv4-out-of-range"),
        pytest.param("v6 2001:db8::8a2e:370:7334 up", "ip", ["2001:db8::8a2e:370:7334"], id="ipv6"),
        pytest.param("at 10:15:00 today", "ip", [], id="time-is-not-ipv6"),
        pytest.param("call +1-903-140-4508 now", "phone", ["+1-903-140-4508"], id="phone-plus"),
        pytest.param("call (579)888-3058", "phone", ["(579)888-3058"], id="phone-parentheses"),
        pytest.param("tel 01.84.17.61.18", "phone", ["01.84.17.61.18"], id="phone-groups"),
        pytest.param("phone 467 3395", "phone", ["467 3395"], id="phone-two-groups-context"),
        pytest.param("Apt 370 3911 Fourth Avenue", "phone", [], id="address-numbers"),
        pytest.param("lat 40.79815162129809", "phone", [], id="phone-not-in-float"),
    ],
)
def test_detector_cases(text: str, detector: str, expected: list[str]) -> None:
    assert found(text, detector) == expected


def test_iban_validator() -> None:
    assert is_valid_iban("DE89 3704 0044 0532 0130 00")
    assert not is_valid_iban("DE89 3704 0044 0532 0130 0")  # one digit short for Germany


def test_card_wins_over_phone() -> None:
    detections = detect("call 4242 4242 4242 4242")
    assert [(item.detector, item.start, item.end) for item in detections] == [("card", 5, 24)]


def test_detections_are_ordered_and_limited() -> None:
    text = "mail a@b.co or call +44 20 7946 0958, card 4242424242424242"
    assert [item.detector for item in detect(text)] == ["email", "phone", "card"]
    assert [item.detector for item in detect(text, ["email"])] == ["email"]
