from __future__ import annotations

from gateway.engine.paths import PathPattern
from gateway.engine.routing import Connection, Route, RouteMatch, Router


def route(
    name: str, path: str, methods: set[str] | None = None, types: set[str] | None = None
) -> Route:
    return Route(
        name,
        RouteMatch(
            frozenset(methods) if methods else None,
            PathPattern.compile(path),
            frozenset(types) if types else None,
        ),
    )


def connection(name: str, mount: str, *routes: Route) -> Connection:
    return Connection(name=name, upstream="http://127.0.0.1:1", mount=mount, routes=routes)


def test_longest_mount_wins() -> None:
    router = Router(
        [connection("root", "/"), connection("api", "/api"), connection("v2", "/api/v2")]
    )
    cases = {
        "/api/v2/x": ("v2", "/x"),
        "/api/v1/x": ("api", "/v1/x"),
        "/apix": ("root", "/apix"),
        "/": ("root", "/"),
        "/api/./v2/../v2/y": ("v2", "/y"),
    }
    for path, (name, rest) in cases.items():
        found = router.find_connection(path)
        assert found is not None, path
        assert (found.connection.name, found.path) == (name, rest), path


def test_no_mount_means_no_connection() -> None:
    router = Router([connection("stripe", "/stripe")])
    assert router.find_connection("/adyen/v72/payments") is None


def test_first_matching_route_applies() -> None:
    shop = connection(
        "shop",
        "/",
        route("json-post", "/orders", {"POST"}, {"application/json"}),
        route("any-post", "/orders", {"POST"}),
        route("anything", "/**"),
    )
    assert shop.find_route("POST", "/orders", "application/json").name == "json-post"  # type: ignore[union-attr]
    assert shop.find_route("post", "/orders/", "text/plain").name == "any-post"  # type: ignore[union-attr]
    assert shop.find_route("GET", "/orders", None).name == "anything"  # type: ignore[union-attr]


def test_unmatched_route_is_none() -> None:
    shop = connection("shop", "/", route("only", "/orders", {"POST"}))
    assert shop.find_route("GET", "/orders", None) is None
    assert shop.find_route("POST", "/orders/1", None) is None


def test_head_matches_get_route() -> None:
    shop = connection("shop", "/", route("lookup", "/lookup", {"GET"}))
    assert shop.find_route("HEAD", "/lookup", None) is not None
    assert shop.find_route("POST", "/lookup", None) is None


def test_format_suffix_matches_route_without_it() -> None:
    shop = connection("shop", "/", route("checkout", "/api/checkout", {"POST"}))
    assert shop.find_route("POST", "/api/checkout.json", None) is not None
    assert shop.find_route("POST", "/api/checkout.json/x", None) is None
