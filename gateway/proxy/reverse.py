"""The reverse proxy: an aiohttp server that applies routes and relays to each upstream.

A request finds its connection by mount and its route by method, path and content type. A
route with field operations has its body read whole (up to ``limits.max_body_bytes``), rewritten
through the vault, and relayed. The same happens to the response when the route has response
operations. Everything else is streamed through unchanged. A message that a route cannot process
gets a JSON error and is never relayed as it came.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import ClientResponse, hdrs, web
from multidict import CIMultiDict

from gateway.config.model import Limits
from gateway.engine.auth import authenticate
from gateway.engine.bodies import parse_media_type
from gateway.engine.headers import client_response_headers, upstream_request_headers
from gateway.engine.rewrite import MessageParts, RewriteCounts
from gateway.engine.routing import Connection, Route, Router, UnmatchedPolicy
from gateway.errors import (
    AuthenticationError,
    BodyTooLargeError,
    ForbiddenError,
    InvalidBodyError,
    InvalidTokenError,
    InvalidValueError,
    MessageError,
    MissingFieldError,
    NotFoundError,
    RequestTimeoutError,
    RouteNotMatchedError,
    UnsupportedMediaError,
    UpstreamResponseError,
)
from gateway.functions.message import HttpMessage
from gateway.functions.phase import PhaseRunner
from gateway.functions.pool import FunctionPools
from gateway.metrics import Metrics
from gateway.policy.enforcer import Caller, Enforcer, Phase
from gateway.proxy.errors import error_response
from gateway.proxy.upstream import UpstreamClient, read_limited

logger = logging.getLogger("gateway.proxy")
access_logger = logging.getLogger("gateway.access")

# Path parts that could carry a value: emails, and digit runs grouped by spaces, dashes or dots.
_PATH_VALUE = re.compile(r"[^/@]+@[^/]+|[^/]*%40[^/]*|\d(?:[\d .-]*\d){3,}")
_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNK = 64 * 1024
# Errors that describe a bad upstream response when they come from the response phase.
_RESPONSE_FAULTS = (
    InvalidBodyError,
    UnsupportedMediaError,
    BodyTooLargeError,
    InvalidTokenError,
    InvalidValueError,
    MissingFieldError,
)


@dataclass(slots=True)
class Exchange:
    """The facts about one request that its access log line reports."""

    method: str
    path: str
    started: float
    connection: str = "-"
    route: str = "-"
    status: int = 0
    counts: RewriteCounts | None = None
    error_type: str | None = None


class ReverseProxy:
    def __init__(
        self,
        router: Router,
        enforcer: Enforcer,
        limits: Limits,
        upstream: UpstreamClient,
        *,
        access_log: bool = True,
        functions: FunctionPools | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._router = router
        self._enforcer = enforcer
        self._limits = limits
        self._upstream = upstream
        self._access_log = access_log
        self._metrics = metrics
        self._steps = PhaseRunner(enforcer, limits, functions)

    @property
    def functions(self) -> FunctionPools | None:
        return self._steps.pool

    def replace_routes(self, router: Router, functions: FunctionPools | None) -> None:
        """Serve new requests with other routes and functions; requests in flight keep theirs."""
        self._router = router
        self._steps = PhaseRunner(self._enforcer, self._limits, functions)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Handle one request; the aiohttp low-level server calls this."""
        path, _, query = request.raw_path.partition("?")
        exchange = Exchange(
            request.method, _PATH_VALUE.sub("[redacted]", path), time.perf_counter()
        )
        try:
            response = await self._handle(request, path, query, exchange)
        except MessageError as error:
            exchange.error_type = error.error_type
            logger.warning(
                "rejected request: connection=%s route=%s status=%d type=%s reason=%s",
                exchange.connection,
                exchange.route,
                error.status,
                error.error_type,
                error.message,
            )
            response = error_response(error, exchange.route if exchange.route != "-" else None)
        except ConnectionResetError:
            # The client left before its response was written; there is nobody to answer.
            # 499 is the status nginx logs for this.
            exchange.status, exchange.error_type = 499, "client_closed"
            logger.info(
                "client closed the connection: connection=%s route=%s",
                exchange.connection,
                exchange.route,
            )
            self._log_access(exchange)
            raise
        except Exception:
            # Only the type and the route are logged: an unexpected error's text may quote input.
            logger.exception(
                "unexpected error: connection=%s route=%s", exchange.connection, exchange.route
            )
            exchange.error_type = "internal_error"
            response = web.json_response(
                {"error": {"type": "internal_error", "message": "internal gateway error"}},
                status=500,
            )
        exchange.status = response.status
        self._log_access(exchange)
        return response

    async def _handle(
        self, request: web.BaseRequest, path: str, query: str, exchange: Exchange
    ) -> web.StreamResponse:
        if not path.startswith("/"):
            raise InvalidBodyError("the request target must be a path starting with '/'")
        if "#" in request.raw_path:
            # A request target never has a fragment (RFC 9112, 3.2). An HTTP client library
            # drops it on the way upstream, after it made the route miss.
            raise InvalidBodyError("the request target must not contain '#'")
        mount = self._router.find_connection(path)
        if mount is None:
            raise NotFoundError("no connection is mounted at this path")
        connection = mount.connection
        exchange.connection = connection.name

        media_type = parse_media_type(request.headers.get(hdrs.CONTENT_TYPE))
        route = connection.find_route(
            request.method, mount.path, media_type.type if media_type else None
        )
        if route is not None:
            exchange.route = route.name
        caller = await self._authenticate(connection, route, request)
        if route is None and connection.unmatched is UnmatchedPolicy.REJECT:
            raise RouteNotMatchedError(
                f"connection {connection.name!r} accepts only requests that match one of its routes"
            )

        upstream = (route.upstream if route else None) or connection.upstream
        url = upstream + mount.path + (f"?{query}" if query else "")
        auth_header = connection.auth.header if connection.auth else None
        headers = upstream_request_headers(request.headers, auth_header=auth_header)

        if route is None or not route.has_steps:
            return await self._stream_through(request, url, headers, exchange)
        message = HttpMessage(MessageParts(headers, b"", query), request.method, mount.path)
        return await self._rewrite_through(request, caller, route, connection, message, exchange)

    async def _authenticate(
        self, connection: Connection, route: Route | None, request: web.BaseRequest
    ) -> Caller:
        """Return the caller of a request; a refused one is audited and raised (401 or 403)."""
        operation = route.name if route else "unmatched"
        auth = connection.auth
        if auth is None:
            return Caller(None, connection.name, operation)
        try:
            client = authenticate(
                connection.name,
                auth.clients,
                auth.header,
                auth.scheme,
                request.headers,
                self._enforcer.policy.clients,
            )
        except (AuthenticationError, ForbiddenError) as error:
            await self._enforcer.record_denial(
                Caller(None, connection.name, operation), error.message
            )
            raise
        return Caller(client, connection.name, operation)

    async def _stream_through(
        self, request: web.BaseRequest, url: str, headers: CIMultiDict[str], exchange: Exchange
    ) -> web.StreamResponse:
        body = None
        if request.body_exists:
            await _send_continue(request)
            if request.content_length is not None:
                headers[hdrs.CONTENT_LENGTH] = str(request.content_length)
            body = request.content.iter_chunked(_CHUNK)
        upstream = await self._upstream.send(
            url, request.method, headers, body, connection=exchange.connection
        )
        try:
            return await _stream_response(request, upstream)
        finally:
            upstream.release()

    async def _rewrite_through(
        self,
        request: web.BaseRequest,
        caller: Caller,
        route: Route,
        connection: Connection,
        message: HttpMessage,
        exchange: Exchange,
    ) -> web.StreamResponse:
        steps = self._steps
        message.parts.body = await self._read_request_body(request)
        message, counts = await steps.run(route, Phase.REQUEST, message, caller)
        exchange.counts = counts
        parts = message.parts
        # A function may have changed the method, the path or the query.
        base = route.upstream or connection.upstream
        url = base + message.path + (f"?{parts.query}" if parts.query else "")

        send_body = parts.body if (parts.body or request.body_exists) else None
        upstream = await self._upstream.send(
            url, message.method, parts.headers, send_body, connection=caller.connection
        )
        try:
            if not (route.response or route.response_functions):
                return await _stream_response(request, upstream)
            return await self._rewrite_response(
                request, caller, route, message, upstream, exchange, steps
            )
        finally:
            upstream.release()

    async def _read_request_body(self, request: web.BaseRequest) -> bytes:
        limit = self._limits.max_body_bytes
        too_large = f"request body is larger than {limit} bytes (limits.max_body_bytes)"
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLargeError(too_large)
        if not request.body_exists:
            return b""
        await _send_continue(request)

        chunks: list[bytes] = []
        size = 0
        timeout = self._limits.client_body_timeout
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(too_large)
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"the request body did not arrive within {timeout:g} s (limits.client_body_timeout)"
            ) from exc
        return b"".join(chunks)

    async def _rewrite_response(
        self,
        request: web.BaseRequest,
        caller: Caller,
        route: Route,
        sent: HttpMessage,
        upstream: ClientResponse,
        exchange: Exchange,
        steps: PhaseRunner,
    ) -> web.StreamResponse:
        limits = self._limits
        body = await read_limited(upstream, limits.max_body_bytes, limits.upstream_timeout)
        if body is None:
            raise UpstreamResponseError(
                f"upstream response body is larger than {limits.max_body_bytes} bytes"
            )
        parts = MessageParts(client_response_headers(upstream.headers), body)
        received = HttpMessage(parts, sent.method, sent.path, upstream.status)
        try:
            received, counts = await steps.run(route, Phase.RESPONSE, received, caller)
        except _RESPONSE_FAULTS as error:
            raise UpstreamResponseError(
                f"upstream response cannot be processed: {error.message}"
            ) from error
        if exchange.counts is not None:
            counts = RewriteCounts(
                exchange.counts.tokenized + counts.tokenized,
                exchange.counts.detokenized + counts.detokenized,
            )
        exchange.counts = counts

        if request.method == "HEAD" and upstream.content_length is not None:
            # The length a GET would have (RFC 9110, 8.6); no body follows.
            parts.headers[hdrs.CONTENT_LENGTH] = str(upstream.content_length)
        parts = received.parts
        status = received.status or upstream.status
        reason = upstream.reason if status == upstream.status else None
        response = web.Response(status=status, reason=reason, headers=parts.headers)
        if request.method != "HEAD" and status not in _NO_BODY_STATUSES:
            response.body = parts.body
        return response

    def _log_access(self, exchange: Exchange) -> None:
        seconds = time.perf_counter() - exchange.started
        if self._metrics is not None:
            self._metrics.observe_request(
                "reverse", exchange.connection, exchange.route, exchange.status, seconds
            )
        if not self._access_log:
            return
        counts = exchange.counts or RewriteCounts()
        access_logger.info(
            "%s %s connection=%s route=%s status=%d duration_ms=%.1f tokenized=%d detokenized=%d%s",
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


async def _send_continue(request: web.BaseRequest) -> None:
    """Send ``100 Continue`` when the client waits for it before sending the body."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if (
        expect.lower() == "100-continue"
        and request.version >= (1, 1)
        and request.writer is not None
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _stream_response(
    request: web.BaseRequest, upstream: ClientResponse
) -> web.StreamResponse:
    headers = client_response_headers(upstream.headers)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    no_body = request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES
    if upstream.content_length is not None and upstream.status not in _NO_BODY_STATUSES:
        # For HEAD this is the length a GET would have (RFC 9110, 8.6); no body follows.
        response.content_length = upstream.content_length
    await response.prepare(request)
    if no_body:
        await response.write_eof()
        return response
    try:
        async for chunk in upstream.content.iter_chunked(_CHUNK):
            await response.write(chunk)
    except (TimeoutError, aiohttp.ClientError) as exc:
        # The status line is already sent, so the only honest signal left is to cut the
        # connection: the client sees a truncated body instead of a complete-looking one.
        logger.warning(
            "upstream response interrupted, closing client connection: %s", type(exc).__name__
        )
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
