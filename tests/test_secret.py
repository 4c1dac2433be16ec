from __future__ import annotations

import logging
import pickle

import pytest

from gateway.secret import Secret


@pytest.mark.parametrize("value", ["sk_live_abc123", b"\x01\x02key-bytes"])
def test_secret_hides_value_in_repr_and_str(value: str | bytes) -> None:
    secret = Secret(value)

    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret} {secret!r}" == "*** Secret('***')"
    assert "abc123" not in repr([secret, {"key": secret}])


def test_secret_reveal_returns_value() -> None:
    assert Secret("sk_live_abc123").reveal() == "sk_live_abc123"
    assert Secret(b"\x00\xff").reveal() == b"\x00\xff"


def test_secret_hidden_in_log_arguments(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tests.secret"):
        logging.getLogger("tests.secret").info("client key %s", Secret("sk_live_abc123"))

    assert "sk_live_abc123" not in caplog.text
    assert "***" in caplog.text


@pytest.mark.parametrize(
    ("value", "candidate", "expected"),
    [
        ("sk_live_abc123", "sk_live_abc123", True),
        ("sk_live_abc123", "sk_live_abc124", False),
        ("sk_live_abc123", "sk_live_abc12", False),
        ("clé-ünïcode", "clé-ünïcode", True),
        ("clé-ünïcode", "cle-unicode", False),
        (b"\x00\x01", b"\x00\x01", True),
        (b"\x00\x01", b"\x00\x02", False),
    ],
)
def test_secret_matches(value: str | bytes, candidate: str | bytes, expected: bool) -> None:
    assert Secret(value).matches(candidate) is expected


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("sk_live_abc123"))
