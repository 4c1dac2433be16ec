"""Gateway start-up on each store: durability checks, and a checkout through Redis."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest

from tests.harness import BACKEND_KEY, gateway_url, start_gateway
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
