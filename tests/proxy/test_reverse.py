"""The reverse proxy through real sockets: a client, a listening gateway, a recording upstream."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Gateway
from tests.harness import api_url, gateway_url, start_gateway
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4242424242424242"
CVC = "123"

SHOP_ROUTES = """\
connection: shop
upstream: {upstream}
mount: /
routes:
  - name: checkout
    match: {{method: POST, path: /api/checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan, required: true}}
      - {{json: $.card.cvc, action: tokenize, class: card.cvc}}
      - {{json: $.email, action: tokenize, class: pii.email}}
  - name: lookup
    match: {{method: GET, path: /lookup}}
    request:
      - {{query: card, action: tokenize}}
  - name: card-echo
    match: {{method: POST, path: /card-echo}}
    response:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
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
      - {{json: $.card.cvc, action: detokenize}}
  - name: pay-form
    match: {{method: POST, path: /pay-form}}
    request:
      - {{form: "card[number]", action: detokenize}}
"""

REVEAL_ROUTES = """\
connection: reveal
upstream: {upstream}
mount: /reveal
unmatched: reject
auth:
  header: X-Api-Key
  clients: [backend]
routes:
  - name: show-card
    match: {{method: GET, path: "/cards/{{id}}"}}
    response:
      - {{json: $.number, action: detokenize}}
"""


@pytest.fixture
async def gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start_gateway(
        gateway_dir,
        {
            "shop.yaml": SHOP_ROUTES.format(upstream=upstream.url),
            "reveal.yaml": REVEAL_ROUTES.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
        },
        limits="max_body_bytes: 64KiB\nupstream_timeout: 1s\nmax_json_depth: 20\n",
    )
    yield started
    await started.stop()


@pytest.fixture
def base(gateway: Gateway) -> str:
    return gateway_url(gateway)


async def checkout(client: aiohttp.ClientSession, base: str, pan: str = PAN) -> dict[str, object]:
    body = {"card": {"number": pan, "cvc": CVC, "exp_month": 12}, "email": "jo@example.com"}
    async with client.post(f"{base}/api/checkout", json=body) as response:
        assert response.status == 200, await response.text()
    return body


# Inbound and outbound flows


async def test_checkout_tokenizes_before_the_backend(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    await checkout(client, base)
    received = json.loads(upstream.last.body)
    number = received["card"]["number"]
    assert PAN.encode() not in upstream.last.body
    assert CVC not in json.dumps(received["card"]["cvc"])
    assert len(number) == len(PAN)
    assert number[:6] == PAN[:6]
    assert number[-4:] == PAN[-4:]
    assert received["card"]["cvc"].startswith("tok_")
    assert received["card"]["exp_month"] == 12
    assert received["email"].startswith("tok_")


async def test_deterministic_field_gives_same_token(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    await checkout(client, base)
    first = json.loads(upstream.last.body)
    await checkout(client, base)
    second = json.loads(upstream.last.body)
    assert first["email"] == second["email"]
    assert first["card"]["number"] != second["card"]["number"]


async def test_tokens_detokenize_on_the_way_out(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    await checkout(client, base)
    tokens = json.loads(upstream.last.body)["card"]

    async with client.post(f"{base}/out/pay", json={"card": tokens, "amount": 1000}) as response:
        assert response.status == 200
    expected_card = {"number": PAN, "cvc": CVC, "exp_month": 12}
    assert json.loads(upstream.last.body) == {"card": expected_card, "amount": 1000}

    form = f"card%5Bnumber%5D={tokens['number']}&type=card"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with client.post(f"{base}/out/pay-form", data=form, headers=headers) as response:
        assert response.status == 200
    assert upstream.last.body == f"card%5Bnumber%5D={PAN}&type=card".encode()
    assert upstream.last.headers["Content-Length"] == str(len(upstream.last.body))


async def test_query_field_is_tokenized(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async with client.get(f"{base}/lookup?card={PAN}&x=1") as response:
        assert response.status == 200
    assert PAN not in upstream.last.path_qs
    assert upstream.last.path_qs.startswith("/lookup?card=tok_")
    assert upstream.last.path_qs.endswith("&x=1")


async def test_response_field_is_tokenized(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async def card_in_response(request: web.Request, received: ReceivedRequest) -> web.Response:
        body = gzip.compress(json.dumps({"card": {"number": PAN}}).encode())
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    upstream.respond = card_in_response
    async with client.post(f"{base}/card-echo", json={}) as response:
        assert response.status == 200
        raw = await response.read()
        assert response.headers["Content-Length"] == str(len(raw))
    body = json.loads(gzip.decompress(raw))
    assert body["card"]["number"] != PAN
    assert body["card"]["number"][-4:] == PAN[-4:]


async def test_encoded_path_variant_still_tokenizes(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    # A backend would route /API/%63heckout/ to /api/checkout; the gateway must too.
    body = json.dumps({"card": {"number": PAN}}).encode()
    async with client.post(
        aiohttp.client.URL(f"{base}/API//%63heckout/", encoded=True),
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 200
    assert PAN.encode() not in upstream.last.body
    assert upstream.last.path_qs == "/API/checkout/"


# Authentication


async def test_reveal_route_requires_api_key(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    await checkout(client, base)
    token = json.loads(upstream.last.body)["card"]["number"]

    async def stored_card(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.json_response({"number": token, "brand": "visa"})

    upstream.respond = stored_card
    count = len(upstream.requests)
    async with client.get(f"{base}/reveal/cards/1") as response:
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "unauthorized"
    async with client.get(
        f"{base}/reveal/cards/1", headers={"X-Api-Key": "wrong-0123456789abc"}
    ) as response:
        assert response.status == 401
    assert len(upstream.requests) == count

    headers = {"X-Api-Key": "backend-key-0123456789"}
    async with client.get(f"{base}/reveal/cards/1", headers=headers) as response:
        assert response.status == 200
        assert await response.json() == {"number": PAN, "brand": "visa"}
    assert "X-Api-Key" not in upstream.last.headers


async def test_unmatched_reject_connection(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    headers = {"X-Api-Key": "backend-key-0123456789"}
    async with client.get(f"{base}/reveal/other", headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "route_not_matched"
    assert upstream.requests == []


# Rejections: nothing reaches the upstream


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error_type"),
    [
        (b'{"card": {"number": "4242424242424242"', "application/json", 400, "invalid_body"),
        (
            b'{"card": {"number": "4242424242424242", "number": "1"}}',
            "application/json",
            400,
            "invalid_body",
        ),
        (b'{"card": {"number": NaN}}', "application/json", 400, "invalid_body"),
        (
            b'{"card": {"number": "4242424242424242"}, "x": ' + b"[" * 30 + b"]" * 30 + b"}",
            "application/json",
            400,
            "invalid_body",
        ),
        (b'{"card": {"number": "4242424242424242"}}', "text/plain", 415, "unsupported_media_type"),
        (
            b"card[number]=4242424242424242",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (b'{"card": {"number": "42"}}', "application/json", 400, "invalid_value"),
        (b'{"card": {"cvc": "123"}}', "application/json", 400, "missing_field"),
        (
            b'{"card": {"number": {"n": "4242424242424242"}}}',
            "application/json",
            400,
            "invalid_body",
        ),
    ],
)
async def test_bad_request_is_rejected_and_not_relayed(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    body: bytes,
    content_type: str,
    status: int,
    error_type: str,
) -> None:
    async with client.post(
        f"{base}/api/checkout", data=body, headers={"Content-Type": content_type}
    ) as response:
        assert response.status == status
        assert response.headers["Content-Type"].startswith("application/json")
        raw = await response.read()
    error = json.loads(raw)["error"]
    assert error["type"] == error_type
    assert error["route"] == "checkout"
    assert PAN.encode() not in raw
    assert upstream.requests == []


async def test_body_over_limit_is_413_before_upstream(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    body = b'{"card": {"number": "' + b"4" * 70_000 + b'"}}'
    async with client.post(
        f"{base}/api/checkout", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    async with client.post(
        f"{base}/api/checkout", data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
    assert upstream.requests == []


async def test_compression_bomb_is_413(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    bomb = gzip.compress(b'{"card": {"number": "' + b" " * 10_000_000 + b'"}}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with client.post(f"{base}/api/checkout", data=bomb, headers=headers) as response:
        assert response.status == 413
    headers["Content-Encoding"] = "compress"
    async with client.post(f"{base}/api/checkout", data=b"x", headers=headers) as response:
        assert response.status == 415
    assert upstream.requests == []


async def test_gzip_request_is_decoded_and_reencoded(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    body = gzip.compress(json.dumps({"card": {"number": PAN}}).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with client.post(f"{base}/api/checkout", data=body, headers=headers) as response:
        assert response.status == 200
    received = upstream.last
    assert received.headers["Content-Encoding"] == "gzip"
    assert received.headers["Content-Length"] == str(len(received.body))
    assert PAN not in gzip.decompress(received.body).decode()


async def test_unknown_token_is_422_and_not_relayed(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    body = {"card": {"number": "4242420000004242"}}
    async with client.post(f"{base}/out/pay", json=body) as response:
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["type"] == "invalid_token"
    assert error["route"] == "pay"
    assert "4242420000004242" not in error["message"]
    assert upstream.requests == []


async def test_no_mount_is_404(
    gateway_dir: Path, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        gateway_dir, {"only.yaml": f"connection: only\nupstream: {upstream.url}\nmount: /only\n"}
    )
    try:
        async with client.get(f"{gateway_url(gateway)}/elsewhere") as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "not_found"
    finally:
        await gateway.stop()
    assert upstream.requests == []


# Upstream faults


async def test_upstream_unreachable_is_502(
    gateway_dir: Path, client: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        gateway_dir, {"dead.yaml": "connection: dead\nupstream: http://127.0.0.1:9\n"}
    )
    try:
        async with client.get(f"{gateway_url(gateway)}/x") as response:
            assert response.status == 502
            error = (await response.json())["error"]
            assert error["type"] == "upstream_unreachable"
            # The body names no internal address; the log has the details.
            assert error["message"] == "the upstream could not be reached"
    finally:
        await gateway.stop()


async def test_slow_upstream_is_504(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async def slow(request: web.Request, received: ReceivedRequest) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    upstream.respond = slow
    async with client.get(f"{base}/anything") as response:
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "upstream_timeout"


# Relaying rules


async def test_relay_headers(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async def cookies(request: web.Request, received: ReceivedRequest) -> web.Response:
        response = web.Response(text="ok", headers={"X-Hop": "1", "Connection": "X-Hop"})
        for value in ("a=1", "b=2", "c=3"):
            response.headers.add("Set-Cookie", value)
        return response

    upstream.respond = cookies
    headers = {"Connection": "keep-alive, X-Private", "X-Private": "1", "X-Keep": "yes"}
    async with client.get(f"{base}/plain?q=1", headers=headers) as response:
        assert response.status == 200
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2", "c=3"]
        assert "X-Hop" not in response.headers
    received = upstream.last
    assert received.headers["Host"] == f"127.0.0.1:{upstream.port}"
    assert "X-Private" not in received.headers
    assert received.headers["X-Keep"] == "yes"
    assert received.path_qs == "/plain?q=1"
    assert "User-Agent" in received.headers  # the client's own, not one added by the relay
    assert received.headers["User-Agent"].startswith("Python/")


async def test_redirect_is_passed_back(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async def redirect(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})

    upstream.respond = redirect
    async with client.get(f"{base}/go", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert len(upstream.requests) == 1


async def test_streamed_body_is_relayed_whole(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    payload = bytes(range(256)) * 4096

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 10_000):
            yield payload[start : start + 10_000]

    async with client.put(f"{base}/upload", data=chunks()) as response:
        assert response.status == 200
    assert upstream.last.body == payload


async def raw_exchange(port: int, request: bytes, *, until_close: bool = True) -> bytes:
    """Send raw bytes; return everything until the server closes, or only the response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    read = reader.read() if until_close else reader.readuntil(b"\r\n\r\n")
    data = await asyncio.wait_for(read, 10)
    writer.close()
    return data


async def test_expect_100_continue(gateway: Gateway, upstream: RecordingUpstream) -> None:
    body = json.dumps({"card": {"number": PAN}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.reverse_address.port)
    writer.write(
        b"POST /api/checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    await writer.drain()
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert final.startswith(b"HTTP/1.1 200")
    writer.close()
    assert PAN.encode() not in upstream.last.body
    assert "Expect" not in upstream.last.headers


async def test_expect_with_oversized_length_gets_413_without_continue(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    response = await raw_exchange(
        gateway.reverse_address.port,
        b"POST /api/checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n",
        until_close=False,
    )
    assert response.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in response
    assert upstream.requests == []


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(gateway: Gateway, upstream: RecordingUpstream, status: int) -> None:
    async def empty(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.Response(status=status)

    upstream.respond = empty
    response = await raw_exchange(
        gateway.reverse_address.port,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode())
    assert rest == b""
    assert b"transfer-encoding" not in head.lower()


async def test_head_response_has_length_but_no_body(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    async def sized(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.Response(body=b"x" * 1234)

    upstream.respond = sized
    response = await raw_exchange(
        gateway.reverse_address.port,
        b"HEAD /thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 1234" in head.lower()
    assert rest == b""
    assert upstream.last.method == "HEAD"


async def test_proxied_requests_are_counted_in_metrics(
    client: aiohttp.ClientSession, base: str, gateway: Gateway
) -> None:
    await checkout(client, base)
    async with client.get(f"{api_url(gateway)}/metrics") as response:
        text = (await response.read()).decode()
    assert (
        'vaultgate_requests_total{connection="shop",listener="reverse",route="checkout",'
        'status="200"} 1.0'
    ) in text
    assert PAN not in text
