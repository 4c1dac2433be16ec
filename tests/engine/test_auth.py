from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict

from gateway.engine.auth import authenticate
from gateway.engine.routing import ApiKey, ClientAuth
from gateway.errors import AuthenticationError

KEYS = (
    ApiKey("backend", hashlib.sha256(b"backend-key-0123456789").digest()),
    ApiKey("ops", hashlib.sha256(b"ops-key-0123456789ab").digest()),
)
BEARER = ClientAuth("Authorization", "Bearer", KEYS)
HEADER = ClientAuth("X-Api-Key", None, KEYS)


def test_bearer_key_names_its_client() -> None:
    headers = CIMultiDict({"Authorization": "Bearer ops-key-0123456789ab"})
    assert authenticate(BEARER, headers) == "ops"
    headers = CIMultiDict({"Authorization": "bearer backend-key-0123456789"})
    assert authenticate(BEARER, headers) == "backend"


def test_plain_header_key() -> None:
    assert authenticate(HEADER, CIMultiDict({"X-Api-Key": "backend-key-0123456789"})) == "backend"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": "Basic backend-key-0123456789"},
        {"Authorization": "backend-key-0123456789"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_wrong_or_malformed_keys_get_one_answer(headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationError) as caught:
        authenticate(BEARER, CIMultiDict(headers))
    assert caught.value.message == "missing or invalid API key in the Authorization header"


def test_repeated_auth_header_is_rejected() -> None:
    headers = CIMultiDict([("X-Api-Key", "backend-key-0123456789"), ("X-Api-Key", "other")])
    with pytest.raises(AuthenticationError):
        authenticate(HEADER, headers)


def test_empty_key_never_matches_hash_of_empty_string() -> None:
    auth = ClientAuth("X-Api-Key", None, (ApiKey("empty", hashlib.sha256(b"").digest()),))
    with pytest.raises(AuthenticationError):
        authenticate(auth, CIMultiDict({"X-Api-Key": ""}))
