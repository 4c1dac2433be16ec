"""Steps of a phase through a listening gateway: order, response functions and failures."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from tests.functions.conftest import StartFunctions
from tests.harness import gateway_url
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4242424242424242"

MODULES = {
    "copy_card": """\
        def transform(message):
            message["body"]["before"] = message["body"]["card"]
            return message
        """,
    "compare": """\
        def transform(message):
            body = message["body"]
            body["changed"] = body["card"] != body["before"]
            del body["before"]
            return message
        """,
    "not_found_to_empty": """\
        def transform(message):
            if message["status"] == 404:
                message.update(status=200, body_type="json", body={"items": []})
            return message
        """,
    "fails": """\
        def transform(message):
            return None
        """,
}

ROUTES = """\
connection: shop
upstream: {upstream}
mount: /
auth:
  clients: [backend]
routes:
  - name: ordered
    match: {{method: POST, path: /ordered}}
    request:
      - function: copy_card
      - {{json: $.card, action: tokenize, class: card.pan}}
      - function: compare
      - function: set
        args: {{field: $.steps, value: 3}}
  - name: lookup
    match: {{method: GET, path: /lookup}}
    response:
      - function: remove
        args: {{field: $.internal}}
      - function: not_found_to_empty
  - name: broken-response
    match: {{method: GET, path: /broken}}
    response:
      - function: fails
"""


async def test_steps_run_in_order(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start_with_functions(
        MODULES, {"shop.yaml": ROUTES.format(upstream=upstream.url)}
    )
    async with client.post(f"{gateway_url(gateway)}/ordered", json={"card": PAN}) as response:
        assert response.status == 200, await response.text()
    received = json.loads(upstream.last.body)
    assert "before" not in received
    assert received["changed"] is True
    assert received["steps"] == 3
    assert received["card"] != PAN
    assert received["card"][-4:] == PAN[-4:]


async def test_response_functions_change_status_and_body(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    async def respond(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
        status = 404 if "missing" in received.path_qs else 200
        return web.json_response({"items": [1], "internal": "x"}, status=status)

    upstream.respond = respond
    gateway = await start_with_functions(
        MODULES, {"shop.yaml": ROUTES.format(upstream=upstream.url)}
    )
    base = gateway_url(gateway)
    async with client.get(f"{base}/lookup?q=1") as response:
        assert response.status == 200
        assert await response.json() == {"items": [1]}
    async with client.get(f"{base}/lookup?missing=1") as response:
        assert response.status == 200
        assert await response.json() == {"items": []}


async def test_failed_response_function_sends_no_body(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    async def respond(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
        return web.json_response({"secret": PAN})

    upstream.respond = respond
    gateway = await start_with_functions(
        MODULES, {"shop.yaml": ROUTES.format(upstream=upstream.url)}
    )
    async with client.get(f"{gateway_url(gateway)}/broken") as response:
        assert response.status == 500
        text = await response.text()
    assert PAN not in text
    assert "function fails returned an invalid message: returned NoneType" in text
