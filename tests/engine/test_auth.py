from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict

from gateway.engine.auth import authenticate, find_client
from gateway.errors import AuthenticationError, ForbiddenError
from gateway.policy.model import Client, ClientKey


def client(name: str, *keys: bytes) -> Client:
    return Client(name, tuple(ClientKey(hashlib.sha256(key).digest()) for key in keys), ("role",))


CLIENTS = {
    "backend": client("backend", b"backend-key-0123456789"),
    "ops": client("ops", b"ops-key-0123456789ab", b"ops-second-key-0123"),
}


def call(
    headers: dict[str, str] | CIMultiDict[str], allowed: tuple[str, ...] = ("backend", "ops")
) -> Client:
    return authenticate("shop", allowed, "Authorization", "Bearer", CIMultiDict(headers), CLIENTS)


def test_bearer_key_names_its_client() -> None:
    assert call({"Authorization": "Bearer ops-key-0123456789ab"}).name == "ops"
    assert call({"Authorization": "bearer backend-key-0123456789"}).name == "backend"
    assert call({"Authorization": "Bearer ops-second-key-0123"}).name == "ops"


def test_plain_header_key() -> None:
    headers = CIMultiDict({"X-Api-Key": "backend-key-0123456789"})
    found = authenticate("shop", ("backend",), "X-Api-Key", None, headers, CLIENTS)
    assert found.name == "backend"


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
        call(headers)
    assert caught.value.message == "missing or invalid API key in the Authorization header"


def test_known_client_not_allowed_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match="'ops' may not call connection 'shop'"):
        call({"Authorization": "Bearer ops-key-0123456789ab"}, allowed=("backend",))


def test_repeated_auth_header_is_rejected() -> None:
    headers = CIMultiDict(
        [("Authorization", "Bearer backend-key-0123456789"), ("Authorization", "x")]
    )
    with pytest.raises(AuthenticationError):
        call(headers)


def test_empty_key_never_matches_hash_of_empty_string() -> None:
    clients = {"empty": client("empty", b"")}
    assert find_client("", clients) is None
