"""Gateway start-up on each store: durability checks, a checkout through Redis, key reloads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest

from gateway.tokens.keys import generate_key_file_text
from gateway.tokens.rotation import add_primary_key
from gateway.tokens.vault import Revealed, TokenizeItem
from tests.harness import BACKEND_KEY, gateway_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.redis_server import RedisServer
from tests.upstream import RecordingUpstream

ROUTE = """\
connection: shop
upstream: {upstream}
routes:
  - name: checkout
    match: {{method: POST, path: /api/checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
      - {{json: $.email, action: tokenize, class: pii.email}}
"""

PAY_ROUTE = """\
connection: pay
upstream: {upstream}
mount: /out
auth: {{header: X-Pay-Key, clients: [backend]}}
routes:
  - name: pay
    match: {{method: POST, path: /pay}}
    request:
      - {{json: $.card.number, action: detokenize}}
"""


async def test_unsafe_redis_persistence_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(
        tmp_path / "redis", "--appendonly", "no", "--maxmemory-policy", "allkeys-lru"
    )
    server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway"):
            gateway = await start_gateway(
                tmp_path / "gw",
                {"shop.yaml": ROUTE.format(upstream="http://127.0.0.1:9")},
                store_url=server.url,
            )
            await gateway.stop()
    finally:
        server.stop()
    warnings = [record.getMessage() for record in caplog.records if record.name == "gateway.server"]
    assert any("appendonly" in message for message in warnings), warnings
    assert any("maxmemory-policy" in message for message in warnings), warnings


async def test_safe_redis_gives_no_durability_warning(
    tmp_path: Path, private_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway"):
        gateway = await start_gateway(
            tmp_path / "gw",
            {"shop.yaml": ROUTE.format(upstream="http://127.0.0.1:9")},
            store_url=private_redis_server.url,
        )
        await gateway.stop()
    assert not [r for r in caplog.records if "durability" in r.getMessage()]


async def test_checkout_and_payment_through_redis(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    upstream = RecordingUpstream()
    await upstream.start()
    gateway = await start_gateway(
        tmp_path / "gw",
        {
            "shop.yaml": ROUTE.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTE.format(upstream=upstream.url),
        },
        store_url=private_redis_server.url,
    )
    try:
        async with aiohttp.ClientSession(trust_env=False) as client:
            base = gateway_url(gateway)
            body = {"card": {"number": "5555555555554444"}, "email": "ada@example.com"}
            async with client.post(f"{base}/api/checkout", json=body) as response:
                assert response.status == 200
            token = json.loads(upstream.last.body)["card"]["number"]
            assert token != "5555555555554444"

            headers = {"X-Pay-Key": BACKEND_KEY}
            async with client.post(
                f"{base}/out/pay", json={"card": {"number": token}}, headers=headers
            ) as response:
                assert response.status == 200
            assert json.loads(upstream.last.body) == {"card": {"number": "5555555555554444"}}
    finally:
        await gateway.stop()
        await upstream.stop()


async def checkout_token(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, pan: str
) -> str:
    body = {"card": {"number": pan}}
    async with client.post(f"{base}/api/checkout", json=body) as response:
        assert response.status == 200
    token: str = json.loads(upstream.last.body)["card"]["number"]
    return token


async def paid_pan(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, token: str
) -> str:
    body = {"card": {"number": token}}
    headers = {"X-Pay-Key": BACKEND_KEY}
    async with client.post(f"{base}/out/pay", json=body, headers=headers) as response:
        assert response.status == 200
    pan: str = json.loads(upstream.last.body)["card"]["number"]
    return pan


async def test_key_reload_uses_rotated_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = RecordingUpstream()
    await upstream.start()
    routes = {
        "shop.yaml": ROUTE.format(upstream=upstream.url),
        "pay.yaml": PAY_ROUTE.format(upstream=upstream.url),
    }
    gateway = await start_gateway(tmp_path / "gw", routes)
    remember_sensitive("5555555555554444", "4000056655665556")
    try:
        async with aiohttp.ClientSession(trust_env=False) as client:
            base = gateway_url(gateway)
            old_token = await checkout_token(client, base, upstream, "5555555555554444")

            add_primary_key(tmp_path / "gw" / "keys.yaml")
            with caplog.at_level(logging.INFO, logger="gateway.server"):
                assert gateway.reload_keys()
            new_token = await checkout_token(client, base, upstream, "4000056655665556")

            assert await paid_pan(client, base, upstream, old_token) == "5555555555554444"
            assert await paid_pan(client, base, upstream, new_token) == "4000056655665556"
        assert gateway.vault.key_ring.primary_version == 2
        # The key-check record and the first card under version 1, the second card under 2.
        assert await gateway.store.count_by_key_version() == {1: 2, 2: 1}
        assert "new records are sealed under master key version 2" in caplog.text
    finally:
        await gateway.stop()
        await upstream.stop()


@pytest.mark.parametrize(
    ("key_file_text", "reason"),
    [
        pytest.param("primary: [", "invalid YAML", id="broken"),
        pytest.param(generate_key_file_text(development=True), "another index key", id="other"),
    ],
)
async def test_failed_key_reload_keeps_ring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key_file_text: str, reason: str
) -> None:
    gateway = await start_gateway(
        tmp_path / "gw", {"shop.yaml": ROUTE.format(upstream="http://127.0.0.1:9")}
    )
    try:
        running = gateway.vault.key_ring
        [token] = await gateway.vault.tokenize_many([TokenizeItem("kept")])
        (tmp_path / "gw" / "keys.yaml").write_text(key_file_text)

        with caplog.at_level(logging.ERROR, logger="gateway.server"):
            assert not gateway.reload_keys()

        assert gateway.vault.key_ring is running
        [revealed] = await gateway.vault.detokenize_many([str(token)])
        assert isinstance(revealed, Revealed)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "key reload failed, so the gateway keeps master key versions 1" in errors[0]
        assert reason in errors[0]
    finally:
        await gateway.stop()
