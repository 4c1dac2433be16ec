"""The mitmproxy addon that turns mitmproxy's proxy core into the gateway's forward proxy.

mitmproxy calls these hooks as a client's connection goes on:

- ``http_connect``: a CONNECT request. The credentials are checked first, then the host: a
  listed host gets a tunnel that is intercepted, an unlisted one is refused or, with
  ``forward.unlisted_hosts: tunnel``, relayed without interception to an address checked by
  ``TunnelGuard``.
- ``next_layer``: inside a relayed tunnel, bytes pass through without being parsed.
- ``requestheaders``: a request inside an intercepted tunnel, or a plain-HTTP request in
  absolute form, which carries its own credentials. Its target is found here.
- ``request``: the whole request has arrived, and ``ForwardRelay`` responds to it. mitmproxy never
  sends an intercepted request upstream itself, and ``server_connect`` refuses any upstream
  connection other than a relayed tunnel's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.proxy import layer, layers, server_hooks

from gateway.config.model import UnlistedHosts
from gateway.engine.routing import Connection
from gateway.errors import ForbiddenError, MessageError, ProxyAuthenticationError
from gateway.policy.enforcer import Caller, Enforcer
from gateway.policy.model import Client
from gateway.proxy.forward.access import (
    HostMap,
    TunnelGuard,
    authenticate_proxy_client,
    check_client_allowed,
    describe_host,
    normalize_host,
    unlisted_host_error,
)
from gateway.proxy.forward.relay import ForwardRelay, Target, error_response
from gateway.proxy.reverse import _PATH_VALUE, Exchange

logger = logging.getLogger("gateway.proxy")

_EXCHANGE = "vaultgate.exchange"
_TARGET = "vaultgate.target"
_BODY_TIMER = "vaultgate.body_timer"


@dataclass(slots=True)
class Tunnel:
    """A CONNECT tunnel that a client opened."""

    host: str
    connection: Connection | None
    """The connection that lists the host; None for a tunnel relayed without interception."""
    client: Client | None
    address: tuple[str, int] | None = None
    """The address a relayed tunnel was checked for and may connect to."""


class ForwardAddon:
    def __init__(
        self,
        relay: ForwardRelay,
        enforcer: Enforcer,
        hosts: HostMap,
        guard: TunnelGuard,
        *,
        proxy_auth: bool,
        unlisted_hosts: UnlistedHosts,
        client_body_timeout: float,
    ) -> None:
        self._relay = relay
        self._enforcer = enforcer
        self._hosts = hosts
        self._guard = guard
        self._proxy_auth = proxy_auth
        self._unlisted_hosts = unlisted_hosts
        self._client_body_timeout = client_body_timeout
        self._tunnels: dict[str, Tunnel] = {}
        self.close_client: Callable[[str], bool] | None = None
        """Closes a client connection by its id; the listener sets it once it runs."""

    # CONNECT

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        exchange = self._relay.start_exchange(flow)
        exchange.path = describe_host(flow.request.host)
        try:
            tunnel = await self._open_tunnel(flow)
        except MessageError as error:
            self._relay.reject(flow, error, exchange)
            return
        self._tunnels[flow.client_conn.id] = tunnel

    async def _open_tunnel(self, flow: http.HTTPFlow) -> Tunnel:
        host = normalize_host(flow.request.host)
        port = flow.request.port
        client = await self._proxy_client(flow, operation="CONNECT")
        connection = self._hosts.find(host)
        if connection is not None:
            await self._check_allowed(client, connection, "CONNECT")
            return Tunnel(host, connection, client)

        if self._unlisted_hosts is UnlistedHosts.DENY:
            raise unlisted_host_error(host)
        address = await self._guard.resolve(host, port)
        # mitmproxy connects to the request's host after this hook: the checked address.
        flow.request.host = address
        return Tunnel(host, None, client, (address, port))

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if nextlayer.layer is not None or nextlayer.context.server.address is None:
            return
        tunnel = self._tunnels.get(nextlayer.context.client.id)
        if tunnel is not None and tunnel.connection is None:
            nextlayer.layer = layers.TCPLayer(nextlayer.context, ignore=True)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        tunnel = self._tunnels.get(data.client.id)
        address = data.server.address
        allowed = tunnel is not None and tunnel.connection is None and tunnel.address == address
        if not allowed:
            # Intercepted requests go upstream through the gateway's own client; mitmproxy
            # connecting for one would relay it without its route.
            logger.error("refused an upstream connection that mitmproxy tried to open itself")
            data.server.error = "the forward proxy does not connect here"

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)

    # Requests

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self._relay.start_exchange(flow)
        flow.metadata[_EXCHANGE] = exchange
        try:
            target = await self._find_target(flow)
        except MessageError as error:
            self._relay.reject(flow, error, exchange)
            return
        exchange.connection = target.connection.name
        flow.metadata[_TARGET] = target
        timer = asyncio.get_running_loop().call_later(
            self._client_body_timeout, self._body_timed_out, flow
        )
        flow.metadata[_BODY_TIMER] = timer

    async def request(self, flow: http.HTTPFlow) -> None:
        _cancel_timer(flow)
        if flow.response is not None or flow.error is not None:
            return
        target = flow.metadata.get(_TARGET)
        exchange = flow.metadata.get(_EXCHANGE)
        if not isinstance(target, Target) or not isinstance(exchange, Exchange):
            # Every request passes requestheaders first; fail closed if one did not.
            flow.response = error_response(ForbiddenError("request has no checked target"))
            return
        await self._relay.relay(flow, target, exchange)

    def error(self, flow: http.HTTPFlow) -> None:
        """Log a flow that mitmproxy ended itself: over the body limit, malformed, or cut off."""
        _cancel_timer(flow)
        exchange = flow.metadata.get(_EXCHANGE)
        message = flow.error.msg if flow.error else ""
        if "body_size_limit" in message:
            kind, status = "body_too_large", 413
        elif "request smuggling" in message:
            kind, status = "invalid_request", 400
        else:
            kind, status = "aborted", 0
        if status:
            # mitmproxy's message may quote the request, so only its kind is logged.
            logger.warning("rejected request in the HTTP layer: status=%d type=%s", status, kind)
        if isinstance(exchange, Exchange) and flow.response is None:
            exchange.status = status
            exchange.error_type = kind
            self._relay.log_access(exchange, flow)

    async def _find_target(self, flow: http.HTTPFlow) -> Target:
        tunnel = self._tunnels.get(flow.client_conn.id)
        if tunnel is not None:
            if tunnel.connection is None:
                raise ForbiddenError("requests in a relayed tunnel are not intercepted")
            _check_host_header(flow, tunnel.host)
            return Target(tunnel.host, tunnel.connection, tunnel.client)

        # A plain-HTTP request to the proxy in absolute form, with its own credentials.
        host = normalize_host(flow.request.host)
        client = await self._proxy_client(flow, operation=f"{flow.request.method} plain HTTP")
        connection = self._hosts.find(host)
        if connection is None:
            # Plain HTTP is never relayed to unlisted hosts, tunnel or not.
            raise unlisted_host_error(host)
        await self._check_allowed(client, connection, "plain HTTP")
        _check_host_header(flow, host)
        return Target(host, connection, client)

    async def _proxy_client(self, flow: http.HTTPFlow, *, operation: str) -> Client | None:
        if not self._proxy_auth:
            return None
        values = flow.request.headers.get_all("proxy-authorization")
        try:
            return authenticate_proxy_client(values, self._enforcer.policy.clients)
        except ProxyAuthenticationError as error:
            await self._enforcer.record_denial(Caller(None, None, operation), error.message)
            raise

    async def _check_allowed(
        self, client: Client | None, connection: Connection, operation: str
    ) -> None:
        try:
            check_client_allowed(client, connection)
        except ForbiddenError as error:
            await self._enforcer.record_denial(
                Caller(client, connection.name, operation), error.message
            )
            raise

    def _body_timed_out(self, flow: http.HTTPFlow) -> None:
        """Close the connection of a client that did not send its body in time.

        NOTE: the reverse proxy answers 408 here. mitmproxy offers no way to send a response
        while it is still reading the body, so this client sees its connection closed.
        """
        exchange = flow.metadata.get(_EXCHANGE)
        logger.warning(
            "rejected request: connection=%s route=- status=408 type=request_timeout reason=the "
            "request body did not arrive within %g s (limits.client_body_timeout); closing the "
            "connection",
            exchange.connection if isinstance(exchange, Exchange) else "-",
            self._client_body_timeout,
        )
        if self.close_client is not None:
            self.close_client(flow.client_conn.id)


def _check_host_header(flow: http.HTTPFlow, host: str) -> None:
    """Reject a request whose Host names another host than the one it is routed by."""
    header = flow.request.host_header
    if header is None:
        return
    name = header.rpartition(":")[0] if header.rpartition(":")[2].isdigit() else header
    if normalize_host(name.removeprefix("[").removesuffix("]")) != host:
        raise MessageError(
            f"the Host header names {_PATH_VALUE.sub('[redacted]', describe_host(name))}, but the "
            f"request goes to {host}; send requests for one host through its own tunnel"
        )


def _cancel_timer(flow: http.HTTPFlow) -> None:
    timer = flow.metadata.pop(_BODY_TIMER, None)
    if isinstance(timer, asyncio.TimerHandle):
        timer.cancel()
