"""Check clients, classes, roles and connections against each other, and give each field
operation its data class.

Mistakes that would make the gateway deny or reveal the wrong things are errors. A class that
no connection may reveal is only a warning, because the vault API can still detokenize it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence

from gateway.engine.routing import Action, Connection, Operation, Route
from gateway.errors import ConfigProblem
from gateway.policy.model import PolicySet
from gateway.tokens.formats import get_format

type Where = tuple[str, int | None]
"""A file and line, for messages."""


@dataclasses.dataclass(frozen=True, slots=True)
class PolicySources:
    """The file and line of each client, class and role: ``(kind, name) -> (file, line)``."""

    places: dict[tuple[str, str], Where]

    def of(self, kind: str, name: str) -> Where:
        return self.places.get((kind, name), ("configuration", None))


def check_policy(
    policy: PolicySet,
    sources: PolicySources,
    connections: Sequence[Connection],
    problems: list[ConfigProblem],
    warnings: list[ConfigProblem],
) -> list[Connection]:
    """Report every policy mistake and return the connections with resolved operations."""
    connection_names = {connection.name for connection in connections}
    _check_clients(policy, sources, problems)
    _check_roles(policy, sources, problems)
    _check_classes(policy, sources, connection_names, problems, warnings)

    resolved: list[Connection] = []
    for connection in connections:
        _check_connection_clients(connection, policy, problems)
        routes = tuple(
            _resolve_route(route, connection, policy, problems) for route in connection.routes
        )
        resolved.append(dataclasses.replace(connection, routes=routes))
        _warn_unrevealable(connection, policy, warnings)
    return resolved


def _problem(where: Where, message: str, hint: str | None = None) -> ConfigProblem:
    return ConfigProblem(where[0], where[1], message, hint)


def _check_clients(
    policy: PolicySet, sources: PolicySources, problems: list[ConfigProblem]
) -> None:
    owners: dict[bytes, str] = {}
    for client in policy.clients.values():
        where = sources.of("client", client.name)
        for role in client.roles:
            if role not in policy.roles:
                problems.append(
                    _problem(
                        where,
                        f"client {client.name!r} has unknown role {role!r}",
                        "define it under roles",
                    )
                )
        for key in client.keys:
            other = owners.setdefault(key.sha256, client.name)
            if other != client.name:
                problems.append(
                    _problem(
                        where,
                        f"clients {other!r} and {client.name!r} share a key",
                        "give every client its own key",
                    )
                )


def _check_roles(policy: PolicySet, sources: PolicySources, problems: list[ConfigProblem]) -> None:
    for role in policy.roles.values():
        where = sources.of("role", role.name)
        for grant in role.grants:
            for class_name in sorted(grant.classes - {"*"}):
                if class_name not in policy.classes:
                    problems.append(
                        _problem(
                            where,
                            f"role {role.name!r} grants on unknown class {class_name!r}",
                            "define it under classes",
                        )
                    )


def _check_classes(
    policy: PolicySet,
    sources: PolicySources,
    connection_names: set[str],
    problems: list[ConfigProblem],
    warnings: list[ConfigProblem],
) -> None:
    for data_class in policy.classes.values():
        where = sources.of("class", data_class.name)
        for connection in sorted(data_class.reveal_to - connection_names):
            close = difflib.get_close_matches(connection, sorted(connection_names), n=1)
            problems.append(
                _problem(
                    where,
                    f"class {data_class.name!r} reveals to unknown connection {connection!r}",
                    f"did you mean {close[0]!r}?"
                    if close
                    else "name a connection declared in a route file",
                )
            )
        if not data_class.reveal_to:
            warnings.append(
                _problem(
                    where,
                    f"class {data_class.name!r} is revealed to no connection",
                    "only the vault API can detokenize it; add reveal_to if an upstream needs it",
                )
            )


def _check_connection_clients(
    connection: Connection, policy: PolicySet, problems: list[ConfigProblem]
) -> None:
    if connection.auth is None:
        return
    for client in connection.auth.clients:
        if client not in policy.clients:
            problems.append(
                ConfigProblem(
                    connection.source,
                    None,
                    f"connection {connection.name!r} allows unknown client {client!r}",
                    "define it under clients in the main configuration",
                )
            )


def _resolve_route(
    route: Route, connection: Connection, policy: PolicySet, problems: list[ConfigProblem]
) -> Route:
    request = tuple(
        _resolve_operation(op, route, connection, policy, problems) for op in route.request
    )
    response = tuple(
        _resolve_operation(op, route, connection, policy, problems) for op in route.response
    )
    return dataclasses.replace(route, request=request, response=response)


def _resolve_operation(
    operation: Operation,
    route: Route,
    connection: Connection,
    policy: PolicySet,
    problems: list[ConfigProblem],
) -> Operation:
    """Give a tokenize its class's format, determinism and ttl; detokenizes stay as they are."""
    if operation.action is Action.DETOKENIZE:
        return operation
    where: Where = (connection.source, operation.line or None)
    class_name = operation.class_name or get_format(operation.format).default_class
    data_class = policy.classes.get(class_name)
    if data_class is None:
        implied = (
            "" if operation.class_name else f" (the default class of format {operation.format})"
        )
        problems.append(
            _problem(
                where,
                f"route {route.name!r} tokenizes into unknown class {class_name!r}{implied}",
                "define the class under classes, or name one with class:",
            )
        )
        return operation

    settings = {
        "format": (operation.format, data_class.format),
        "deterministic": (operation.deterministic, data_class.deterministic),
        "ttl": (operation.ttl, data_class.ttl),
    }
    for key, (given, fixed) in settings.items():
        if key in operation.explicit and given != fixed:
            problems.append(
                _problem(
                    where,
                    f"route {route.name!r} sets {key} {given!r}, but class "
                    f"{class_name!r} fixes it to {fixed!r}",
                    f"remove {key} from the operation, or change the class",
                )
            )
    return dataclasses.replace(
        operation,
        class_name=class_name,
        format=data_class.format,
        deterministic=data_class.deterministic,
        ttl=data_class.ttl,
    )


def _warn_unrevealable(
    connection: Connection, policy: PolicySet, warnings: list[ConfigProblem]
) -> None:
    detokenizing = any(
        op.action is Action.DETOKENIZE for route in connection.routes for op in route.request
    )
    revealable = any(
        connection.name in data_class.reveal_to for data_class in policy.classes.values()
    )
    if detokenizing and not revealable:
        warnings.append(
            ConfigProblem(
                connection.source,
                None,
                f"connection {connection.name!r} detokenizes requests, but no class is "
                "revealed to it, so every such request is refused",
                f"add {connection.name} to the reveal_to of the classes it sends",
            )
        )
