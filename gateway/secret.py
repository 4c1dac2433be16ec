"""A wrapper for secrets (API keys, master keys) that keeps them out of logs and tracebacks."""

from __future__ import annotations

import hmac
from typing import Final, NoReturn

_MASK: Final = "***"


class Secret[T: (str, bytes)]:
    """A secret string or byte string whose ``repr`` and ``str`` never show the value.

    Call ``reveal()`` only where the value is used, never to log or format it. Two secrets are
    not compared with ``==``: use ``matches``, which takes constant time.
    """

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def matches(self, candidate: T) -> bool:
        """Return whether ``candidate`` equals the secret, in constant time."""
        # compare_digest accepts str only when it is ASCII, so text is compared as UTF-8.
        secret_bytes = self._value.encode() if isinstance(self._value, str) else self._value
        candidate_bytes = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(secret_bytes, candidate_bytes)

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the value into caches or subprocess arguments unnoticed.
        raise TypeError("a Secret cannot be pickled")
