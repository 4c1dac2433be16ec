"""Client authentication by API key, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from gateway.engine.headers import Headers
from gateway.engine.routing import ClientAuth
from gateway.errors import AuthenticationError


def authenticate(auth: ClientAuth, headers: Headers) -> str:
    """Return the name of the client whose key the request carries.

    Raises ``AuthenticationError`` with the same message for a missing, malformed and wrong key,
    so that the answer does not tell which. Every configured key is compared, whatever matches
    first, so the time taken does not depend on which key matched.
    """
    presented = _presented_key(auth, headers)
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    matched: str | None = None
    for key in auth.keys:
        if hmac.compare_digest(digest, key.sha256) and presented:
            matched = key.name
    if matched is None:
        raise AuthenticationError(f"missing or invalid API key in the {auth.header} header")
    return matched


def _presented_key(auth: ClientAuth, headers: Headers) -> str:
    values = headers.getall(auth.header, [])
    if len(values) != 1:
        return ""
    value = values[0].strip()
    if auth.scheme is None:
        return value
    scheme, _, key = value.partition(" ")
    if scheme.lower() != auth.scheme.lower():
        return ""
    return key.strip()
