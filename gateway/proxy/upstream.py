"""The HTTP client side of the relay: one pooled aiohttp session for every upstream.

The session relays bytes as they are: no automatic decompression (the route engine decodes
with a cap where it must), no redirects followed (they go back to the client), no cookie jar
(one client's cookies must never reach another), and no headers added that the client did not
send.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterable, Sequence

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.config.model import Limits
from gateway.engine.routing import Connection, UpstreamTls
from gateway.errors import UpstreamResponseError, UpstreamTimeoutError, UpstreamUnreachableError

logger = logging.getLogger("gateway.proxy")

_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def upstream_ssl_context(tls: UpstreamTls) -> ssl.SSLContext:
    """Return a context that verifies against the system store plus ``tls.ca_file``, and
    presents ``tls.client_cert`` when it is set."""
    context = ssl.create_default_context()
    if tls.ca_file is not None:
        context.load_verify_locations(cafile=tls.ca_file)
    if tls.client_cert is not None:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


class UpstreamClient:
    def __init__(self, limits: Limits, connections: Sequence[Connection] = ()) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._ssl_contexts = {
            connection.name: upstream_ssl_context(connection.upstream_tls)
            for connection in connections
            if connection.upstream_tls is not None
        }

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self._limits.upstream_connect_timeout,
                sock_read=self._limits.upstream_timeout,
            ),
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        url: str,
        method: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        connection: str | None = None,
        server_hostname: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response once its headers have arrived.

        ``url`` is used as given, already percent-encoded. ``connection`` selects the
        connection's TLS settings. ``server_hostname`` is the TLS server name to send and verify
        when it differs from the URL's host. The caller releases the response.
        Raises ``UpstreamUnreachableError`` (502) and ``UpstreamTimeoutError`` (504).
        """
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        tls: ssl.SSLContext | bool = self._ssl_contexts.get(connection or "", True)
        try:
            return await self._session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                ssl=tls,
                server_hostname=server_hostname,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError("the upstream did not answer in time") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamResponseError("the upstream sent an invalid HTTP response") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachableError(
                f"the upstream could not be reached: {_reason(exc)}"
            ) from exc


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection to {exc.host}:{exc.port} failed ({exc.os_error.strerror or 'refused'})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    return type(exc).__name__


async def read_limited(
    response: aiohttp.ClientResponse, max_bytes: int, time_limit: float
) -> bytes | None:
    """Read the whole response body within ``time_limit`` seconds, or return None once it passes
    ``max_bytes``."""
    length = response.content_length
    if length is not None and length > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(time_limit):
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    return None
                chunks.append(chunk)
    except TimeoutError as exc:
        raise UpstreamTimeoutError("the upstream response body did not arrive in time") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamResponseError("the upstream response body is malformed or cut off") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachableError(
            f"reading the upstream response failed: {_reason(exc)}"
        ) from exc
    return b"".join(chunks)
