"""Connections, routes and field operations, and how a request finds its route.

A connection is one upstream with its routes, mounted at a path prefix of the reverse listener.
Within a connection the first route whose ``match`` fits the request applies. These values are
built once from the route files (``gateway.config.connections``) and never change.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.engine.paths import (
    Mount,
    PathPattern,
    matching_key,
    normalize_path,
    without_format_suffix,
)
from gateway.engine.selectors import FieldSelector

if TYPE_CHECKING:
    from gateway.engine.steps import FunctionStep


class Action(enum.Enum):
    TOKENIZE = "tokenize"
    DETOKENIZE = "detokenize"


@dataclass(frozen=True, slots=True)
class Operation:
    """One field rule: which field, what to do with it, and for tokenize which token.

    Once the configuration is loaded, ``class_name`` names the data class of the field, and
    ``format``, ``deterministic`` and ``ttl`` are that class's.
    """

    selector: FieldSelector
    action: Action
    format: str = "uuid"
    deterministic: bool = False
    ttl: float | None = None
    required: bool = False
    class_name: str | None = None
    line: int = field(default=0, compare=False)
    """Line of the operation in its route file, for messages."""
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    """Which of format, deterministic and ttl the route file set itself."""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    methods: frozenset[str] | None
    """Upper-case methods, or None for any."""
    path: PathPattern
    content_types: frozenset[str] | None = None
    """Media types without parameters, lower case, or None for any."""

    def fits(self, method: str, path_key: str, media_type: str | None) -> bool:
        if self.methods is not None and not self._allows(method.upper()):
            return False
        if not self.path.matches(path_key):
            return False
        return self.content_types is None or media_type in self.content_types

    def _allows(self, method: str) -> bool:
        assert self.methods is not None
        # Web frameworks run GET handlers for HEAD (RFC 9110, 9.3.2), so a GET route covers it.
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch
    request: tuple[Operation, ...] = ()
    response: tuple[Operation, ...] = ()
    request_functions: tuple[FunctionStep, ...] = ()
    """Function steps of the request phase; each one's ``position`` places it among ``request``."""
    response_functions: tuple[FunctionStep, ...] = ()
    upstream: str | None = None
    """Base URL for this route's requests instead of the connection's, such as a second
    provider of a connection that reshapes one request for several providers."""

    @property
    def has_steps(self) -> bool:
        """Tell whether the route changes its messages at all; without steps it streams."""
        return bool(
            self.request or self.response or self.request_functions or self.response_functions
        )


class UnmatchedPolicy(enum.Enum):
    RELAY = "relay"
    """Relay a request that matches no route unchanged, as VGS and Skyflow do."""
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Client authentication of a connection: the clients that may call it, by API key.

    The key travels in ``header``; with ``scheme`` set (such as ``Bearer``) the header value is
    ``<scheme> <key>``. The header is removed before the request is relayed.
    """

    header: str
    scheme: str | None
    clients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """Extra TLS settings for a connection's upstream, on top of the system trust store."""

    ca_file: Path | None = None
    """A PEM bundle of CA certificates trusted in addition to the system store."""
    client_cert: Path | None = None
    """A PEM client certificate for mutual TLS; the key is in it unless ``client_key`` is set."""
    client_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Connection:
    name: str
    upstream: str
    """Base URL such as ``https://api.stripe.com`` or ``http://127.0.0.1:3000/base``."""
    mount: str
    routes: tuple[Route, ...]
    unmatched: UnmatchedPolicy = UnmatchedPolicy.RELAY
    auth: ClientAuth | None = None
    case_sensitive_paths: bool = False
    source: str = ""
    """The route file this connection came from, for messages."""
    hosts: tuple[str, ...] = ()
    """Host names whose traffic the forward proxy intercepts for this connection, lower case."""
    upstream_tls: UpstreamTls | None = None

    def find_route(self, method: str, path: str, media_type: str | None) -> Route | None:
        """Return the first route that fits, given the path below the mount.

        A path with a format suffix (``/orders.json``) also matches the route of the path
        without it.
        """
        key = matching_key(path, case_sensitive=self.case_sensitive_paths)
        keys = [key]
        stripped = without_format_suffix(key)
        if stripped is not None:
            keys.append(stripped)
        for route in self.routes:
            if any(route.match.fits(method, candidate, media_type) for candidate in keys):
                return route
        return None


@dataclass(frozen=True, slots=True)
class MountMatch:
    connection: Connection
    path: str
    """The normalized path below the mount, which is what is relayed."""


class Router:
    """Finds the connection for a request path on the reverse listener: the longest mount wins."""

    def __init__(self, connections: Sequence[Connection]) -> None:
        mounts = [
            (
                Mount.compile(connection.mount, case_sensitive=connection.case_sensitive_paths),
                connection,
            )
            for connection in connections
        ]
        self._mounts = sorted(mounts, key=lambda item: len(item[0].segments), reverse=True)

    @property
    def connections(self) -> tuple[Connection, ...]:
        return tuple(connection for _, connection in self._mounts)

    def find_connection(self, raw_path: str) -> MountMatch | None:
        path = normalize_path(raw_path)
        segments = path.split("/")
        for mount, connection in self._mounts:
            rest = mount.strip(path, segments)
            if rest is not None:
                return MountMatch(connection, rest)
        return None


def detokenizes(route: Route) -> bool:
    """Tell whether a route detokenizes in either phase."""
    return any(op.action is Action.DETOKENIZE for op in (*route.request, *route.response))


def reveals_to_caller(route: Route) -> bool:
    """Tell whether a route sends plaintext back to its caller (detokenize in the response)."""
    return any(operation.action is Action.DETOKENIZE for operation in route.response)


__all__ = [
    "Action",
    "ClientAuth",
    "Connection",
    "MountMatch",
    "Operation",
    "Route",
    "RouteMatch",
    "Router",
    "UnmatchedPolicy",
    "UpstreamTls",
    "detokenizes",
    "reveals_to_caller",
]
