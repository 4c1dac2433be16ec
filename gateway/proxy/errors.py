"""Error responses of the proxies: ``{"error": {"type", "message", "route"}}`` JSON bodies."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.errors import MessageError


def error_body(error: MessageError, route: str | None = None) -> bytes:
    """Return the JSON error body; ``route`` names the route when the error does not."""
    detail: dict[str, str] = {"type": error.error_type, "message": error.client_message}
    if error.route or route:
        detail["route"] = error.route or route or ""
    return json.dumps({"error": detail}).encode()


def error_response(error: MessageError, route: str | None = None) -> web.Response:
    # The error is not changed: one exception object can fail several requests at once, such
    # as every call of a failed SQLite group commit.
    response = web.Response(
        status=error.status, body=error_body(error, route), content_type="application/json"
    )
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="vaultgate"'
    return response
