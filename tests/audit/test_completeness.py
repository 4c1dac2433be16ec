"""A scripted session through a real gateway produces exactly the expected audit records, and
any removed or edited line makes verification fail at that line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.audit.verify import verify_audit_file
from gateway.config.loader import load_config
from gateway.server import Gateway
from gateway.tokens.keys import load_key_ring
from tests.harness import api_url, gateway_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.redis_server import RedisServer
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4000056655665556"
EMAIL = "audit.me@example.com"
remember_sensitive(PAN, EMAIL)

ROUTES = {
    "shop.yaml": """\
connection: shop
upstream: {upstream}
routes:
  - name: checkout
    match: {{path: /api/checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
      - {{json: $.email, action: tokenize, class: pii.email}}
""",
    "pay.yaml": """\
connection: pay
upstream: {upstream}
mount: /out
auth: {{header: X-Key, clients: [backend, support]}}
routes:
  - name: charge
    match: {{path: /charge}}
    request:
      - {{json: $.card.number, action: detokenize}}
""",
}

POLICY = """\
clients:
  backend:
    keys: [{secret: backend-key-0123456789}]
    roles: [payments]
  support:
    keys: [{secret: support-key-0123456789}]
    roles: [support]
classes:
  card.pan: {format: pan, mask: first6_last4, reveal_to: [pay]}
  pii.email: {format: uuid, deterministic: true, mask: email}
roles:
  payments:
    grants:
      - {actions: [tokenize, detokenize, delete], classes: [card.pan, pii.email], view: plain}
  support:
    grants:
      - {actions: [detokenize], classes: [pii.email], view: masked}
"""

BACKEND = {"Authorization": "Bearer backend-key-0123456789"}
SUPPORT = {"Authorization": "Bearer support-key-0123456789"}


def audit_records(gateway: Gateway) -> list[dict[str, Any]]:
    assert gateway.config.audit.file is not None
    lines = gateway.config.audit.file.read_text().splitlines()
    return [json.loads(line) for line in lines]


def summary(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["action"],
        record["outcome"],
        record["client"],
        record["connection"],
        record["operation"],
        record["class_name"],
        record["view"],
    )


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_scripted_session_is_audited_exactly(
    tmp_path: Path, backend: str, private_redis_server: RedisServer
) -> None:
    upstream = RecordingUpstream()
    await upstream.start()
    routes = {name: text.format(upstream=upstream.url) for name, text in ROUTES.items()}
    store_url = private_redis_server.url if backend == "redis" else None
    gateway = await start_gateway(tmp_path, routes, policy=POLICY, store_url=store_url)
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            base, api = gateway_url(gateway), api_url(gateway)
            # 1. A public checkout tokenizes two fields.
            body = {"card": {"number": PAN}, "email": EMAIL}
            async with http.post(f"{base}/api/checkout", json=body) as response:
                assert response.status == 200
            tokens = json.loads(upstream.last.body)
            pan_token, email_token = tokens["card"]["number"], tokens["email"]

            # 2. The backend pays with the card token; 3. support tries the same and is denied.
            charge = {"card": {"number": pan_token}}
            async with http.post(
                f"{base}/out/charge", json=charge, headers={"X-Key": "backend-key-0123456789"}
            ) as response:
                assert response.status == 200
            async with http.post(
                f"{base}/out/charge", json=charge, headers={"X-Key": "support-key-0123456789"}
            ) as response:
                assert response.status == 403
            # 4. A wrong key is denied before anything is read.
            async with http.post(
                f"{base}/out/charge", json=charge, headers={"X-Key": "wrong-key-0123456789"}
            ) as response:
                assert response.status == 401

            # 5. Support sees the email masked; 6. an unknown token fails.
            detokenize = {"tokens": [email_token, "tok_" + "0" * 32]}
            async with http.post(
                f"{api}/v1/detokenize", json=detokenize, headers=SUPPORT
            ) as response:
                items = (await response.json())["items"]
            assert items[0]["value"] == "a*******@example.com"
            assert items[1]["error"]["type"] == "invalid_token"

            # 7. The backend erases the email; 8. its token no longer detokenizes.
            erase = {"class": "pii.email", "values": [EMAIL]}
            async with http.post(f"{api}/v1/erase", json=erase, headers=BACKEND) as response:
                assert await response.json() == {"erased": 1}
            async with http.post(
                f"{api}/v1/detokenize", json={"tokens": [email_token]}, headers=BACKEND
            ) as response:
                assert (await response.json())["items"][0]["error"]["type"] == "invalid_token"
    finally:
        await gateway.stop()
        await upstream.stop()

    records = audit_records(gateway)
    assert [summary(record) for record in records] == [
        ("tokenize", "allowed", None, "shop", "checkout", "card.pan", None),
        ("tokenize", "allowed", None, "shop", "checkout", "pii.email", None),
        ("detokenize", "allowed", "backend", "pay", "charge", "card.pan", "plain"),
        ("detokenize", "denied", "support", "pay", "charge", "card.pan", None),
        ("authenticate", "denied", None, "pay", "charge", None, None),
        ("detokenize", "allowed", "support", None, "POST /v1/detokenize", "pii.email", "masked"),
        ("detokenize", "failed", "support", None, "POST /v1/detokenize", None, None),
        ("erase", "allowed", "backend", None, "POST /v1/erase", "pii.email", None),
        ("detokenize", "failed", "backend", None, "POST /v1/detokenize", None, None),
    ]
    assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
    # Same token, same fingerprint; no record carries a value or a token.
    assert (
        records[0]["token_fingerprint"]
        == records[2]["token_fingerprint"]
        == records[3]["token_fingerprint"]
    )
    text = gateway.config.audit.file.read_text()  # type: ignore[union-attr]
    for secret in (PAN, EMAIL, pan_token, email_token):
        assert secret not in text

    key = load_key_ring(gateway.config.keys, base_dir=tmp_path).audit_key
    assert verify_audit_file(gateway.config.audit.file, key).ok  # type: ignore[arg-type]


async def test_removed_or_edited_line_fails_verification(tmp_path: Path) -> None:
    upstream = RecordingUpstream()

    async def ok(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.json_response({})

    upstream.respond = ok
    await upstream.start()
    routes = {name: text.format(upstream=upstream.url) for name, text in ROUTES.items()}
    gateway = await start_gateway(tmp_path, routes, policy=POLICY)
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            for index in range(3):
                body = {"card": {"number": PAN}, "email": f"{index}{EMAIL}"}
                async with http.post(f"{gateway_url(gateway)}/api/checkout", json=body) as response:
                    assert response.status == 200
    finally:
        await gateway.stop()
        await upstream.stop()

    path = gateway.config.audit.file
    assert path is not None
    key = load_key_ring(
        load_config(tmp_path / "gateway.yaml", environ={}).keys, base_dir=tmp_path
    ).audit_key
    original = path.read_bytes().splitlines(keepends=True)
    assert len(original) == 6
    assert verify_audit_file(path, key).ok

    for line in range(len(original)):
        path.write_bytes(b"".join(original[:line] + original[line + 1 :]))
        result = verify_audit_file(path, key)
        if line == len(original) - 1:
            # A removed last line leaves a valid, shorter chain; the last sequence shows it.
            assert result.ok
            assert result.last_seq == len(original) - 1
        else:
            assert not result.ok
            assert result.bad_line == line + 1

        edited = list(original)
        edited[line] = edited[line].replace(b'"allowed"', b'"denied"')
        path.write_bytes(b"".join(edited))
        result = verify_audit_file(path, key)
        assert not result.ok
        assert result.bad_line == line + 1
