"""The baseline: a bare aiohttp reverse proxy that relays every request unchanged.

It reads the request body whole, sends it upstream over one pooled ``ClientSession`` and returns
the upstream's status, headers and body. Like vaultgate it runs on the default asyncio event
loop, decompresses nothing and drops hop-by-hop and framing headers. It does no routing, header
policy, logging or body processing, so the difference between it and vaultgate is the cost of
what vaultgate adds.

Run: ``python bench/relay.py --port PORT --upstream http://127.0.0.1:UPSTREAM_PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# Hop-by-hop headers (RFC 9110, 7.6.1) plus Host and the framing headers, which the client
# session sets from the URL and the body it sends.
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def relayed_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict(
        (name, value) for name, value in headers.items() if name.lower() not in DROPPED_HEADERS
    )


class Relay:
    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None, "Relay.start() was not awaited"
        body = await request.read()
        async with self._session.request(
            request.method,
            URL(self._upstream + request.raw_path, encoded=True),
            headers=relayed_headers(request.headers),
            data=body if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            response_body = await upstream.read()
            return web.Response(
                status=upstream.status,
                reason=upstream.reason,
                headers=relayed_headers(upstream.headers),
                body=response_body,
            )


async def serve(port: int, upstream: str) -> None:
    relay = Relay(upstream)
    await relay.start()
    server = web.Server(relay.handle, access_log=None, auto_decompress=False)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print(f"relay listening on http://127.0.0.1:{port} -> {upstream}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="loopback TCP port to listen on")
    parser.add_argument(
        "--upstream", required=True, help="upstream base URL, such as http://127.0.0.1:9000"
    )
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.upstream))


if __name__ == "__main__":
    main()
