from __future__ import annotations

from multidict import CIMultiDict

from gateway.engine.headers import client_response_headers, upstream_request_headers


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    headers = CIMultiDict(
        [
            ("Host", "gateway:8080"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "12"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Expect", "100-continue"),
            ("X-Api-Key", "client-secret"),
            ("Accept", "application/json"),
            ("Stripe-Version", "2024-06-20"),
        ]
    )
    relayed = upstream_request_headers(headers, auth_header="x-api-key")
    assert list(relayed.items()) == [
        ("Accept", "application/json"),
        ("Stripe-Version", "2024-06-20"),
    ]


def test_repeated_response_headers_keep_order() -> None:
    headers = CIMultiDict(
        [
            ("Set-Cookie", "a=1"),
            ("Content-Length", "3"),
            ("Set-Cookie", "b=2"),
            ("Connection", "close"),
            ("Set-Cookie", "c=3"),
        ]
    )
    relayed = client_response_headers(headers)
    assert relayed.getall("Set-Cookie") == ["a=1", "b=2", "c=3"]
    assert "Content-Length" not in relayed
    assert "Connection" not in relayed


def test_repeated_fields_share_first_spelling() -> None:
    headers = CIMultiDict([("X-Card", "1"), ("x-card", "2")])
    relayed = upstream_request_headers(headers, auth_header=None)
    assert list(relayed.items()) == [("X-Card", "1"), ("X-Card", "2")]
