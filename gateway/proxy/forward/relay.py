"""Relay one intercepted request: the forward proxy's counterpart of the reverse proxy's handler.

mitmproxy has read the whole request (up to ``limits.max_body_bytes``). The request finds its
route by method, path and content type within the connection that lists its host, goes through
the route's field operations, and is sent upstream by the gateway's own HTTP client, never by
mitmproxy. The upstream's response is read whole, processed by the route's response operations,
and handed back to mitmproxy. A message that a route cannot process gets the JSON error body and
is never relayed as it came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import ClientResponse, hdrs
from mitmproxy import http
from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.auth import authenticate, find_client, presented_key
from gateway.engine.bodies import parse_media_type
from gateway.engine.headers import client_response_headers, upstream_request_headers
from gateway.engine.paths import normalize_path
from gateway.engine.rewrite import MessageParts, RewriteCounts
from gateway.engine.routing import Connection, Route, UnmatchedPolicy
from gateway.errors import (
    AuthenticationError,
    ForbiddenError,
    InvalidBodyError,
    MessageError,
    RouteNotMatchedError,
    UpstreamResponseError,
)
from gateway.metrics import Metrics
from gateway.policy.enforcer import Caller, Enforcer, Phase
from gateway.policy.model import Client
from gateway.proxy.errors import error_body
from gateway.proxy.reverse import _PATH_VALUE, _RESPONSE_FAULTS, Exchange
from gateway.proxy.upstream import UpstreamClient, read_limited

logger = logging.getLogger("gateway.proxy")
access_logger = logging.getLogger("gateway.access")

_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Target:
    """The connection and host of an intercepted request, and the client that sent it."""

    host: str
    """The host the client asked for, as ``hosts`` lists it."""
    connection: Connection
    client: Client | None
    """The client that the proxy credentials named; None when ``forward.proxy_auth`` is off."""


class ForwardRelay:
    def __init__(
        self,
        enforcer: Enforcer,
        limits: Limits,
        upstream: UpstreamClient,
        *,
        proxy_auth: bool,
        access_log: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self._enforcer = enforcer
        self._limits = limits
        self._upstream = upstream
        self._proxy_auth = proxy_auth
        self._access_log = access_log
        self._metrics = metrics

    @property
    def clients(self) -> Mapping[str, Client]:
        return self._enforcer.policy.clients

    def start_exchange(self, flow: http.HTTPFlow, connection: str = "-") -> Exchange:
        path = flow.request.path.partition("?")[0]
        exchange = Exchange(flow.request.method, _PATH_VALUE.sub("[redacted]", path), 0.0)
        exchange.started = time.perf_counter()
        exchange.connection = connection
        return exchange

    async def relay(self, flow: http.HTTPFlow, target: Target, exchange: Exchange) -> None:
        """Set ``flow.response`` to the upstream's response, or to a JSON error."""
        try:
            flow.response = await self._relay(flow, target, exchange)
        except MessageError as error:
            self.reject(flow, error, exchange)
            return
        except Exception:
            # Only the type and the route are logged: an unexpected error's text may quote input.
            logger.exception(
                "unexpected error: connection=%s route=%s", exchange.connection, exchange.route
            )
            exchange.error_type = "internal_error"
            flow.response = json_response(
                500, b'{"error": {"type": "internal_error", "message": "internal gateway error"}}'
            )
        exchange.status = flow.response.status_code
        self.log_access(exchange, flow)

    def reject(self, flow: http.HTTPFlow, error: MessageError, exchange: Exchange) -> None:
        """Set ``flow.response`` to the JSON error body of ``error``, and log it."""
        exchange.error_type = error.error_type
        logger.warning(
            "rejected request: connection=%s route=%s status=%d type=%s reason=%s",
            exchange.connection,
            exchange.route,
            error.status,
            error.error_type,
            error.message,
        )
        flow.response = error_response(error, exchange.route if exchange.route != "-" else None)
        exchange.status = error.status
        self.log_access(exchange, flow)

    async def _relay(
        self, flow: http.HTTPFlow, target: Target, exchange: Exchange
    ) -> http.Response:
        request = flow.request
        raw_target = request.path
        if "#" in raw_target:
            # A request target never has a fragment (RFC 9112, 3.2).
            raise InvalidBodyError("the request target must not contain '#'")
        raw_path, _, query = raw_target.partition("?")
        if not raw_path.startswith("/"):
            raise InvalidBodyError("the request target must be a path starting with '/'")
        _check_transfer_coding(request)

        connection = target.connection
        path = normalize_path(raw_path)
        headers = _request_headers(request)
        media_type = parse_media_type(headers.get(hdrs.CONTENT_TYPE))
        route = connection.find_route(request.method, path, media_type.type if media_type else None)
        if route is not None:
            exchange.route = route.name
        caller = await self._caller(target, route, headers)
        if route is None and connection.unmatched is UnmatchedPolicy.REJECT:
            raise RouteNotMatchedError(
                f"connection {connection.name!r} accepts only requests that match one of its routes"
            )

        url, server_hostname = upstream_url(connection, target.host, path, query)
        upstream_headers = upstream_request_headers(
            headers, auth_header=self._gateway_key_header(connection, headers)
        )
        # The upstream gets the Host the client sent, also when `upstream` overrides the address.
        upstream_headers[hdrs.HOST] = request.host_header or target.host
        body = request.raw_content or b""
        has_body = bool(body) or "content-length" in request.headers

        if route is not None and (route.request or route.response):
            parts = MessageParts(upstream_headers, body, query)
            parts, counts = await self._enforcer.rewrite(
                route.request, parts, caller, Phase.REQUEST
            )
            exchange.counts = counts
            if parts.query != query:
                url = url.partition("?")[0] + (f"?{parts.query}" if parts.query else "")
            upstream_headers, body = parts.headers, parts.body

        upstream = await self._upstream.send(
            url,
            request.method,
            upstream_headers,
            body if (body or has_body) else None,
            connection=connection.name,
            server_hostname=server_hostname,
        )
        try:
            return await self._response(flow, caller, route, upstream, exchange)
        finally:
            upstream.release()

    async def _caller(
        self, target: Target, route: Route | None, headers: CIMultiDict[str]
    ) -> Caller:
        """Return the caller: the proxy client, or with proxy credentials off, the client
        that the connection's own API key names (401 or 403 when it is missing or wrong)."""
        connection = target.connection
        operation = route.name if route else "unmatched"
        if self._proxy_auth or connection.auth is None:
            return Caller(target.client, connection.name, operation)
        auth = connection.auth
        try:
            client = authenticate(
                connection.name, auth.clients, auth.header, auth.scheme, headers, self.clients
            )
        except (AuthenticationError, ForbiddenError) as error:
            await self._enforcer.record_denial(
                Caller(None, connection.name, operation), error.message
            )
            raise
        return Caller(client, connection.name, operation)

    def _gateway_key_header(self, connection: Connection, headers: CIMultiDict[str]) -> str | None:
        """Return the connection's API key header when it must be removed before relaying.

        With proxy credentials off, that header is the client's credential and is always
        removed. With them on, it is removed when any of its values is a gateway key, so that a
        key meant for the gateway never reaches the upstream, while the upstream's own
        credential in the same header (Authorization) passes.
        """
        auth = connection.auth
        if auth is None:
            return None
        if not self._proxy_auth:
            return auth.header
        for value in headers.getall(auth.header, []):
            key = presented_key(CIMultiDict({auth.header: value}), auth.header, auth.scheme)
            if find_client(key, self.clients) is not None:
                return auth.header
        return None

    async def _response(
        self,
        flow: http.HTTPFlow,
        caller: Caller,
        route: Route | None,
        upstream: ClientResponse,
        exchange: Exchange,
    ) -> http.Response:
        limits = self._limits
        body = await read_limited(upstream, limits.max_body_bytes, limits.upstream_timeout)
        if body is None:
            raise UpstreamResponseError(
                f"upstream response body is larger than {limits.max_body_bytes} bytes "
                "(limits.max_body_bytes); the forward proxy holds each response whole"
            )
        headers = client_response_headers(upstream.headers)
        if route is not None and route.response:
            parts = MessageParts(headers, body)
            try:
                parts, counts = await self._enforcer.rewrite(
                    route.response, parts, caller, Phase.RESPONSE
                )
            except _RESPONSE_FAULTS as error:
                raise UpstreamResponseError(
                    f"upstream response cannot be processed: {error.message}"
                ) from error
            before = exchange.counts or RewriteCounts()
            exchange.counts = RewriteCounts(
                before.tokenized + counts.tokenized, before.detokenized + counts.detokenized
            )
            headers, body = parts.headers, parts.body
        return _mitmproxy_response(flow.request.method, upstream, headers, body)

    def log_access(self, exchange: Exchange, flow: http.HTTPFlow) -> None:
        seconds = time.perf_counter() - exchange.started
        if self._metrics is not None:
            self._metrics.observe_request(
                "forward", exchange.connection, exchange.route, exchange.status, seconds
            )
        if not self._access_log:
            return
        counts = exchange.counts or RewriteCounts()
        access_logger.info(
            "%s %s mode=forward connection=%s route=%s status=%d duration_ms=%.1f tokenized=%d "
            "detokenized=%d%s",
            exchange.method,
            exchange.path,
            exchange.connection,
            exchange.route,
            exchange.status,
            seconds * 1000,
            counts.tokenized,
            counts.detokenized,
            f" error={exchange.error_type}" if exchange.error_type else "",
        )


def upstream_url(
    connection: Connection, host: str, path: str, query: str
) -> tuple[str, str | None]:
    """Return the URL to send to, and the TLS server name when it differs from the URL's host.

    When the connection's ``upstream`` names one of its hosts, the request goes to the host the
    client asked for, with the upstream's scheme and port. Otherwise ``upstream`` overrides the
    address (a stand-in or a sandbox), and the TLS server name stays the requested host.
    """
    parts = urlsplit(connection.upstream)
    upstream_host = (parts.hostname or "").lower()
    if upstream_host == host or upstream_host in connection.hosts:
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        base = f"{parts.scheme}://{netloc}{parts.path}"
        server_hostname = None
    else:
        base = connection.upstream
        server_hostname = host if parts.scheme == "https" else None
    return base + path + (f"?{query}" if query else ""), server_hostname


def error_response(error: MessageError, route: str | None = None) -> http.Response:
    response = json_response(error.status, error_body(error, route))
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vaultgate"'
    elif error.status == 407:
        response.headers["Proxy-Authenticate"] = 'Basic realm="vaultgate"'
    return response


def json_response(status: int, body: bytes) -> http.Response:
    return http.Response.make(status, body, {"Content-Type": "application/json"})


def _check_transfer_coding(request: http.Request) -> None:
    # mitmproxy accepts "gzip, chunked" and leaves the gzip coding on the body it hands over.
    # A route would misread that body and a relay would send it on unlabelled, so only chunked
    # is accepted.
    for value in request.headers.get_all("transfer-encoding"):
        if value.strip().lower() != "chunked":
            raise InvalidBodyError("only the chunked transfer coding is accepted")


def _request_headers(request: http.Request) -> CIMultiDict[str]:
    return CIMultiDict(
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in request.headers.fields
    )


def _mitmproxy_response(
    method: str, upstream: ClientResponse, headers: CIMultiDict[str], body: bytes
) -> http.Response:
    no_body = method == "HEAD" or upstream.status in _NO_BODY_STATUSES
    fields = [
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers.items()
    ]
    if method == "HEAD" and upstream.content_length is not None:
        # The length a GET would have (RFC 9110, 8.6); no body follows.
        fields.append((b"content-length", str(upstream.content_length).encode()))
    elif not no_body:
        fields.append((b"content-length", str(len(body)).encode()))
    now = time.time()
    return http.Response(
        http_version=b"HTTP/1.1",
        status_code=upstream.status,
        reason=(upstream.reason or "").encode("latin-1", "replace"),
        headers=http.Headers(fields),
        content=b"" if no_body else body,
        trailers=None,
        timestamp_start=now,
        timestamp_end=now,
    )
