"""Masked and redacted views of a value."""

from __future__ import annotations

from gateway.policy.model import MaskKind, View

REDACTED = "[REDACTED]"


def render(value: str, view: View, mask: MaskKind) -> str:
    """Return the value as ``view`` shows it."""
    if view is View.PLAIN:
        return value
    if view is View.REDACTED:
        return REDACTED
    return mask_value(value, mask)


def mask_value(value: str, mask: MaskKind) -> str:
    match mask:
        case MaskKind.LAST4:
            return _keep_alnum(value, keep_first=0, keep_last=4)
        case MaskKind.FIRST6_LAST4:
            return _keep_alnum(value, keep_first=6, keep_last=4)
        case MaskKind.EMAIL:
            return _mask_email(value)
        case MaskKind.FIRST_LETTER:
            return " ".join(word[:1] + "*" * (len(word) - 1) for word in value.split(" "))
        case MaskKind.FULL:
            return "*" * len(value)


def _keep_alnum(value: str, *, keep_first: int, keep_last: int) -> str:
    """Replace letters and digits with ``*`` except the first and last ones kept.

    Separators stay in place. When too few characters would be hidden (fewer than the kept ones
    plus four), everything is hidden, so a short value is never shown whole.
    """
    positions = [index for index, character in enumerate(value) if character.isalnum()]
    if len(positions) < keep_first + keep_last + 4:
        kept: set[int] = set()
    else:
        kept = set(positions[:keep_first]) | set(positions[len(positions) - keep_last :])
    return "".join(
        character if index in kept or not character.isalnum() else "*"
        for index, character in enumerate(value)
    )


def _mask_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return "*" * len(value)
    return local[0] + "*" * (len(local) - 1) + "@" + domain
