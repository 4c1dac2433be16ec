"""Audit events as the gateway produces them, and the interface of the places they go.

An event never carries a value or a token: the token is named by a keyed fingerprint (the
first bytes of its HMAC lookup key), which the store and the logs use too.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    """A policy, an authentication check or a rate limit refused the operation."""
    FAILED = "failed"
    """The operation was allowed but did not succeed, such as an unknown token."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str
    """``tokenize``, ``detokenize``, ``delete``, ``erase`` or ``authenticate``."""
    outcome: Outcome
    client: str | None
    """The authenticated client, or None on a public connection or before authentication."""
    connection: str | None
    """The connection of a proxied request, or None for a vault API call."""
    operation: str
    """The route name, or the vault API call such as ``POST /v1/detokenize``."""
    class_name: str | None = None
    token_fingerprint: str | None = None
    view: str | None = None
    reason: str | None = None
    """Why the operation was denied or failed; a fixed text that quotes no value."""


class AuditSink(Protocol):
    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Append the events; return once they are written where the sink promises.

        Raises ``AuditUnavailableError`` when they cannot be written, so that the caller can
        refuse the operation instead of performing it unrecorded.
        """
        ...
