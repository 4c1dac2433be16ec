from __future__ import annotations

import pytest

from gateway.engine.paths import PathPattern, matching_key, normalize_path, strip_mount


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/api/checkout", "/api/checkout"),
        ("/api/%63heckout", "/api/checkout"),
        ("/api//checkout", "/api/checkout"),
        ("/api/./checkout", "/api/checkout"),
        ("/api/x/../checkout", "/api/checkout"),
        ("/../../api/checkout", "/api/checkout"),
        ("/%2e%2e/api/checkout", "/api/checkout"),
        ("/api/checkout/", "/api/checkout/"),
        ("/a%2Fb", "/a/b"),
        ("/a%5cb", "/a/b"),
        ("/a\\b", "/a/b"),
        ("/reveal/admin%2F..%2Fcards", "/reveal/cards"),
        ("/a%20b", "/a%20b"),
        ("", "/"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    "variant",
    [
        "/api/checkout",
        "/API/Checkout",
        "/api/checkout/",
        "/api/checkout;jsessionid=abc",
        "/api%2Fcheckout",
        "/api/%63heckout",
        "//api///checkout",
    ],
)
def test_path_variants_match_route(variant: str) -> None:
    # Every spelling a backend might route to /api/checkout must match the route too.
    pattern = PathPattern.compile("/api/checkout")
    assert pattern.matches(matching_key(normalize_path(variant), case_sensitive=False))


def test_case_sensitive_pattern() -> None:
    pattern = PathPattern.compile("/api/checkout", case_sensitive=True)
    assert pattern.matches(matching_key("/api/checkout", case_sensitive=True))
    assert not pattern.matches(matching_key("/API/checkout", case_sensitive=True))


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/v{version}/payments", "/v72/payments", True),
        ("/v{version}/payments", "/v/payments", False),
        ("/v{version}/payments", "/v72/payments/details", False),
        ("/v1/customers/{id}", "/v1/customers/cus_123", True),
        ("/v1/customers/{id}", "/v1/customers", False),
        ("/v1/*/sources", "/v1/cus_1/sources", True),
        ("/v1/**", "/v1", True),
        ("/v1/**", "/v1/a/b/c", True),
        ("/v1/**", "/v10", False),
        ("/**", "/", True),
        ("/", "/", True),
        ("/", "/a", False),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert (
        PathPattern.compile(pattern).matches(matching_key(path, case_sensitive=False)) is expected
    )


@pytest.mark.parametrize("pattern", ["v1/x", "/a/**/b", "/a**", "/{1x}", "/{open"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        PathPattern.compile(pattern)


@pytest.mark.parametrize(
    ("path", "mount", "rest"),
    [
        ("/stripe/v1/tokens", "/stripe", "/v1/tokens"),
        ("/stripe", "/stripe", "/"),
        ("/Stripe/v1", "/stripe", "/v1"),
        ("/stripes/v1", "/stripe", None),
        ("/a/b/c", "/a/b", "/c"),
        ("/x", "/", "/x"),
        ("/api/v1", "/api/", "/v1"),
    ],
)
def test_strip_mount(path: str, mount: str, rest: str | None) -> None:
    assert strip_mount(path, mount, case_sensitive=False) == rest
