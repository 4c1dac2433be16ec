"""Load the main configuration file and the route files it names.

Relative paths (route globs, the key file, a ``sqlite:///`` store) are resolved against the
directory of the configuration file, so the gateway behaves the same whatever directory it is
started from.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config.audit import read_audit
from gateway.config.connections import check_connections, load_connection_file
from gateway.config.fields import Section
from gateway.config.model import (
    Address,
    Config,
    ForwardConfig,
    KeysConfig,
    Limits,
    ListenConfig,
    LoggingConfig,
    StoreConfig,
    UnlistedHosts,
)
from gateway.config.policy import Places, read_classes, read_clients, read_roles
from gateway.config.policy_check import PolicySources, check_policy
from gateway.config.yamlsource import load_yaml_file
from gateway.engine.routing import Connection
from gateway.errors import ConfigError, ConfigProblem
from gateway.functions.check import check_function_steps
from gateway.functions.config import read_functions_config
from gateway.policy.model import PolicySet

_SECTIONS = (
    "listen",
    "store",
    "keys",
    "routes",
    "limits",
    "logging",
    "forward",
    "clients",
    "classes",
    "roles",
    "functions",
    "audit",
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def missing_config_message(path: Path) -> str | None:
    """Return the error for a configuration file that does not exist, or None if it does.

    Every command that reads the configuration reports a missing file with this text.
    """
    if path.is_file():
        return None
    return (
        f"configuration file {path} not found in {Path.cwd()}; pass one with -c (for example "
        "-c config.example.yaml) or set VAULTGATE_CONFIG"
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate everything; raise ``ConfigError`` listing every problem found."""
    environ = os.environ if environ is None else environ
    path = path.resolve()
    document = load_yaml_file(path, environ)
    problems: list[ConfigProblem] = []
    file = str(path)
    base_dir = path.parent

    root = Section.of(document, file, problems, "", 1)
    if root is None:
        raise ConfigError(problems)
    root.check_keys(_SECTIONS)

    listen = _listen(root.section("listen"))
    _check_listeners_apart(listen, root)
    store = _store(root.section("store"), base_dir)
    keys = _keys(root.section("keys"), base_dir)
    limits = _limits(root.section("limits"))
    logging_config = _logging(root.section("logging"))
    audit = read_audit(root.section("audit"), base_dir, store_url=store.url)
    forward = _forward(root.section("forward"), base_dir)
    route_globs = tuple(root.string_list("routes", ["routes/*.yaml"]))
    connections = _connections(route_globs, path, root, problems, environ)

    places: Places = {}
    policy = PolicySet(
        clients=read_clients(root.section("clients"), places),
        classes=read_classes(root.section("classes"), places),
        roles=read_roles(root.section("roles"), places),
    )
    warnings: list[ConfigProblem] = []
    connections = check_policy(policy, PolicySources(places), connections, problems, warnings)
    if not keys.development:
        _reject_development_client_keys(policy, places, problems)
    functions = read_functions_config(root.section("functions"), base_dir, problems)
    connections = check_function_steps(connections, functions, policy, problems)
    _check_forward_steps(connections, problems)
    if listen.forward is not None and not any(connection.hosts for connection in connections):
        warnings.append(
            ConfigProblem(
                file,
                None,
                "listen.forward is on, but no route file lists hosts, so the forward proxy "
                "rejects every request",
                "add hosts: [api.example.com] to a route file, or set listen.forward: off",
            )
        )

    if problems:
        raise ConfigError(problems)
    return Config(
        source=path,
        listen=listen,
        store=store,
        keys=keys,
        routes=route_globs,
        limits=limits,
        logging=logging_config,
        forward=forward,
        connections=tuple(connections),
        policy=policy,
        functions=functions,
        audit=audit,
        warnings=tuple(warnings),
    )


def _check_listeners_apart(listen: ListenConfig, root: Section) -> None:
    """Report two listeners on one address, which would make the gateway fail to start."""
    named = [("listen.reverse", listen.reverse), ("listen.admin", listen.admin)]
    named.append(("listen.forward", listen.forward))
    seen: dict[tuple[str, int], str] = {}
    for name, address in named:
        if address is None or address.port == 0:
            continue
        other = seen.setdefault((address.host, address.port), name)
        if other != name:
            root.problem(
                "listen",
                f"{other} and {name} are both {address}",
                "give each listener its own port",
            )


def _reject_development_client_keys(
    policy: PolicySet, places: Places, problems: list[ConfigProblem]
) -> None:
    """Report client keys that are development defaults when development is off."""
    for client in policy.clients.values():
        if any(key.development for key in client.keys):
            file, line = places.get(("client", client.name), ("configuration", None))
            problems.append(
                ConfigProblem(
                    file,
                    line,
                    f"client {client.name!r} uses a development key (it starts with 'dev-'), "
                    "which keys.development: false does not allow",
                    "give it a real key; config.example.yaml reads them from "
                    "VAULTGATE_BACKEND_KEY and VAULTGATE_SUPPORT_KEY",
                )
            )


def _check_forward_steps(connections: list[Connection], problems: list[ConfigProblem]) -> None:
    """Report routes with function steps on connections that the forward proxy serves.

    NOTE: the forward proxy runs field operations but not function steps yet, so such a route
    would relay, through the forward proxy, what a step removes through the reverse listener.
    """
    for connection in connections:
        if not connection.hosts:
            continue
        for route in connection.routes:
            if route.request_functions or route.response_functions:
                problems.append(
                    ConfigProblem(
                        connection.source,
                        None,
                        f"route {route.name!r} has function steps, but connection "
                        f"{connection.name!r} lists hosts, and the forward proxy does not run "
                        "function steps",
                        "remove hosts from the connection, or move the steps to a connection "
                        "without hosts",
                    )
                )


def parse_address(text: str) -> Address:
    """Parse ``host:port`` or ``[v6]:port``; raise ``ValueError`` with the expected form."""
    host, separator, port_text = text.strip().rpartition(":")
    if not separator or not host:
        raise ValueError(f"{text!r} is not host:port")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port of {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port of {text!r} is outside 0-65535")
    return Address(host, port)


def _listen(section: Section | None) -> ListenConfig:
    if section is None:
        return ListenConfig()
    section.check_keys(("reverse", "admin", "forward", "workers"))
    defaults = ListenConfig()
    return ListenConfig(
        reverse=_address(section, "reverse", defaults.reverse) or defaults.reverse,
        admin=_address(section, "admin", defaults.admin),
        forward=_address(section, "forward", defaults.forward),
        workers=section.integer("workers", defaults.workers, minimum=1),
    )


def _address(section: Section, key: str, default: Address | None) -> Address | None:
    """Read a ``host:port``; ``off`` turns an optional listener off."""
    if key != "reverse" and section.raw(key) is False:
        # YAML reads a bare off as a boolean.
        return None
    text = section.string(key)
    if text is None:
        return default
    if key != "reverse" and text.strip().lower() in ("off", "false", "none", ""):
        return None
    try:
        return parse_address(text)
    except ValueError as exc:
        section.problem(key, f"listen.{key}: {exc}", "for example 127.0.0.1:8080")
        return default


def _store(section: Section | None, base_dir: Path) -> StoreConfig:
    if section is None:
        return StoreConfig(url=_resolve_sqlite(StoreConfig().url, base_dir))
    section.check_keys(("url",))
    url = section.string("url", StoreConfig().url) or StoreConfig().url
    if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        # Only the scheme is shown: the rest of the URL may carry a password.
        scheme = url.split(":", 1)[0]
        section.problem(
            "url",
            f"store.url with scheme {scheme!r} is not a supported store",
            "use sqlite:///path/tokens.db or redis://host:6379/0",
        )
    return StoreConfig(url=_resolve_sqlite(url, base_dir))


def _resolve_sqlite(url: str, base_dir: Path) -> str:
    if not url.startswith("sqlite:///"):
        return url
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_absolute():
        path = base_dir / path
    return "sqlite:///" + str(path)


def _keys(section: Section | None, base_dir: Path) -> KeysConfig:
    if section is None:
        return KeysConfig(file=base_dir / "var/keys.yaml")
    section.check_keys(("file", "env", "development"))
    file_text = section.string("file")
    file = Path(file_text) if file_text else None
    if file is not None and not file.is_absolute():
        file = base_dir / file
    env = section.string("env")
    if file is None and env is None:
        section.problem(None, "keys needs a file or an env", "file: var/keys.yaml")
    return KeysConfig(file=file, env=env, development=section.boolean("development", False))


def _limits(section: Section | None) -> Limits:
    if section is None:
        return Limits()
    defaults = Limits()
    section.check_keys(
        (
            "max_body_bytes",
            "max_json_depth",
            "max_fields",
            "client_body_timeout",
            "upstream_connect_timeout",
            "upstream_timeout",
            "store_timeout",
        )
    )
    return Limits(
        max_body_bytes=section.size("max_body_bytes", defaults.max_body_bytes),
        max_json_depth=section.integer("max_json_depth", defaults.max_json_depth, minimum=1),
        max_fields=section.integer("max_fields", defaults.max_fields, minimum=1),
        client_body_timeout=section.duration("client_body_timeout", defaults.client_body_timeout)
        or defaults.client_body_timeout,
        upstream_connect_timeout=section.duration(
            "upstream_connect_timeout", defaults.upstream_connect_timeout
        )
        or defaults.upstream_connect_timeout,
        upstream_timeout=section.duration("upstream_timeout", defaults.upstream_timeout)
        or defaults.upstream_timeout,
        store_timeout=section.duration("store_timeout", defaults.store_timeout)
        or defaults.store_timeout,
    )


def _forward(section: Section | None, base_dir: Path) -> ForwardConfig:
    defaults = ForwardConfig()
    if section is None:
        return ForwardConfig(ca_dir=base_dir / defaults.ca_dir)
    section.check_keys(("ca_dir", "unlisted_hosts", "proxy_auth"))
    ca_dir = Path(section.string("ca_dir") or str(defaults.ca_dir)).expanduser()
    unlisted_text = section.string("unlisted_hosts", "deny") or "deny"
    try:
        unlisted = UnlistedHosts(unlisted_text.strip().lower())
    except ValueError:
        section.problem(
            "unlisted_hosts",
            f"forward.unlisted_hosts must be deny or tunnel, not {unlisted_text!r}",
        )
        unlisted = defaults.unlisted_hosts
    proxy_auth = _proxy_auth(section)
    if not proxy_auth and unlisted is UnlistedHosts.TUNNEL:
        # Without credentials, tunnels to any host would make the gateway an open proxy.
        section.problem(
            "proxy_auth",
            "forward.proxy_auth: off cannot be combined with forward.unlisted_hosts: tunnel",
            "keep proxy_auth: required, or set unlisted_hosts: deny",
        )
    return ForwardConfig(
        ca_dir=ca_dir if ca_dir.is_absolute() else base_dir / ca_dir,
        unlisted_hosts=unlisted,
        proxy_auth=proxy_auth,
    )


def _proxy_auth(section: Section) -> bool:
    raw = section.raw("proxy_auth")
    if isinstance(raw, bool):
        # YAML reads a bare off or on as a boolean.
        return raw
    text = (section.string("proxy_auth", "required") or "required").strip().lower()
    if text in ("required", "true", "yes", "on", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    section.problem("proxy_auth", f"forward.proxy_auth must be required or off, not {text!r}")
    return True


def _logging(section: Section | None) -> LoggingConfig:
    if section is None:
        return LoggingConfig()
    section.check_keys(("level", "format", "access_log"))
    level = (section.string("level", "INFO") or "INFO").upper()
    if level not in _LOG_LEVELS:
        section.problem(
            "level", f"logging.level {level!r} is unknown", "use " + ", ".join(_LOG_LEVELS)
        )
        level = "INFO"
    log_format = section.string("format", "text") or "text"
    if log_format not in ("text", "json"):
        section.problem("format", f"logging.format {log_format!r} is unknown", "use text or json")
        log_format = "text"
    return LoggingConfig(
        level=level, format=log_format, access_log=section.boolean("access_log", True)
    )


def _connections(
    route_globs: tuple[str, ...],
    config_path: Path,
    root: Section,
    problems: list[ConfigProblem],
    environ: Mapping[str, str],
) -> list[Connection]:
    connections: list[Connection] = []
    for pattern in route_globs:
        full_pattern = pattern if Path(pattern).is_absolute() else str(config_path.parent / pattern)
        paths = [
            found
            for found in sorted(glob.glob(full_pattern))
            if Path(found).resolve() != config_path
        ]
        if not paths:
            root.problem("routes", f"routes entry {pattern!r} matches no file")
        for route_file in paths:
            try:
                connections.append(
                    load_connection_file(Path(route_file), environ, base_dir=config_path.parent)
                )
            except ConfigError as exc:
                problems.extend(exc.problems)
    check_connections(connections, problems)
    return connections
