"""Who may use the forward proxy, and where it may connect.

Proxy credentials are ``Proxy-Authorization: Basic`` with a client name and one of its keys,
checked against the same ``clients`` as every other key. A host is intercepted when a connection
lists it in ``hosts``. Any other host is rejected, unless ``forward.unlisted_hosts: tunnel`` lets
its CONNECT tunnels through. Even then, tunnels never reach loopback, link-local or unspecified
addresses, nor the gateway's own listeners or its store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.engine.auth import find_client
from gateway.engine.routing import Connection
from gateway.errors import ForbiddenError, ProxyAuthenticationError
from gateway.policy.model import Client

_HOST_NAME = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


def normalize_host(host: str) -> str:
    """Return a host name as ``hosts`` lists it: lower case, without a final dot."""
    return host.strip().lower().removesuffix(".")


def describe_host(host: str) -> str:
    """Return the host for a message, or a placeholder when it is not a plain name or address.

    A message names the host so that an operator can allow it; anything else that a client put
    in the request target is not repeated.
    """
    if _HOST_NAME.match(host):
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "the requested host"


def parse_basic_credentials(values: Sequence[str]) -> tuple[str, str] | None:
    """Return the (client name, key) of one ``Basic`` header value, or None."""
    if len(values) != 1:
        return None
    scheme, _, encoded = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, separator, key = decoded.partition(":")
    if not separator:
        return None
    return name, key


def authenticate_proxy_client(values: Sequence[str], clients: Mapping[str, Client]) -> Client:
    """Return the client whose name and key are in the ``Proxy-Authorization`` values.

    Raises ``ProxyAuthenticationError`` (407) with one message for missing, malformed and wrong
    credentials, so that the response does not tell which.
    """
    name, key = parse_basic_credentials(values) or ("", "")
    client = find_client(key, clients)
    # The key decides the client; the name must match it too, compared in constant time.
    if client is None or not hmac.compare_digest(client.name.encode(), name.encode()):
        raise ProxyAuthenticationError(
            "missing or invalid proxy credentials; send Proxy-Authorization: Basic with a "
            "client name and its key"
        )
    return client


def check_client_allowed(client: Client | None, connection: Connection) -> None:
    """Raise ``ForbiddenError`` when ``connection`` names its clients and ``client`` is not one."""
    if connection.auth is None or client is None:
        return
    if client.name not in connection.auth.clients:
        raise ForbiddenError(f"client {client.name!r} may not call connection {connection.name!r}")


def unlisted_host_error(host: str) -> ForbiddenError:
    return ForbiddenError(
        f"host {describe_host(host)} is not in the hosts of any route file, so the forward proxy "
        "does not relay it; add it to a connection's hosts, or set forward.unlisted_hosts: tunnel "
        "to relay CONNECT tunnels to unlisted hosts without interception"
    )


class HostMap:
    """Finds the connection that lists a host."""

    def __init__(self, connections: Iterable[Connection]) -> None:
        self._by_host = {
            host: connection for connection in connections for host in connection.hosts
        }

    def find(self, host: str) -> Connection | None:
        return self._by_host.get(normalize_host(host))

    def __bool__(self) -> bool:
        return bool(self._by_host)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


class TunnelGuard:
    """Decides which address a tunnel to an unlisted host may connect to.

    ``own_endpoints`` are the gateway's listeners and its store. A listener on an unspecified
    address (``0.0.0.0``) reaches every address of the machine, so its port is refused on any
    address.
    """

    def __init__(self, own_endpoints: Iterable[Endpoint]) -> None:
        self._own_endpoints = tuple(own_endpoints)
        self._own_addresses: set[tuple[str, int]] | None = None
        self._any_address_ports = frozenset(
            endpoint.port for endpoint in self._own_endpoints if _is_unspecified(endpoint.host)
        )

    async def resolve(self, host: str, port: int) -> str:
        """Return the IP address to connect to, or raise ``ForbiddenError``.

        Every address the name resolves to must be allowed, and the tunnel is pinned to the
        first, so that a second lookup cannot return another one.
        """
        loop = asyncio.get_running_loop()
        if self._own_addresses is None:
            self._own_addresses = await _resolve_endpoints(self._own_endpoints)
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ForbiddenError(
                f"host {describe_host(host)} cannot be resolved, so no tunnel is opened"
            ) from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for text in addresses:
            address = ipaddress.ip_address(text)
            if address.is_loopback or address.is_unspecified or address.is_link_local:
                raise ForbiddenError(
                    f"host {describe_host(host)} resolves to {address}, a loopback, link-local "
                    "or unspecified address, which the forward proxy never tunnels to"
                )
            if (text, port) in self._own_addresses or port in self._any_address_ports:
                raise ForbiddenError(
                    f"{describe_host(host)}:{port} is the gateway's own listener or store, which "
                    "the forward proxy never tunnels to"
                )
        if not addresses:
            raise ForbiddenError(f"host {describe_host(host)} has no address")
        return addresses[0]


def _is_unspecified(host: str) -> bool:
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def _resolve_endpoints(endpoints: Iterable[Endpoint]) -> set[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    resolved: set[tuple[str, int]] = set()
    for endpoint in endpoints:
        try:
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError:
            continue
        resolved.update((str(info[4][0]), endpoint.port) for info in infos)
    return resolved
