"""Each role against each class and view, through the vault API and through routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Gateway
from tests.harness import api_url, gateway_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.upstream import ReceivedRequest, RecordingUpstream

VALUES = {
    "card.pan": "4000056655665556",
    "pii.email": "grace@example.com",
    "secret.note": "launch code",
}
MASKED = {
    "card.pan": "400005******5556",
    "pii.email": "g****@example.com",
    "secret.note": "***********",
}
remember_sensitive(*VALUES.values())

ROLES = ["admin", "support", "auditor", "intake", "nobody"]
KEYS = {role: f"{role}-key-0123456789" for role in ROLES}

POLICY = (
    "clients:\n"
    + "".join(
        f"  {role}:\n    keys: [{{secret: {KEYS[role]}}}]\n    roles: [{role}]\n" for role in ROLES
    )
    + """\
classes:
  card.pan: {format: pan, mask: first6_last4, reveal_to: [pay]}
  pii.email: {format: uuid, deterministic: true, mask: email}
  secret.note: {format: uuid, mask: full}
roles:
  admin:
    grants:
      - {actions: [tokenize, detokenize, delete], classes: ["*"], view: plain}
  support:
    grants:
      - {actions: [detokenize], classes: [card.pan, pii.email], view: masked}
  auditor:
    grants:
      - {actions: [detokenize], classes: [pii.email], view: redacted}
  intake:
    grants:
      - {actions: [tokenize], classes: ["*"]}
  nobody:
    grants:
      - {actions: [tokenize], classes: [secret.note]}
"""
)

# The best view each role gets for each class; None means denied.
GRANTED: dict[str, dict[str, str | None]] = {
    "admin": {"card.pan": "plain", "pii.email": "plain", "secret.note": "plain"},
    "support": {"card.pan": "masked", "pii.email": "masked", "secret.note": None},
    "auditor": {"card.pan": None, "pii.email": "redacted", "secret.note": None},
    "intake": {"card.pan": None, "pii.email": None, "secret.note": None},
    "nobody": {"card.pan": None, "pii.email": None, "secret.note": None},
}
VIEW_ORDER = ["redacted", "masked", "plain"]

ROUTES = {
    "reveal.yaml": """\
connection: reveal
upstream: {upstream}
mount: /reveal
auth: {{header: X-Key, clients: [admin, support, auditor, intake, nobody]}}
routes:
  - name: show
    match: {{path: /show}}
    response:
      - {{json: $.value, action: detokenize}}
""",
    "pay.yaml": """\
connection: pay
upstream: {upstream}
mount: /pay
auth: {{header: X-Key, clients: [admin, support, auditor, intake, nobody]}}
routes:
  - name: charge
    match: {{path: /charge}}
    request:
      - {{json: $.value, action: detokenize}}
""",
}


def expected_value(class_name: str, view: str) -> str:
    if view == "plain":
        return VALUES[class_name]
    if view == "masked":
        return MASKED[class_name]
    return "[REDACTED]"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Gateway, RecordingUpstream, dict[str, str]]]:
    upstream = RecordingUpstream()
    await upstream.start()
    routes = {name: text.format(upstream=upstream.url) for name, text in ROUTES.items()}
    gateway = await start_gateway(tmp_path, routes, policy=POLICY)
    async with aiohttp.ClientSession(trust_env=False) as http:
        body = {"items": [{"value": value, "class": name} for name, value in VALUES.items()]}
        headers = {"Authorization": f"Bearer {KEYS['admin']}"}
        async with http.post(
            api_url(gateway) + "/v1/tokenize", json=body, headers=headers
        ) as response:
            items = (await response.json())["items"]
    tokens = {name: item["token"] for name, item in zip(VALUES, items, strict=True)}
    yield gateway, upstream, tokens
    await gateway.stop()
    await upstream.stop()


async def test_matrix_through_vault_api(
    setup: tuple[Gateway, RecordingUpstream, dict[str, str]],
) -> None:
    gateway, _, tokens = setup
    async with aiohttp.ClientSession(trust_env=False) as http:
        for role in ROLES:
            for requested in [None, *VIEW_ORDER]:
                body: dict[str, object] = {"tokens": list(tokens.values())}
                if requested:
                    body["view"] = requested
                headers = {"Authorization": f"Bearer {KEYS[role]}"}
                async with http.post(
                    api_url(gateway) + "/v1/detokenize", json=body, headers=headers
                ) as response:
                    assert response.status == 200
                    items = (await response.json())["items"]
                for class_name, item in zip(tokens, items, strict=True):
                    granted = GRANTED[role][class_name]
                    case = (role, class_name, requested)
                    if granted is None:
                        assert item["error"]["type"] == "forbidden", case
                        continue
                    view = (
                        granted
                        if requested is None
                        else min(granted, requested, key=VIEW_ORDER.index)
                    )
                    assert item == {
                        "value": expected_value(class_name, view),
                        "class": class_name,
                        "view": view,
                    }, case


async def test_matrix_through_response_route(
    setup: tuple[Gateway, RecordingUpstream, dict[str, str]],
) -> None:
    gateway, upstream, tokens = setup
    async with aiohttp.ClientSession(trust_env=False) as http:
        for role in ROLES:
            for class_name, token in tokens.items():

                async def stored(
                    request: web.Request, received: ReceivedRequest, token: str = token
                ) -> web.Response:
                    return web.json_response({"value": token})

                upstream.respond = stored
                async with http.get(
                    gateway_url(gateway) + "/reveal/show", headers={"X-Key": KEYS[role]}
                ) as response:
                    status = response.status
                    body = await response.json()
                granted = GRANTED[role][class_name]
                case = (role, class_name)
                if granted is None:
                    assert status == 403, case
                    assert body["error"]["type"] == "forbidden", case
                else:
                    assert status == 200, case
                    assert body == {"value": expected_value(class_name, granted)}, case


async def test_matrix_through_request_route(
    setup: tuple[Gateway, RecordingUpstream, dict[str, str]],
) -> None:
    # Only card.pan may be revealed to the pay connection, and only by a client that may see it
    # plain: the upstream always gets plaintext, so a masked grant does not allow it.
    gateway, upstream, tokens = setup
    async with aiohttp.ClientSession(trust_env=False) as http:
        for role in ROLES:
            for class_name, token in tokens.items():
                count = len(upstream.requests)
                async with http.post(
                    gateway_url(gateway) + "/pay/charge",
                    json={"value": token},
                    headers={"X-Key": KEYS[role]},
                ) as response:
                    status = response.status
                allowed = class_name == "card.pan" and GRANTED[role][class_name] == "plain"
                case = (role, class_name)
                if allowed:
                    assert status == 200, case
                    assert json.loads(upstream.last.body) == {"value": VALUES[class_name]}, case
                else:
                    assert status == 403, case
                    assert len(upstream.requests) == count, case
