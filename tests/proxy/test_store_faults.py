"""The reverse proxy while its token store fails: Redis killed, hung or restarted, SQLite locked.

Every test runs a real gateway against a private redis-server or its own SQLite file. A request
that needs the store while it is down must get 503 and reach no upstream. Once the store is back,
the same gateway process must work again, and every token it handed out must still detokenize.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Gateway
from tests.harness import gateway_url, start_gateway
from tests.redis_server import RedisServer
from tests.upstream import ReceivedRequest, RecordingUpstream, echo_json

PAN = "4242424242424242"
EMAIL = "jo@example.com"

ROUTES = """\
connection: shop
upstream: {upstream}
mount: /
routes:
  - name: checkout
    match: {{method: POST, path: /api/checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan, required: true}}
      - {{json: $.email, action: tokenize, class: pii.email}}
  - name: signup
    match: {{method: POST, path: /signup}}
    request:
      - {{json: $.email, action: tokenize, required: true}}
"""

PAY_ROUTES = """\
connection: pay
upstream: {upstream}
mount: /out
auth:
  header: X-Pay-Key
  clients: [backend]
routes:
  - name: pay
    match: {{method: POST, path: /pay}}
    request:
      - {{json: $.card.number, action: detokenize}}
"""

LIMITS = "store_timeout: 500ms\nupstream_timeout: 5s\n"


def card_number(index: int) -> str:
    """Return a distinct 16-digit card number for each index below 10,000.

    The numbers differ in their last four digits, which a card token keeps. A token, whose
    middle digits are random, can therefore never equal another of these numbers.
    """
    return f"400000000000{index:04d}"


async def checkout(
    client: aiohttp.ClientSession, base: str, pan: str = PAN
) -> tuple[int, dict[str, object]]:
    body = {"card": {"number": pan}, "email": EMAIL}
    async with client.post(f"{base}/api/checkout", json=body) as response:
        return response.status, await response.json()


async def pay(
    client: aiohttp.ClientSession, base: str, token: str
) -> tuple[int, dict[str, object]]:
    async with client.post(f"{base}/out/pay", json={"card": {"number": token}}) as response:
        return response.status, await response.json()


def forwarded_card(upstream: RecordingUpstream, index: int = -1) -> str:
    number: str = json.loads(upstream.requests[index].body)["card"]["number"]
    return number


# Redis


@pytest.fixture
async def redis_gateway(
    gateway_dir: Path, upstream: RecordingUpstream, private_redis_server: RedisServer
) -> AsyncIterator[Gateway]:
    started = await start_gateway(
        gateway_dir,
        {
            "shop.yaml": ROUTES.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
        },
        store_url=private_redis_server.url,
        limits=LIMITS,
    )
    yield started
    await started.stop()


async def test_redis_down_is_503_then_recovers(
    redis_gateway: Gateway,
    upstream: RecordingUpstream,
    private_redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    base = gateway_url(redis_gateway)
    status, _ = await checkout(client, base)
    assert status == 200
    token = forwarded_card(upstream)

    private_redis_server.kill()
    status, body = await checkout(client, base)
    assert status == 503
    assert body["error"]["type"] == "store_unavailable"  # type: ignore[index]
    assert body["error"]["route"] == "checkout"  # type: ignore[index]
    status, body = await pay(client, base, token)
    assert status == 503
    assert len(upstream.requests) == 1

    # The same gateway process recovers once Redis is back, and the old token still works.
    private_redis_server.start()
    status, _ = await pay(client, base, token)
    assert status == 200
    assert forwarded_card(upstream) == PAN
    status, _ = await checkout(client, base)
    assert status == 200


async def test_hung_redis_is_503(
    redis_gateway: Gateway,
    upstream: RecordingUpstream,
    private_redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    base = gateway_url(redis_gateway)
    process = private_redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        status, body = await checkout(client, base)
    finally:
        process.send_signal(signal.SIGCONT)
    assert status == 503
    assert body["error"]["type"] == "store_unavailable"  # type: ignore[index]
    assert upstream.requests == []

    status, _ = await checkout(client, base)
    assert status == 200


async def test_redis_killed_mid_traffic_loses_nothing(
    redis_gateway: Gateway,
    upstream: RecordingUpstream,
    private_redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    base = gateway_url(redis_gateway)
    some_through = asyncio.Event()

    async def count_and_echo(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
        if len(upstream.requests) >= 10:
            some_through.set()
        return await echo_json(request, received)

    upstream.respond = count_and_echo
    numbers = [card_number(index) for index in range(150)]
    requests = [asyncio.ensure_future(checkout(client, base, number)) for number in numbers]
    # Kill Redis once some requests are through, so that others are in flight.
    await asyncio.wait_for(some_through.wait(), 10)
    private_redis_server.kill()
    results = await asyncio.gather(*requests)

    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    accepted = {number for number, status in zip(numbers, statuses, strict=True) if status == 200}
    assert len(upstream.requests) == len(accepted)
    for received in upstream.requests:
        assert not any(number.encode() in received.body for number in numbers)

    # Every token that reached the upstream was acknowledged by Redis before it was forwarded,
    # so it must survive the kill (the server runs with appendfsync always).
    private_redis_server.start()
    tokens = [forwarded_card(upstream, index) for index in range(len(upstream.requests))]
    before = len(upstream.requests)
    revealed = await asyncio.gather(*(pay(client, base, token) for token in tokens))
    assert [status for status, _ in revealed] == [200] * len(tokens)
    revealed_numbers = {
        forwarded_card(upstream, index) for index in range(before, len(upstream.requests))
    }
    assert revealed_numbers == accepted


async def test_token_survives_redis_restart(
    redis_gateway: Gateway,
    upstream: RecordingUpstream,
    private_redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    base = gateway_url(redis_gateway)
    status, _ = await checkout(client, base)
    assert status == 200
    token = forwarded_card(upstream)
    email_token = json.loads(upstream.last.body)["email"]

    private_redis_server.kill()
    private_redis_server.start()

    status, _ = await pay(client, base, token)
    assert status == 200
    assert forwarded_card(upstream) == PAN
    # The deterministic index entry survived too: the same email gets the same token.
    status, _ = await checkout(client, base)
    assert status == 200
    assert json.loads(upstream.last.body)["email"] == email_token


async def test_redis_error_hides_store_address(
    redis_gateway: Gateway,
    upstream: RecordingUpstream,
    private_redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    private_redis_server.kill()
    async with client.post(
        f"{gateway_url(redis_gateway)}/api/checkout", json={"card": {"number": PAN}}
    ) as response:
        assert response.status == 503
        raw = await response.text()
    assert f":{private_redis_server.port}" not in raw


# SQLite


@pytest.fixture
async def sqlite_gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start_gateway(
        gateway_dir,
        {
            "shop.yaml": ROUTES.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
        },
        limits=LIMITS,
    )
    yield started
    await started.stop()


@pytest.fixture
def database_lock(gateway_dir: Path) -> Iterator[None]:
    """Hold the write lock of the gateway's SQLite file, as another process could."""
    holder = sqlite3.connect(gateway_dir / "tokens.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_sqlite_locked_is_503_then_recovers(
    sqlite_gateway: Gateway,
    upstream: RecordingUpstream,
    gateway_dir: Path,
    client: aiohttp.ClientSession,
) -> None:
    base = gateway_url(sqlite_gateway)
    holder = sqlite3.connect(gateway_dir / "tokens.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        status, body = await checkout(client, base)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status == 503
    assert body["error"]["type"] == "store_unavailable"  # type: ignore[index]
    assert upstream.requests == []

    status, _ = await checkout(client, base)
    assert status == 200


async def test_sqlite_error_hides_file_path(
    sqlite_gateway: Gateway, gateway_dir: Path, client: aiohttp.ClientSession, database_lock: None
) -> None:
    async with client.post(
        f"{gateway_url(sqlite_gateway)}/api/checkout", json={"card": {"number": PAN}}
    ) as response:
        assert response.status == 503
        raw = await response.text()
    assert str(gateway_dir) not in raw


async def test_locked_store_errors_keep_their_route(
    sqlite_gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    database_lock: None,
) -> None:
    # The requests queue behind the lock and fail as one group commit, with one exception
    # object between them, so each error body must still name its own route.
    base = gateway_url(sqlite_gateway)

    async def post(path: str, body: object) -> tuple[int, str | None]:
        async with client.post(f"{base}{path}", json=body) as response:
            error = (await response.json())["error"]
            return response.status, error.get("route")

    calls = []
    for _ in range(4):
        calls.append(post("/api/checkout", {"card": {"number": PAN}}))
        calls.append(post("/signup", {"email": EMAIL}))
    results = await asyncio.gather(*calls)

    assert [status for status, _ in results] == [503] * len(calls)
    assert [route for _, route in results] == ["checkout", "signup"] * 4
    assert upstream.requests == []


async def run_chattr(flag: str, path: Path) -> int:
    """Run ``chattr flag path`` and return its exit status."""
    process = await asyncio.create_subprocess_exec(
        "chattr", flag, str(path), stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


async def test_read_only_sqlite_is_503(
    sqlite_gateway: Gateway,
    upstream: RecordingUpstream,
    gateway_dir: Path,
    client: aiohttp.ClientSession,
) -> None:
    # File modes do not stop root, which the tests may run as, so the files are made immutable.
    # In WAL mode a commit writes the -wal file, so that one must be immutable too.
    files = [gateway_dir / "tokens.db", gateway_dir / "tokens.db-wal"]
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    if await run_chattr("+i", files[0]) != 0:
        pytest.skip("chattr +i is not supported on this file system")
    assert await run_chattr("+i", files[1]) == 0
    try:
        status, body = await checkout(client, gateway_url(sqlite_gateway))
    finally:
        for file in files:
            assert await run_chattr("-i", file) == 0
    assert upstream.requests == []
    assert status == 503
    assert body["error"]["type"] == "store_unavailable"  # type: ignore[index]
