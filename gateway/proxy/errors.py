"""Error answers of the proxies: ``{"error": {"type", "message", "route"}}`` JSON bodies."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.errors import MessageError


def error_body(error: MessageError) -> bytes:
    detail: dict[str, str] = {"type": error.error_type, "message": error.message}
    if error.route:
        detail["route"] = error.route
    return json.dumps({"error": detail}).encode()


def error_response(error: MessageError) -> web.Response:
    response = web.Response(
        status=error.status, body=error_body(error), content_type="application/json"
    )
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vaultgate"'
    return response
