"""Client authentication by API key, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.engine.headers import Headers
from gateway.errors import AuthenticationError, ForbiddenError
from gateway.policy.model import Client


def find_client(presented_key: str, clients: Mapping[str, Client]) -> Client | None:
    """Return the client whose key was presented, or None.

    Every key of every client is compared, whatever matches first, so the time taken does not
    tell which key or client matched, nor whether a client name exists.
    """
    digest = hashlib.sha256(presented_key.encode("utf-8", "surrogateescape")).digest()
    matched: Client | None = None
    for client in clients.values():
        for key in client.keys:
            if hmac.compare_digest(digest, key.sha256) and presented_key:
                matched = client
    return matched


def presented_key(headers: Headers, header: str, scheme: str | None) -> str:
    """Return the key in ``header`` (after ``scheme`` when set), or "" when there is none."""
    values = headers.getall(header, [])
    if len(values) != 1:
        return ""
    value = values[0].strip()
    if scheme is None:
        return value
    given_scheme, _, key = value.partition(" ")
    if given_scheme.lower() != scheme.lower():
        return ""
    return key.strip()


def authenticate(
    connection: str,
    allowed: tuple[str, ...],
    header: str,
    scheme: str | None,
    headers: Headers,
    clients: Mapping[str, Client],
) -> Client:
    """Return the client that called ``connection``.

    Raises ``AuthenticationError`` (401) with one message for a missing, malformed and wrong key,
    so that the response does not tell which, and ``ForbiddenError`` (403) for a known client
    that the connection does not allow.
    """
    client = find_client(presented_key(headers, header, scheme), clients)
    if client is None:
        raise AuthenticationError(f"missing or invalid API key in the {header} header")
    if client.name not in allowed:
        raise ForbiddenError(f"client {client.name!r} may not call connection {connection!r}")
    return client
