"""The validated configuration: frozen values built once at start-up from the YAML files."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.audit import AuditConfig
from gateway.engine.routing import Connection
from gateway.errors import ConfigProblem
from gateway.functions.config import FunctionsConfig
from gateway.policy.model import PolicySet


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenConfig:
    reverse: Address = Address("127.0.0.1", 8080)
    admin: Address | None = Address("127.0.0.1", 8082)
    """The vault API; None turns it off."""
    forward: Address | None = None
    """The forward proxy (HTTPS_PROXY); None, the default when the key is absent, turns it off."""
    workers: int = 1
    """Gateway processes that share the reverse and admin listeners. With 1 the gateway runs in
    the process that ``vaultgate run`` starts; with more, that process supervises them."""


class UnlistedHosts(enum.Enum):
    """The forward proxy's handling of a host that no connection lists."""

    DENY = "deny"
    TUNNEL = "tunnel"
    """Relay CONNECT tunnels to such hosts without interception."""


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    ca_dir: Path = Path("var/ca")
    """Directory of the CA that signs the forward proxy's certificates for intercepted hosts."""
    unlisted_hosts: UnlistedHosts = UnlistedHosts.DENY
    proxy_auth: bool = True
    """Require ``Proxy-Authorization: Basic`` with a client name and key on every CONNECT."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///./var/tokens.db"
    """``sqlite:///path`` (relative to the working directory) or ``redis://`` / ``rediss://``."""


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """The source of the master keys.

    ``env`` names an environment variable that contains a whole key file; when it is set, it
    wins over ``file``. With ``development`` on, a missing key file is generated with a warning;
    with it off, a key file marked as a development key is refused.
    """

    file: Path | None = Path("var/keys.yaml")
    env: str | None = None
    development: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    """Largest request or response body a route processes, counted after decompression too."""
    max_json_depth: int = 64
    max_fields: int = 1000
    """Most fields one message may tokenize or detokenize, which bounds one store batch."""
    client_body_timeout: float = 30.0
    """Seconds a client may take to send a routed request's whole body; then 408."""
    upstream_connect_timeout: float = 5.0
    upstream_timeout: float = 30.0
    """Seconds from sending the request until the upstream's response headers arrive."""
    store_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"
    """``text`` for people, ``json`` for one JSON object per line."""
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    listen: ListenConfig = field(default_factory=ListenConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    routes: tuple[str, ...] = ("routes/*.yaml",)
    limits: Limits = field(default_factory=Limits)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    connections: tuple[Connection, ...] = ()
    policy: PolicySet = field(default_factory=PolicySet)
    functions: FunctionsConfig = field(default_factory=FunctionsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    warnings: tuple[ConfigProblem, ...] = ()
    """Mistakes that do not stop the gateway, such as a class revealed to no connection."""
