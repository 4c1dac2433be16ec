"""The HTTP client side of the relay: one pooled aiohttp session for every upstream.

The session relays bytes as they are: no automatic decompression (the route engine decodes
with a cap where it must), no redirects followed (they go back to the client), no cookie jar
(one client's cookies must never reach another), and no headers added that the client did not
send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.config.model import Limits
from gateway.errors import UpstreamResponseError, UpstreamTimeoutError, UpstreamUnreachableError

logger = logging.getLogger("gateway.proxy")

_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class UpstreamClient:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

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
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response once its headers have arrived.

        ``url`` is used as given, already percent-encoded. The caller releases the response.
        Raises ``UpstreamUnreachableError`` (502) and ``UpstreamTimeoutError`` (504).
        """
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        try:
            return await self._session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
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
