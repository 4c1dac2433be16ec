from __future__ import annotations

import pytest

from gateway.policy.masks import REDACTED, mask_value, render
from gateway.policy.model import MaskKind, View


@pytest.mark.parametrize(
    ("value", "mask", "masked"),
    [
        ("4242424242424242", MaskKind.LAST4, "************4242"),
        ("4242 4242 4242 4242", MaskKind.LAST4, "**** **** **** 4242"),
        ("4242424242424242", MaskKind.FIRST6_LAST4, "424242******4242"),
        ("36227206271667", MaskKind.FIRST6_LAST4, "362272****1667"),
        ("12345678", MaskKind.FIRST6_LAST4, "********"),
        ("123", MaskKind.LAST4, "***"),
        ("jo.doe@example.com", MaskKind.EMAIL, "j*****@example.com"),
        ("not-an-email", MaskKind.EMAIL, "************"),
        ("Jo Doe", MaskKind.FIRST_LETTER, "J* D**"),
        ("secret", MaskKind.FULL, "******"),
    ],
)
def test_mask_value(value: str, mask: MaskKind, masked: str) -> None:
    assert mask_value(value, mask) == masked


def test_short_value_is_never_shown_whole() -> None:
    # Keeping four of five digits would show almost all of them; all are hidden instead.
    assert mask_value("12345", MaskKind.LAST4) == "*****"


def test_views() -> None:
    assert render("4242424242424242", View.PLAIN, MaskKind.LAST4) == "4242424242424242"
    assert render("4242424242424242", View.MASKED, MaskKind.LAST4) == "************4242"
    assert render("4242424242424242", View.REDACTED, MaskKind.LAST4) == REDACTED
