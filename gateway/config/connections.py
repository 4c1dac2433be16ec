"""Build connections from route files, reporting each mistake with its file and line.

A route file declares one connection: its name, upstream, mount, optional client
authentication, and its routes with their field operations. See ``routes/`` for examples.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.fields import Section
from gateway.config.yamlsource import YamlList, YamlMap, load_yaml_file
from gateway.engine.jsonpath import JsonPathSyntaxError, parse_json_path
from gateway.engine.paths import PathPattern
from gateway.engine.routing import (
    Action,
    ClientAuth,
    Connection,
    Operation,
    Route,
    RouteMatch,
    UnmatchedPolicy,
    UpstreamTls,
    detokenizes,
    reveals_to_caller,
)
from gateway.engine.selectors import (
    FieldSelector,
    FormSelector,
    HeaderSelector,
    JsonSelector,
    MultipartSelector,
    QuerySelector,
)
from gateway.engine.steps import FunctionStep
from gateway.errors import ConfigError, ConfigProblem
from gateway.tokens.formats import format_names

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD = re.compile(r"^[A-Z]+$")
# A DNS name as CONNECT and Host carry it: dot-separated labels of letters, digits and '-'.
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_SELECTOR_KEYS = ("json", "form", "multipart", "header", "query")
_OPERATION_KEYS = (*_SELECTOR_KEYS, "action", "format", "deterministic", "ttl", "required", "class")
# Headers that the relay itself sets or removes; a field rule on them would be overwritten.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-encoding",
        "content-type",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def load_connection_file(
    path: Path, environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None
) -> Connection:
    """Read one route file; raise ``ConfigError`` listing every problem in it.

    Relative file names in it (``upstream_ca``, ``client_cert``, ``client_key``) are resolved
    against ``base_dir``, the directory of the main configuration file. Without ``base_dir``
    they are resolved against the route file's own directory.
    """
    document = load_yaml_file(path, environ)
    problems: list[ConfigProblem] = []
    file = str(path)
    section = Section.of(document, file, problems, "", 1)
    connection = _build_connection(section, file, base_dir or path.parent) if section else None
    if problems or connection is None:
        raise ConfigError(problems)
    return connection


def _build_connection(section: Section, file: str, base_dir: Path) -> Connection | None:
    section.check_keys(
        (
            "connection",
            "upstream",
            "mount",
            "unmatched",
            "auth",
            "case_sensitive_paths",
            "hosts",
            "upstream_ca",
            "client_cert",
            "client_key",
            "routes",
        )
    )
    name = section.string("connection", required=True) or ""
    if name and not _NAME.match(name):
        section.problem(
            "connection",
            f"connection name {name!r} is not valid",
            "use letters, digits, '_', '.' and '-'",
        )
    upstream = _upstream(section)
    mount = _mount(section)
    hosts = _hosts(section)
    upstream_tls = _upstream_tls(section, base_dir)

    unmatched_text = section.string("unmatched", "relay") or "relay"
    try:
        unmatched = UnmatchedPolicy(unmatched_text)
    except ValueError:
        section.problem("unmatched", f"unmatched must be relay or reject, not {unmatched_text!r}")
        unmatched = UnmatchedPolicy.RELAY

    auth_section = section.section("auth")
    auth = _client_auth(auth_section) if auth_section else None
    case_sensitive = section.boolean("case_sensitive_paths", False)
    routes_with_lines = _routes(section, case_sensitive)
    routes = [route for route, _ in routes_with_lines]

    for route, line in routes_with_lines:
        if detokenizes(route) and auth is None:
            # A public connection (a checkout page) may only tokenize: anyone who can reach it
            # could otherwise have originals revealed, to themselves or to the upstream.
            target = "the caller" if reveals_to_caller(route) else "the upstream"
            section.problems.append(
                ConfigProblem(
                    file,
                    line,
                    f"route {route.name!r} detokenizes, which sends plaintext to {target}, but "
                    f"connection {name!r} has no auth section, so anyone could call it",
                    "add auth: {clients: [backend]}, or remove the detokenize operations",
                )
            )
    return Connection(
        name=name,
        upstream=upstream,
        mount=mount,
        routes=tuple(routes),
        unmatched=unmatched,
        auth=auth,
        case_sensitive_paths=case_sensitive,
        source=file,
        hosts=hosts,
        upstream_tls=upstream_tls,
    )


def _upstream(section: Section, *, required: bool = True) -> str:
    upstream = section.string("upstream", required=required) or ""
    if not upstream:
        return ""
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        section.problem(
            "upstream", f"upstream {upstream!r} is not an http:// or https:// URL with a host"
        )
    elif parts.query or parts.fragment or parts.username or parts.password:
        section.problem("upstream", "upstream must not contain a query, a fragment or credentials")
    return upstream.rstrip("/")


def _mount(section: Section) -> str:
    mount = section.string("mount", "/") or "/"
    if not mount.startswith("/"):
        section.problem("mount", f"mount {mount!r} must start with '/'", f"write /{mount}")
    elif any(character in mount for character in "?#{}*"):
        section.problem("mount", f"mount {mount!r} must be a plain path prefix without patterns")
    return mount


def _hosts(section: Section) -> tuple[str, ...]:
    hosts: list[str] = []
    for text in section.string_list("hosts", []):
        host = text.strip().lower().removesuffix(".")
        if not _HOST_NAME.match(host):
            section.problem(
                "hosts",
                f"hosts entry {text!r} is not a host name",
                "write the name alone, without scheme or port, such as api.stripe.com",
            )
        elif host in hosts:
            section.problem("hosts", f"host {host} is listed twice")
        else:
            hosts.append(host)
    return tuple(hosts)


def _optional_path(section: Section, key: str, base_dir: Path) -> Path | None:
    # An empty value, such as ${VARIABLE:-} with the variable unset, means none.
    text = (section.string(key) or "").strip()
    if not text:
        return None
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        section.problem(key, f"{key} {path} is not a readable file")
    return path


def _upstream_tls(section: Section, base_dir: Path) -> UpstreamTls | None:
    ca_file = _optional_path(section, "upstream_ca", base_dir)
    client_cert = _optional_path(section, "client_cert", base_dir)
    client_key = _optional_path(section, "client_key", base_dir)
    if client_key is not None and client_cert is None:
        section.problem("client_key", "client_key needs client_cert", "add client_cert: FILE.pem")
    if ca_file is None and client_cert is None:
        return None

    # Loading the files once here reports a bad PEM file at start-up, with its line.
    context = ssl.create_default_context()
    try:
        if ca_file is not None and ca_file.is_file():
            context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        section.problem(
            "upstream_ca", f"upstream_ca {ca_file} holds no valid PEM certificate: {exc.reason}"
        )
    try:
        key_readable = client_key is None or client_key.is_file()
        if client_cert is not None and client_cert.is_file() and key_readable:
            context.load_cert_chain(client_cert, client_key)
    except ssl.SSLError as exc:
        section.problem(
            "client_cert",
            f"client_cert {client_cert} and its key cannot be loaded: {exc.reason}",
            "give a PEM certificate, and its unencrypted PEM key in the same file or in client_key",
        )
    return UpstreamTls(ca_file=ca_file, client_cert=client_cert, client_key=client_key)


def _client_auth(section: Section) -> ClientAuth | None:
    section.check_keys(("header", "scheme", "clients"))
    header = section.string("header", "Authorization") or "Authorization"
    if not _HEADER_NAME.match(header):
        section.problem("header", f"{header!r} is not a valid header name")
    default_scheme = "Bearer" if header.lower() == "authorization" else None
    scheme = section.string("scheme", default_scheme)
    clients = section.string_list("clients", [])
    if not clients:
        section.problem(
            "clients",
            "auth.clients must name at least one client",
            "clients: [backend], with the client defined under clients in the main configuration",
        )
        return None
    return ClientAuth(header=header, scheme=scheme, clients=tuple(clients))


def _routes(section: Section, case_sensitive: bool) -> list[tuple[Route, int]]:
    """Return each valid route with the line it starts on."""
    raw_routes = section.raw("routes")
    if raw_routes is None:
        return []
    if not isinstance(raw_routes, YamlList):
        section.problem("routes", "routes must be a list")
        return []
    routes: list[tuple[Route, int]] = []
    names: dict[str, int] = {}
    for index, item in enumerate(raw_routes):
        route_section = Section.of(
            item, section.file, section.problems, f"routes[{index}]", raw_routes.line_of(index)
        )
        if route_section is None:
            continue
        route = _route(route_section, case_sensitive)
        if route is None:
            continue
        if route.name in names:
            route_section.problem(
                "name",
                f"route name {route.name!r} is used twice",
                f"first on line {names[route.name]}",
            )
        names[route.name] = route_section.line("name")
        routes.append((route, raw_routes.line_of(index)))
    return routes


def _route(section: Section, case_sensitive: bool) -> Route | None:
    section.check_keys(("name", "match", "upstream", "request", "response"))
    name = section.string("name", required=True) or ""
    section.where = f"route {name!r}" if name else section.where
    match_section = section.section("match")
    if match_section is None:
        section.problem(
            None,
            f"{section.where} needs a match section",
            "match: {method: POST, path: /v1/things}",
        )
        return None
    match = _route_match(match_section, case_sensitive)
    request, request_functions = _operations(section, "request")
    response, response_functions = _operations(section, "response")
    if match is None:
        return None
    return Route(
        name=name,
        match=match,
        request=tuple(request),
        response=tuple(response),
        request_functions=tuple(request_functions),
        response_functions=tuple(response_functions),
        upstream=_upstream(section, required=False) or None,
    )


def _route_match(section: Section, case_sensitive: bool) -> RouteMatch | None:
    section.check_keys(("method", "methods", "path", "content_type", "content_types"))
    methods = section.string_list("methods", section.string_list("method", []))
    for method in methods:
        if not _METHOD.match(method.upper()):
            section.problem("method", f"{method!r} is not an HTTP method")
    path_text = section.string("path", required=True)
    if path_text is None:
        return None
    try:
        pattern = PathPattern.compile(path_text, case_sensitive=case_sensitive)
    except ValueError as exc:
        section.problem("path", f"path {path_text!r}: {exc}")
        return None
    content_types = section.string_list("content_types", section.string_list("content_type", []))
    return RouteMatch(
        methods=frozenset(method.upper() for method in methods) or None,
        path=pattern,
        content_types=frozenset(media.strip().lower() for media in content_types) or None,
    )


def _operations(section: Section, phase: str) -> tuple[list[Operation], list[FunctionStep]]:
    """Read a phase: field operations and ``function:`` steps, in the order they run."""
    raw = section.raw(phase)
    if raw is None:
        return [], []
    if not isinstance(raw, YamlList):
        section.problem(phase, f"{section.name_of(phase)} must be a list of steps")
        return [], []
    operations: list[Operation] = []
    functions: list[FunctionStep] = []
    run_start = 0
    for index, item in enumerate(raw):
        where = f"{section.where} {phase}[{index}]"
        step_section = Section.of(item, section.file, section.problems, where, raw.line_of(index))
        if step_section is None:
            continue
        if "function" in step_section.mapping:
            _check_body_kinds(section, phase, operations[run_start:])
            run_start = len(operations)
            function = _function_step(step_section, len(operations))
            if function is not None:
                functions.append(function)
            continue
        operation = _operation(step_section)
        if operation is not None:
            operations.append(operation)
    _check_body_kinds(section, phase, operations[run_start:])
    return operations, functions


def _check_body_kinds(section: Section, phase: str, operations: list[Operation]) -> None:
    """Report a run of field operations that reads one body as two types (JSON and form)."""
    kinds = {"json": JsonSelector, "form": FormSelector, "multipart": MultipartSelector}
    found = [
        name
        for name, kind in kinds.items()
        if any(isinstance(op.selector, kind) for op in operations)
    ]
    if len(found) > 1:
        section.problem(
            phase,
            f"{section.name_of(phase)} mixes {' and '.join(found)} fields in one run",
            "a body has one type; split them into two routes, or put a function between them "
            "that changes the body type",
        )


def _function_step(section: Section, position: int) -> FunctionStep | None:
    section.check_keys(("function", "args", "role", "client"))
    name = section.string("function", required=True)
    role = section.string("role")
    client = section.string("client")
    if role is not None and client is not None:
        section.problem("client", "a function step takes role or client, not both")
    args_section = section.section("args")
    args: dict[str, Any] = {}
    arg_lines: dict[str, int] = {}
    if args_section is not None:
        args = {key: _plain(value) for key, value in args_section.mapping.items()}
        arg_lines = {key: args_section.line(key) for key in args_section.mapping}
    if not name:
        return None
    return FunctionStep(
        name=name,
        args=args,
        position=position,
        line=section.line(),
        arg_lines=arg_lines,
        role=role,
        client=client,
    )


def _plain(value: Any) -> Any:
    """Return a YAML value as plain dictionaries and lists, for steps and function workers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _operation(section: Section) -> Operation | None:
    section.check_keys(_OPERATION_KEYS)
    selector = _selector(section)

    action_text = section.string("action", required=True)
    try:
        action = Action(action_text) if action_text else None
    except ValueError:
        section.problem("action", f"action must be tokenize or detokenize, not {action_text!r}")
        action = None

    if action is Action.DETOKENIZE and isinstance(selector, MultipartSelector):
        section.problem(
            "action",
            "a multipart field can only be tokenized",
            "put a file back into an outbound request with a function step",
        )
    if action is Action.DETOKENIZE:
        # The token's record carries its class, so a detokenize needs none of these.
        for key in ("format", "deterministic", "ttl", "class"):
            if section.has(key):
                section.problem(
                    key, f"{key} applies to tokenize only; a detokenize finds it in the token"
                )

    token_format = section.string("format", "uuid") or "uuid"
    if token_format not in format_names():
        section.problem(
            "format",
            f"unknown token format {token_format!r}",
            "use one of " + ", ".join(sorted(format_names())),
        )
    operation_fields: dict[str, Any] = {
        "format": token_format,
        "deterministic": section.boolean("deterministic", False),
        "ttl": section.duration("ttl", None),
        "required": section.boolean("required", False),
        "class_name": section.string("class"),
        "line": section.line(),
        "explicit": frozenset(
            key for key in ("format", "deterministic", "ttl") if section.has(key)
        ),
    }
    if selector is None or action is None:
        return None
    return Operation(selector=selector, action=action, **operation_fields)


def _selector(section: Section) -> FieldSelector | None:
    present = [key for key in _SELECTOR_KEYS if key in section.mapping]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        section.problem(
            None,
            f"{section.where} needs exactly one selector (json, form, multipart, header or "
            f"query), or a function; "
            f"found {found}",
        )
        return None
    kind = present[0]
    text = section.string(kind, required=True)
    if not text:
        return None
    if kind == "json":
        try:
            return JsonSelector(parse_json_path(text))
        except JsonPathSyntaxError as exc:
            section.problem(kind, f"json {text!r}: {exc}", "for example $.card.number or $..cvc")
            return None
    if kind == "form":
        return FormSelector(text)
    if kind == "multipart":
        return MultipartSelector(text)
    if kind == "query":
        return QuerySelector(text)
    if not _HEADER_NAME.match(text):
        section.problem(kind, f"{text!r} is not a valid header name")
        return None
    if text.lower() in _RESERVED_HEADERS:
        section.problem(kind, f"header {text} is managed by the relay and cannot carry a field")
        return None
    return HeaderSelector(text.lower())


def check_connections(connections: list[Connection], problems: list[ConfigProblem]) -> None:
    """Report what is wrong only across files: duplicate connection names, mounts and hosts."""
    names: dict[str, Connection] = {}
    mounts: dict[str, Connection] = {}
    hosts: dict[str, Connection] = {}
    for connection in connections:
        for host in connection.hosts:
            if host in hosts:
                problems.append(
                    ConfigProblem(
                        connection.source,
                        None,
                        f"host {host} is listed by two connections",
                        f"also by connection {hosts[host].name!r} in {hosts[host].source}",
                    )
                )
            hosts[host] = connection
        if connection.name in names:
            problems.append(
                ConfigProblem(
                    connection.source,
                    None,
                    f"connection {connection.name!r} is declared twice",
                    f"also in {names[connection.name].source}",
                )
            )
        names[connection.name] = connection
        mount_key = connection.mount.rstrip("/").lower() or "/"
        if mount_key in mounts:
            problems.append(
                ConfigProblem(
                    connection.source,
                    None,
                    f"mount {connection.mount} is used twice",
                    f"also by connection {mounts[mount_key].name!r} in {mounts[mount_key].source}",
                )
            )
        mounts[mount_key] = connection


__all__ = ["YamlMap", "check_connections", "load_connection_file"]
