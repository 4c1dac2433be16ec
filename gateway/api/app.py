"""The vault API on ``listen.admin``: batch tokenize and detokenize, delete, erase, health,
readiness, metrics and the OpenAPI document.

Every ``/v1`` call authenticates a client with ``Authorization: Bearer <key>`` and runs under
the policy through ``ApiOperations``. Item errors are reported per item with the same
``{"type", "message"}`` shape as request errors, which fail the whole call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from importlib import resources
from typing import Any

import simplejson
import yaml
from aiohttp import web

from gateway.config.model import Limits
from gateway.engine.auth import find_client, presented_key
from gateway.engine.bodies import json_number, parse_json
from gateway.errors import (
    AuthenticationError,
    BodyTooLargeError,
    InvalidBodyError,
    InvalidTokenError,
    MessageError,
    NotFoundError,
    StoreUnavailableError,
    UnsupportedMediaError,
)
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.policy.enforcer import ApiOperations, Caller, RevealedView
from gateway.policy.model import Client, View
from gateway.proxy.errors import error_body
from gateway.store.base import TokenStore
from gateway.tokens.vault import ValueType

logger = logging.getLogger("gateway.api")
access_logger = logging.getLogger("gateway.access")

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPERATIONS_KEY = web.AppKey("operations", ApiOperations)
METRICS_KEY = web.AppKey("metrics", Metrics)
STORE_KEY = web.AppKey("store", TokenStore)
LIMITS_KEY = web.AppKey("limits", Limits)
CLIENTS_KEY: web.AppKey[Mapping[str, Client]] = web.AppKey("clients")


def create_api_app(
    operations: ApiOperations,
    clients: Mapping[str, Client],
    store: TokenStore,
    metrics: Metrics,
    limits: Limits,
) -> web.Application:
    app = web.Application(middlewares=[_errors_and_metrics], client_max_size=limits.max_body_bytes)
    app[OPERATIONS_KEY] = operations
    app[CLIENTS_KEY] = clients
    app[STORE_KEY] = store
    app[METRICS_KEY] = metrics
    app[LIMITS_KEY] = limits
    app.router.add_post("/v1/tokenize", _tokenize)
    app.router.add_post("/v1/detokenize", _detokenize)
    app.router.add_delete("/v1/tokens/{token}", _delete_token)
    app.router.add_post("/v1/erase", _erase)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    return app


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
    )
    try:
        response = await handler(request)
    except MessageError as error:
        if isinstance(error, StoreUnavailableError):
            request.app[METRICS_KEY].store_errors.labels("admin").inc()
        logger.warning(
            "rejected vault API call: %s %s status=%d type=%s reason=%s",
            request.method,
            route,
            error.status,
            error.error_type,
            error.message,
        )
        response = web.Response(
            status=error.status, body=error_body(error), content_type="application/json"
        )
    except web.HTTPException as exception:
        http_error = _http_error(exception)
        response = web.Response(
            status=exception.status, body=error_body(http_error), content_type="application/json"
        )
    seconds = time.perf_counter() - started
    request.app[METRICS_KEY].observe_request("admin", "-", route, response.status, seconds)
    access_logger.info(
        "%s %s api status=%d duration_ms=%.1f",
        request.method,
        route,
        response.status,
        seconds * 1000,
    )
    return response


def _http_error(exception: web.HTTPException) -> MessageError:
    if exception.status == 404:
        return NotFoundError("no vault API call at this path")
    if exception.status == 413:
        return BodyTooLargeError("request body is larger than limits.max_body_bytes")
    error = MessageError(exception.reason)
    error.status = exception.status
    return error


async def _caller(request: web.Request, operation: str) -> Caller:
    key = presented_key(request.headers, "Authorization", "Bearer")
    client = find_client(key, request.app[CLIENTS_KEY])
    if client is None:
        caller = Caller(None, None, operation)
        reason = "missing or invalid API key in the Authorization header"
        await request.app[OPERATIONS_KEY].record_denial(caller, reason)
        raise AuthenticationError(reason)
    return Caller(client, None, operation)


async def _json_body(request: web.Request) -> dict[str, Any]:
    media_type = request.content_type
    if media_type != "application/json":
        raise UnsupportedMediaError("send the request body as Content-Type: application/json")
    limits = request.app[LIMITS_KEY]
    body = await request.read()
    document = parse_json(body, max_depth=limits.max_json_depth)
    if not isinstance(document, dict):
        raise InvalidBodyError("the request body must be a JSON object")
    return document


def _json_response(document: Any, status: int = 200) -> web.Response:
    text = simplejson.dumps(document, use_decimal=True, ensure_ascii=False)
    return web.Response(status=status, text=text, content_type="application/json")


def _item_error(error: MessageError) -> dict[str, Any]:
    return {"error": {"type": error.error_type, "message": error.client_message}}


def _items(document: dict[str, Any], key: str, limits: Limits) -> list[Any]:
    items = document.get(key)
    if not isinstance(items, list) or not items:
        raise InvalidBodyError(f"{key} must be a non-empty array")
    if len(items) > limits.max_fields:
        raise InvalidBodyError(
            f"{key} has more than {limits.max_fields} entries (limits.max_fields)"
        )
    return items


async def _tokenize(request: web.Request) -> web.Response:
    caller = await _caller(request, "POST /v1/tokenize")
    document = await _json_body(request)
    entries: list[tuple[str, ValueType, str]] = []
    for index, item in enumerate(_items(document, "items", request.app[LIMITS_KEY])):
        if not isinstance(item, dict) or not isinstance(item.get("class"), str):
            raise InvalidBodyError(f"items[{index}] must be an object with a class")
        value = item.get("value")
        if isinstance(value, str):
            entries.append((value, ValueType.STRING, item["class"]))
        elif isinstance(value, int | Decimal) and not isinstance(value, bool):
            entries.append((str(value), ValueType.NUMBER, item["class"]))
        else:
            raise InvalidBodyError(f"items[{index}].value must be a string or a number")
    results = await request.app[OPERATIONS_KEY].tokenize(caller, entries)
    return _json_response(
        {
            "items": [
                _item_error(result) if isinstance(result, MessageError) else {"token": result}
                for result in results
            ]
        }
    )


async def _detokenize(request: web.Request) -> web.Response:
    caller = await _caller(request, "POST /v1/detokenize")
    document = await _json_body(request)
    tokens = _items(document, "tokens", request.app[LIMITS_KEY])
    if not all(isinstance(token, str) for token in tokens):
        raise InvalidBodyError("tokens must be strings")
    view = None
    if document.get("view") is not None:
        try:
            view = View.parse(str(document["view"]))
        except ValueError as exc:
            raise InvalidBodyError(str(exc)) from None
    results = await request.app[OPERATIONS_KEY].detokenize(caller, tokens, view)
    return _json_response({"items": [_revealed_item(result) for result in results]})


def _revealed_item(result: RevealedView | MessageError) -> dict[str, Any]:
    if isinstance(result, MessageError):
        return _item_error(result)
    value: Any = result.value
    if result.value_type is ValueType.NUMBER:
        value = json_number(result.value)
    return {"value": value, "class": result.class_name, "view": result.view.label}


async def _delete_token(request: web.Request) -> web.Response:
    caller = await _caller(request, "DELETE /v1/tokens/{token}")
    try:
        await request.app[OPERATIONS_KEY].delete(caller, request.match_info["token"])
    except InvalidTokenError:
        raise NotFoundError("no such token (unknown, expired or already deleted)") from None
    return web.Response(status=204)


async def _erase(request: web.Request) -> web.Response:
    caller = await _caller(request, "POST /v1/erase")
    document = await _json_body(request)
    class_name = document.get("class")
    if not isinstance(class_name, str):
        raise InvalidBodyError("class must be a string")
    values = _items(document, "values", request.app[LIMITS_KEY])
    texts = []
    for value in values:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, int | Decimal) and not isinstance(value, bool):
            texts.append(str(value))
        else:
            raise InvalidBodyError("values must be strings or numbers")
    erased = await request.app[OPERATIONS_KEY].erase(caller, class_name, texts)
    return _json_response({"erased": erased})


async def _healthz(request: web.Request) -> web.Response:
    return _json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE_KEY].ping()
    except StoreUnavailableError:
        return _json_response(
            {"status": "unavailable", "reason": "the token store cannot be reached"}, 503
        )
    return _json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    # NOTE: with listen.workers above 1 this returns the counters of the one worker that
    # accepted the connection, so successive scrapes can get different workers. Summing the
    # workers would need prometheus_client's multiprocess mode with a shared directory.
    body = request.app[METRICS_KEY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 description of the vault API, shipped beside this module."""
    text = resources.files("gateway.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


__all__ = ["create_api_app", "openapi_document"]
