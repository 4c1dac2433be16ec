"""A local upstream stand-in that records every request it receives.

It listens on a free loopback port. Tests set ``respond`` to shape the answer, and read
``requests`` to see exactly what the gateway relayed, byte for byte.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class ReceivedRequest:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes
    version: tuple[int, int]


type Responder = Callable[[web.Request, ReceivedRequest], Awaitable[web.StreamResponse]]


async def echo_json(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
    """Answer with what was received, so a test can also read it from the client side."""
    return web.json_response({"method": received.method, "path": received.path_qs, "ok": True})


class RecordingUpstream:
    """``ssl_context``, when given, makes it an HTTPS server with that context's certificate."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.requests: list[ReceivedRequest] = []
        self.respond: Responder = echo_json
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def last(self) -> ReceivedRequest:
        assert self.requests, "the upstream received no request"
        return self.requests[-1]

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress off: the recording shows the bytes exactly as the gateway sent them.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = ReceivedRequest(
            method=request.method,
            path_qs=request.raw_path,
            headers=CIMultiDict(request.headers),
            body=await request.read(),
            version=(request.version.major, request.version.minor),
        )
        self.requests.append(received)
        return await self.respond(request, received)
