"""Attacks on the forward proxy inside intercepted tunnels, each checked at the stand-in.

The forward proxy keeps the reverse proxy's rules. A message that matches a route and cannot be
processed is rejected with the JSON error body and never relayed as it came. Limits hold before
and after decompression. No error body or log line repeats a value from the request.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import ssl
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.server import Gateway
from tests.forward.certificates import TestCa
from tests.forward.harness import (
    basic,
    close,
    connect,
    forward_port,
    open_intercepted,
    read_response,
    start_forward_gateway,
)
from tests.harness import BACKEND_KEY
from tests.logcapture import remember_sensitive
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4000056655665556"
PARSER_PAN = "4000000760000002"
"""A card number in requests that mitmproxy's HTTP parser rejects; the leak check searches it."""
remember_sensitive(PAN, PARSER_PAN)
LIMIT = 64 * 1024

SHOP_ROUTES = """\
connection: shop
upstream: {upstream}
mount: /shop
hosts: [shop.example]
routes:
  - name: checkout
    match: {{method: POST, path: /api/checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan, required: true}}
  - name: card-form
    match: {{method: POST, path: /card-form}}
    request:
      - {{form: "card[number]", action: tokenize}}
  - name: card-echo
    match: {{path: /card-echo}}
    response:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
"""

PAY_ROUTES = """\
connection: pay
upstream: {upstream}
mount: /pay
hosts: [pay.example]
auth:
  clients: [backend]
routes:
  - name: pay
    match: {{method: POST, path: /v1/pay}}
    request:
      - {{json: $.card.number, action: detokenize}}
"""


@pytest.fixture
async def gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start_forward_gateway(
        gateway_dir,
        {
            "shop.yaml": SHOP_ROUTES.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
        },
        limits="max_body_bytes: 64KiB\nclient_body_timeout: 1s\nupstream_timeout: 2s\n",
    )
    yield started
    await started.stop()


async def exchange(
    gateway: Gateway, host: str, head: str, body: bytes = b""
) -> tuple[int, bytes, bytes]:
    """Send one request in a new intercepted tunnel; ``head`` is the request line and headers."""
    reader, writer = await open_intercepted(gateway, host)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        return await read_response(reader)
    finally:
        await close(writer)


def post_head(path: str, body: bytes, host: str = "shop.example", extra: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: {host}\nContent-Type: application/json\n"
        f"Content-Length: {len(body)}\n{extra}"
    )


def card_json(pan: str = PAN) -> bytes:
    return json.dumps({"card": {"number": pan}}).encode()


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


def received_anywhere(upstream: RecordingUpstream, value: str) -> bool:
    return any(
        value.encode() in received.body or value in received.path_qs
        for received in upstream.requests
    )


async def test_keep_alive_tunnel_serves_several_requests(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    reader, writer = await open_intercepted(gateway, "shop.example")
    try:
        for _ in range(3):
            body = card_json()
            writer.write(post_head("/api/checkout", body).replace("\n", "\r\n").encode())
            writer.write(b"\r\n" + body)
            status, _, _ = await read_response(reader)
            assert status == 200
    finally:
        await close(writer)
    assert len(upstream.requests) == 3
    assert not received_anywhere(upstream, PAN)


@pytest.mark.parametrize(
    "path",
    ["/api/checkout", "/API/Checkout/", "/api//checkout", "/x/../api/checkout", "/api/%63heckout"],
)
async def test_path_variant_still_tokenizes(
    gateway: Gateway, upstream: RecordingUpstream, path: str
) -> None:
    body = card_json()
    status, _, _ = await exchange(gateway, "shop.example", post_head(path, body), body)
    assert status == 200
    assert not received_anywhere(upstream, PAN)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_body_is_decoded_and_encoded_again(
    gateway: Gateway, upstream: RecordingUpstream, coding: str
) -> None:
    plain = b"card%5Bnumber%5D=" + PAN.encode() + b"&amount=10"
    body = gzip.compress(plain) if coding == "gzip" else zlib.compress(plain)
    head = (
        f"POST /card-form HTTP/1.1\nHost: shop.example\n"
        f"Content-Type: application/x-www-form-urlencoded\nContent-Encoding: {coding}\n"
        f"Content-Length: {len(body)}\n"
    )
    status, _, _ = await exchange(gateway, "shop.example", head, body)
    assert status == 200
    received = upstream.last
    assert received.headers["Content-Encoding"] == coding
    relayed = gzip.decompress(received.body) if coding == "gzip" else zlib.decompress(received.body)
    assert PAN.encode() not in relayed
    assert b"amount=10" in relayed


async def test_decompression_bomb_is_413(gateway: Gateway, upstream: RecordingUpstream) -> None:
    bomb = gzip.compress(b'{"card": {"number": "' + b"4" * (LIMIT * 4) + b'"}}')
    assert len(bomb) < LIMIT
    status, _, body = await exchange(
        gateway,
        "shop.example",
        post_head("/api/checkout", bomb, extra="Content-Encoding: gzip\n"),
        bomb,
    )
    assert status == 413
    assert error_of(body)["type"] == "body_too_large"
    assert upstream.requests == []


async def test_declared_oversize_body_is_413(gateway: Gateway, upstream: RecordingUpstream) -> None:
    reader, writer = await open_intercepted(gateway, "shop.example")
    try:
        head = post_head("/api/checkout", b"x" * (LIMIT + 1))
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        status, head_bytes, body = await read_response(reader)
    finally:
        await close(writer)
    assert status == 413
    assert b"application/json" in head_bytes.lower()
    assert error_of(body)["type"] == "body_too_large"
    assert upstream.requests == []


async def test_chunked_oversize_body_is_413(gateway: Gateway, upstream: RecordingUpstream) -> None:
    chunk = b'{"card": {"number": "' + PAN.encode() + b'", "pad": "' + b"p" * 4000 + b'"}}'
    reader, writer = await open_intercepted(gateway, "shop.example")
    try:
        writer.write(
            b"POST /api/checkout HTTP/1.1\r\nHost: shop.example\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        status = 0
        for _ in range(LIMIT // len(chunk) + 2):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        writer.write(b"0\r\n\r\n")
        status, _, body = await read_response(reader)
    finally:
        await close(writer)
    assert status == 413
    assert error_of(body)["type"] == "body_too_large"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "expected_type"),
    [
        (b'{"card": {"number": "' + PAN.encode() + b'"', "invalid_body"),
        (b'{"card": {"number": "1", "Number": "' + PAN.encode() + b'"}}', "invalid_body"),
        (b'{"card": {"number": {"pan": "' + PAN.encode() + b'"}}}', "invalid_body"),
        (b'{"card": {"number": NaN}, "x": "' + PAN.encode() + b'"}', "invalid_body"),
        (b'{"email": "' + PAN.encode() + b'"}', "missing_field"),
    ],
    ids=["truncated", "case-duplicate", "object-value", "nan", "missing-field"],
)
async def test_malformed_body_is_rejected(
    gateway: Gateway, upstream: RecordingUpstream, body: bytes, expected_type: str
) -> None:
    status, _, response = await exchange(
        gateway, "shop.example", post_head("/api/checkout", body), body
    )
    assert status == 400
    assert error_of(response)["type"] == expected_type
    assert PAN.encode() not in response
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("Content-Encoding: compress\n", 415),
        ("Transfer-Encoding: gzip, chunked\n", 400),
    ],
    ids=["unknown-coding", "gzip-transfer-coding"],
)
async def test_coding_trick_is_rejected(
    gateway: Gateway, upstream: RecordingUpstream, extra: str, status: int
) -> None:
    body = card_json()
    if "Transfer-Encoding" in extra:
        head = (
            "POST /api/checkout HTTP/1.1\nHost: shop.example\nContent-Type: application/json\n"
            + extra
        )
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        head, payload = post_head("/api/checkout", body, extra=extra), body
    answer_status, _, response = await exchange(gateway, "shop.example", head, payload)
    assert answer_status == status
    assert upstream.requests == []
    assert PAN.encode() not in response


async def test_fragment_in_target_is_rejected(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    body = card_json()
    status, _, _ = await exchange(gateway, "shop.example", post_head("/api/checkout#x", body), body)
    assert status == 400
    assert upstream.requests == []


async def test_parser_rejection_quotes_nothing(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    head = f"GET /lookup?card={PARSER_PAN} HTTP/1.1\nHost: shop.example\nBad Header: {PARSER_PAN}\n"
    status, _, body = await exchange(gateway, "shop.example", head)
    assert status == 400
    assert error_of(body)["type"] == "invalid_request"
    assert PARSER_PAN.encode() not in body
    assert upstream.requests == []


async def test_unknown_token_is_422_and_not_relayed(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    body = card_json("tok_" + "0" * 32)
    status, _, response = await exchange(
        gateway, "pay.example", post_head("/v1/pay", body, host="pay.example"), body
    )
    assert status == 422
    assert error_of(response)["route"] == "pay"
    assert upstream.requests == []


async def test_gateway_key_is_removed_and_provider_key_kept(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    for authorization, relayed in ((f"Bearer {BACKEND_KEY}", False), ("Bearer sk_test_1", True)):
        head = f"GET /v1/balance HTTP/1.1\nHost: pay.example\nAuthorization: {authorization}\n"
        status, _, _ = await exchange(gateway, "pay.example", head)
        assert status == 200
        assert ("Authorization" in upstream.last.headers) is relayed
    assert upstream.last.headers["Authorization"] == "Bearer sk_test_1"


async def test_response_fields_are_tokenized(gateway: Gateway, upstream: RecordingUpstream) -> None:
    async def echo_card(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.json_response({"card": {"number": PAN}})

    upstream.respond = echo_card
    status, _, body = await exchange(
        gateway, "shop.example", "GET /card-echo HTTP/1.1\nHost: shop.example\n"
    )
    assert status == 200
    number = json.loads(body)["card"]["number"]
    assert number != PAN
    assert number[-4:] == PAN[-4:]


async def test_oversize_upstream_response_is_502(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    async def huge(request: web.Request, received: ReceivedRequest) -> web.Response:
        return web.json_response({"card": {"number": PAN}, "pad": "p" * (LIMIT + 1)})

    upstream.respond = huge
    status, _, body = await exchange(
        gateway, "shop.example", "GET /card-echo HTTP/1.1\nHost: shop.example\n"
    )
    assert status == 502
    assert error_of(body)["type"] == "upstream_response_invalid"
    assert PAN.encode() not in body


async def test_stalled_body_closes_connection(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    reader, writer = await open_intercepted(gateway, "shop.example")
    try:
        writer.write(
            post_head("/api/checkout", b"x" * 100).replace("\n", "\r\n").encode() + b"\r\n{"
        )
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)
    finally:
        await close(writer)
    assert rest == b""
    assert upstream.requests == []


# Upstream TLS


async def test_untrusted_upstream_certificate_is_502(
    gateway_dir: Path, test_ca: TestCa, tmp_path: Path
) -> None:
    # The stand-in's certificate comes from a CA that the gateway's configuration does not trust.
    other_ca = TestCa(tmp_path / "other-ca", name="untrusted test CA")
    standin = RecordingUpstream(other_ca.issue("api.stripe.com").server_context())
    await standin.start()
    routes = {
        "stripe.yaml": f"connection: stripe\nupstream: {standin.url}\nhosts: [api.stripe.com]\n"
        f"upstream_ca: {test_ca.cert_file}\nroutes: []\n"
    }
    gateway = await start_forward_gateway(gateway_dir, routes)
    try:
        status, _, body = await exchange(
            gateway, "api.stripe.com", "GET /v1/balance HTTP/1.1\nHost: api.stripe.com\n"
        )
    finally:
        await gateway.stop()
        await standin.stop()
    assert status == 502
    assert error_of(body)["type"] == "upstream_unreachable"
    assert standin.requests == []


@pytest.mark.parametrize("with_client_cert", [True, False], ids=["client-cert", "no-client-cert"])
async def test_upstream_mutual_tls(
    gateway_dir: Path, test_ca: TestCa, with_client_cert: bool
) -> None:

    context = test_ca.issue("api.stripe.com").server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=test_ca.cert_file)
    standin = RecordingUpstream(context)
    await standin.start()
    client = test_ca.issue("vaultgate", client=True)
    client_lines = (
        f"client_cert: {client.cert_file}\nclient_key: {client.key_file}\n"
        if with_client_cert
        else ""
    )
    routes = {
        "stripe.yaml": f"connection: stripe\nupstream: {standin.url}\nhosts: [api.stripe.com]\n"
        f"upstream_ca: {test_ca.cert_file}\n{client_lines}routes: []\n"
    }
    gateway = await start_forward_gateway(gateway_dir, routes)
    try:
        status, _, _ = await exchange(
            gateway, "api.stripe.com", "GET /v1/balance HTTP/1.1\nHost: api.stripe.com\n"
        )
    finally:
        await gateway.stop()
        await standin.stop()
    if with_client_cert:
        assert status == 200
        assert standin.last.headers["Host"] == "api.stripe.com"
    else:
        assert status == 502
        assert standin.requests == []


async def test_mitmproxy_log_lines_are_redacted(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that does not trust the gateway's CA fails its handshake, and mitmproxy logs that
    # at INFO. The test lowers mitmproxy's level from the WARNING that the gateway sets.
    status, _, _, writer = await connect(
        forward_port(gateway), "shop.example:443", authorization=basic()
    )
    assert status == 200
    with caplog.at_level(logging.INFO, logger="mitmproxy"):
        with pytest.raises(ssl.SSLCertVerificationError):
            await writer.start_tls(ssl.create_default_context(), server_hostname="shop.example")
        await close(writer)
        for _ in range(50):
            if any("handshake" in record.getMessage() for record in caplog.records):
                break
            await asyncio.sleep(0.02)
    messages = [
        record.getMessage()
        for record in caplog.records
        if record.name == "gateway.forward.mitmproxy"
    ]
    assert any("does not trust the proxy's certificate" in message for message in messages)
    # mitmproxy's records reach the application's handlers only through the redacting bridge.
    assert logging.getLogger("mitmproxy").propagate is False
