"""The vault API through a real listening gateway; every JSON response is validated against
the OpenAPI document the gateway serves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.api.app import openapi_document
from gateway.server import Gateway
from tests.harness import api_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.redis_server import RedisServer

PAN = "5555555555554444"
EMAIL = "ada@example.com"
remember_sensitive(PAN, EMAIL)

ROUTE = """\
connection: pay
upstream: http://127.0.0.1:9
auth: {clients: [admin]}
routes: []
"""

POLICY = """\
clients:
  admin:
    keys: [{secret: admin-key-0123456789}]
    roles: [admin]
  support:
    keys: [{secret: support-key-0123456789}]
    roles: [support]
  intake:
    keys: [{secret: intake-key-0123456789}]
    roles: [intake]
classes:
  card.pan: {format: pan, mask: first6_last4, reveal_to: [pay]}
  pii.email: {format: uuid, deterministic: true, mask: email}
  amount: {format: numeric}
roles:
  admin:
    grants:
      - {actions: [tokenize, detokenize, delete], classes: ["*"], view: plain}
  support:
    grants:
      - {actions: [detokenize], classes: [card.pan, pii.email], view: masked, rate_limit: 3/m}
  intake:
    grants:
      - {actions: [tokenize], classes: [card.pan, pii.email]}
"""

KEYS = {
    "admin": "admin-key-0123456789",
    "support": "support-key-0123456789",
    "intake": "intake-key-0123456789",
}


class OpenApi:
    """Response validation against the served OpenAPI 3.1 document (JSON Schema 2020-12)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        operation = self.document["paths"][path][method.lower()]
        response = operation["responses"][str(status)]
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[-1]
            response = self.document["components"]["responses"][name]
        schema = response["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator(
            {"$ref": "urn:openapi#" + schema["$ref"][1:]} if "$ref" in schema else schema,
            registry=self.registry,
        )
        validator.validate(body)


@pytest.fixture(scope="module")
def openapi() -> OpenApi:
    return OpenApi(openapi_document())


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    started = await start_gateway(tmp_path, {"pay.yaml": ROUTE}, policy=POLICY)
    yield started
    await started.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, openapi: OpenApi) -> None:
        self.http, self.base, self.openapi = http, base, openapi

    async def call(
        self,
        method: str,
        path: str,
        client: str | None,
        body: Any = None,
        template: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {KEYS[client]}"} if client else {}
        async with self.http.request(
            method, self.base + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            document = (
                json.loads(text) if text and response.content_type == "application/json" else None
            )
        if document is not None:
            self.openapi.validate(method, template or path, response.status, document)
        return response.status, document

    async def tokenize(self, client: str, items: list[dict[str, Any]]) -> tuple[int, Any]:
        return await self.call("POST", "/v1/tokenize", client, {"items": items})

    async def detokenize(
        self, client: str, tokens: list[str], view: str | None = None
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"tokens": tokens}
        if view:
            body["view"] = view
        return await self.call("POST", "/v1/detokenize", client, body)


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway: Gateway, openapi: OpenApi) -> Api:
    return Api(http, api_url(gateway), openapi)


async def test_tokenize_and_detokenize_batch(api: Api) -> None:
    status, body = await api.tokenize(
        "admin",
        [
            {"value": PAN, "class": "card.pan"},
            {"value": EMAIL, "class": "pii.email"},
            {"value": 1999, "class": "amount"},
            {"value": "x", "class": "card.pan"},
            {"value": "y", "class": "nope"},
        ],
    )
    assert status == 200
    items = body["items"]
    pan_token, email_token, amount_token = (item["token"] for item in items[:3])
    assert pan_token[:6] == PAN[:6]
    assert items[3]["error"]["type"] == "invalid_value"
    assert items[4]["error"]["type"] == "invalid_value"

    status, body = await api.detokenize(
        "admin", [pan_token, email_token, amount_token, "tok_" + "0" * 32]
    )
    assert status == 200
    assert body["items"][:3] == [
        {"value": PAN, "class": "card.pan", "view": "plain"},
        {"value": EMAIL, "class": "pii.email", "view": "plain"},
        {"value": 1999, "class": "amount", "view": "plain"},
    ]
    assert body["items"][3]["error"]["type"] == "invalid_token"


async def test_deterministic_class_repeats_token(api: Api) -> None:
    _, first = await api.tokenize("admin", [{"value": EMAIL, "class": "pii.email"}])
    _, second = await api.tokenize("intake", [{"value": EMAIL, "class": "pii.email"}])
    assert first["items"][0]["token"] == second["items"][0]["token"]


async def test_view_is_capped_by_grant(api: Api) -> None:
    _, body = await api.tokenize(
        "admin", [{"value": PAN, "class": "card.pan"}, {"value": EMAIL, "class": "pii.email"}]
    )
    tokens = [item["token"] for item in body["items"]]

    status, body = await api.detokenize("support", tokens, view="plain")
    assert status == 200
    assert body["items"] == [
        {"value": "555555******4444", "class": "card.pan", "view": "masked"},
        {"value": "a**@example.com", "class": "pii.email", "view": "masked"},
    ]
    _, body = await api.detokenize("support", tokens, view="redacted")
    assert [item["value"] for item in body["items"]] == ["[REDACTED]", "[REDACTED]"]
    _, body = await api.detokenize("admin", tokens, view="masked")
    assert [item["view"] for item in body["items"]] == ["masked", "masked"]


async def test_denials_are_per_item(api: Api) -> None:
    _, body = await api.tokenize("admin", [{"value": 42, "class": "amount"}])
    token = body["items"][0]["token"]
    status, body = await api.detokenize("support", [token])
    assert status == 200
    assert body["items"][0]["error"]["type"] == "forbidden"
    status, body = await api.tokenize("support", [{"value": PAN, "class": "card.pan"}])
    assert body["items"][0]["error"]["type"] == "forbidden"
    status, body = await api.detokenize("intake", [token])
    assert body["items"][0]["error"]["type"] == "forbidden"


async def test_rate_limit_per_client_and_class(api: Api) -> None:
    _, body = await api.tokenize("admin", [{"value": PAN, "class": "card.pan"}])
    token = body["items"][0]["token"]
    outcomes = []
    for _ in range(4):
        _, body = await api.detokenize("support", [token])
        outcomes.append(body["items"][0].get("view") or body["items"][0]["error"]["type"])
    assert outcomes == ["masked", "masked", "masked", "rate_limited"]


async def test_unknown_and_wrong_keys_get_one_answer(api: Api, http: aiohttp.ClientSession) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": "Basic x"},
    ):
        async with http.post(
            api.base + "/v1/tokenize", json={"items": []}, headers=headers
        ) as response:
            assert response.status == 401
            body = await response.json()
        api.openapi.validate("POST", "/v1/tokenize", 401, body)
        assert body["error"]["message"] == "missing or invalid API key in the Authorization header"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": []}, 400),
        ({"items": [{"value": True, "class": "card.pan"}]}, 400),
        ({"items": [{"value": "x"}]}, 400),
        ([], 400),
    ],
)
async def test_bad_request_bodies(api: Api, body: Any, status: int) -> None:
    assert (await api.call("POST", "/v1/tokenize", "admin", body))[0] == status


async def test_delete_token(api: Api) -> None:
    _, body = await api.tokenize("admin", [{"value": PAN, "class": "card.pan"}])
    token = body["items"][0]["token"]
    template = "/v1/tokens/{token}"
    assert (await api.call("DELETE", f"/v1/tokens/{token}", "support", template=template))[0] == 403
    assert (await api.call("DELETE", f"/v1/tokens/{token}", "admin", template=template))[0] == 204
    assert (await api.call("DELETE", f"/v1/tokens/{token}", "admin", template=template))[0] == 404
    _, body = await api.detokenize("admin", [token])
    assert body["items"][0]["error"]["type"] == "invalid_token"


async def test_erase_by_value(api: Api) -> None:
    _, body = await api.tokenize("admin", [{"value": EMAIL, "class": "pii.email"}])
    token = body["items"][0]["token"]
    status, body = await api.call(
        "POST", "/v1/erase", "support", {"class": "pii.email", "values": [EMAIL]}
    )
    assert status == 403
    status, body = await api.call(
        "POST", "/v1/erase", "admin", {"class": "card.pan", "values": [PAN]}
    )
    assert status == 400
    assert "class 'card.pan' is not deterministic" in json.dumps(body)
    assert PAN not in json.dumps(body)
    status, body = await api.call(
        "POST", "/v1/erase", "admin", {"class": "pii.email", "values": [EMAIL]}
    )
    assert (status, body) == (200, {"erased": 1})
    _, body = await api.detokenize("admin", [token])
    assert body["items"][0]["error"]["type"] == "invalid_token"
    _, again = await api.tokenize("admin", [{"value": EMAIL, "class": "pii.email"}])
    assert again["items"][0]["token"] != token


async def test_health_ready_and_openapi(api: Api) -> None:
    assert await api.call("GET", "/healthz", None) == (200, {"status": "ok"})
    assert await api.call("GET", "/readyz", None) == (200, {"status": "ready"})
    status, document = await api.call("GET", "/openapi.json", None)
    assert status == 200
    assert document["openapi"].startswith("3.1")


async def test_metrics_count_operations_without_values(
    api: Api, http: aiohttp.ClientSession
) -> None:
    _, body = await api.tokenize("admin", [{"value": PAN, "class": "card.pan"}])
    token = body["items"][0]["token"]
    await api.detokenize("support", [token])
    async with http.get(api.base + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert (
        'vaultgate_token_operations_total{class_name="card.pan",operation="tokenize",outcome="allowed"} 1.0'
        in text
    )
    assert (
        'vaultgate_token_operations_total{class_name="card.pan",operation="detokenize",outcome="allowed"} 1.0'
        in text
    )
    assert "vaultgate_requests_total" in text
    assert PAN not in text
    assert token not in text


async def test_readyz_fails_while_store_is_down(
    tmp_path: Path, private_redis_server: RedisServer, http: aiohttp.ClientSession, openapi: OpenApi
) -> None:
    gateway = await start_gateway(
        tmp_path,
        {"pay.yaml": ROUTE},
        policy=POLICY,
        store_url=private_redis_server.url,
        limits="store_timeout: 500ms\n",
    )
    try:
        api = Api(http, api_url(gateway), openapi)
        private_redis_server.stop()
        status, body = await api.call("GET", "/readyz", None)
        assert status == 503
        assert body["status"] == "unavailable"
        status, body = await api.tokenize("admin", [{"value": PAN, "class": "card.pan"}])
        assert status == 503
        assert body["error"]["type"] == "store_unavailable"
        private_redis_server.start()
        assert (await api.call("GET", "/readyz", None))[0] == 200
    finally:
        await gateway.stop()


def test_openapi_validation_rejects_wrong_shape(openapi: OpenApi) -> None:
    with pytest.raises(jsonschema.ValidationError):
        openapi.validate("POST", "/v1/detokenize", 200, {"items": [{"value": "x"}]})
    with pytest.raises(jsonschema.ValidationError):
        openapi.validate("POST", "/v1/tokenize", 401, {"error": {"type": "x"}})
