"""mitmproxy's outputs made safe: log lines redacted, error bodies without the request's bytes."""

from __future__ import annotations

import json

import pytest

from gateway.proxy.forward.mitm import error_body, redact


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Bad HTTP request line: b'GET /?card=4242424242424242 HTTP/1.1'",
            "Bad HTTP request line: [redacted]",
        ),
        ('Invalid header line: b"X-Card: 4242"', "Invalid header line: [redacted]"),
        ("value 4242 4242 4242 4242 in text", "value [redacted] in text"),
        ("mail jo@example.com", "mail [redacted]"),
        (
            "The client does not trust the proxy's certificate for api.stripe.com",
            "The client does not trust the proxy's certificate for api.stripe.com",
        ),
    ],
    ids=["bytes-repr", "double-quoted", "digit-run", "email", "apostrophe"],
)
def test_redact(message: str, expected: str) -> None:
    assert redact(message) == expected


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request"), (413, "body_too_large"), (502, "upstream_response_invalid")],
)
def test_error_body_names_the_kind(status: int, error_type: str) -> None:
    assert json.loads(error_body(status))["error"]["type"] == error_type
