"""Attacks on the reverse proxy through real sockets, each checked at the recording upstream.

The gateway must fail closed: a message that matches a route and cannot be processed is
rejected with a JSON error and never forwarded as it came, and no sensitive value appears in an
error body or a log line. Each test shows an attack that the gateway withstands.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import ConfigError
from gateway.server import Gateway
from tests.harness import gateway_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4242424242424242"
CVC = "737"
EMAIL = "jo@example.com"
PARSER_PAN = "4000123412341234"
"""A card number sent in requests that aiohttp's HTTP parser rejects; the suite's log leak check
searches for it too."""
remember_sensitive(PAN, PARSER_PAN, EMAIL)

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
  - name: card-form
    match: {{method: POST, path: /card-form}}
    request:
      - {{form: "card[number]", action: tokenize}}
  - name: card-header
    match: {{method: POST, path: /card-header}}
    request:
      - {{header: X-Card-Number, action: tokenize}}
  - name: card-echo
    match: {{path: /card-echo}}
    response:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
  - name: card-echo-required
    match: {{path: /card-echo-required}}
    response:
      - {{json: $.card.number, action: tokenize, class: card.pan, required: true}}
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
      - {{json: $.email, action: detokenize}}
  - name: secret-header
    match: {{method: POST, path: /secret-header}}
    request:
      - {{header: X-Secret, action: detokenize}}
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

LIMITS = "max_body_bytes: 64KiB\nupstream_timeout: 1s\nmax_json_depth: 20\n"
JSON_HEADERS = {"Content-Type": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start_gateway(
        gateway_dir,
        {
            "shop.yaml": SHOP_ROUTES.format(upstream=upstream.url),
            "reveal.yaml": REVEAL_ROUTES.format(upstream=upstream.url),
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
        },
        limits=LIMITS,
    )
    yield started
    await started.stop()


@pytest.fixture
def base(gateway: Gateway) -> str:
    return gateway_url(gateway)


@pytest.fixture
def port(gateway: Gateway) -> int:
    return gateway.reverse_address.port


def card_body(pan: str = PAN) -> bytes:
    return json.dumps({"card": {"number": pan}}).encode()


def received_anywhere(upstream: RecordingUpstream, value: str) -> bool:
    """Tell whether ``value`` reached the upstream in any path, header or body."""
    for received in upstream.requests:
        if value in received.path_qs or value.encode() in received.body:
            return True
        if any(value in header for header in received.headers.values()):
            return True
    return False


async def post_raw_path(
    client: aiohttp.ClientSession,
    base: str,
    path: str,
    body: bytes,
    headers: dict[str, str] | CIMultiDict[str],
    method: str = "POST",
) -> tuple[int, bytes]:
    """Send ``path`` exactly as written, without the client normalizing it."""
    url = URL(base + path, encoded=True)
    async with client.request(method, url, data=body, headers=headers) as response:
        return response.status, await response.read()


# Raw sockets


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """Read one response framed by Content-Length and return its status, head and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = content_length(head)
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return status, head, body


async def send_raw(port: int, data: bytes) -> bytes:
    """Send raw bytes and return everything the gateway sends until it closes the connection."""
    reader, writer = await open_raw(port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        await close_raw(writer)


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def framed(head: str, body: bytes = b"") -> bytes:
    """Join request head lines written with ``|`` for CRLF, and a body."""
    return head.replace("|", "\r\n").encode() + b"\r\n\r\n" + body


class RawUpstream:
    """Upstream stand-in that sends fixed bytes on every connection and records each request head."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.received.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await close_raw(writer)


# Request smuggling: the gateway's parser must reject every ambiguous framing


SMUGGLED = framed(
    "POST /plain HTTP/1.1|Host: x|Content-Type: application/json|"
    f"Content-Length: {len(card_body(PARSER_PAN))}",
    card_body(PARSER_PAN),
)
FOLLOW_UP = framed("GET /after HTTP/1.1|Host: x|Connection: close")


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
                "Content-Length: 4|Transfer-Encoding: chunked",
                b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
            ),
            id="content-length-and-chunked",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
                f"Content-Length: {len(SMUGGLED)}|Content-Length: 0",
                SMUGGLED,
            ),
            id="duplicate-content-length",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
                f"Content-Length: {len(SMUGGLED)}, {len(SMUGGLED)}",
                SMUGGLED,
            ),
            id="content-length-list",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
                f"Content-Length: +{len(SMUGGLED)}",
                SMUGGLED,
            ),
            id="signed-content-length",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: chunked",
                b"0x10\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
            ),
            id="hex-prefixed-chunk-size",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: chunked",
                b"-1\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
            ),
            id="negative-chunk-size",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: chunked",
                b"1" + b"0" * 16 + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
            ),
            id="overflowing-chunk-size",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: chunked",
                b"%x;ext=1\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
            ),
            id="bare-lf-after-chunk-extension",
        ),
        pytest.param(
            framed("POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: xchunked", SMUGGLED),
            id="unknown-transfer-coding",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: chunked, identity",
                SMUGGLED,
            ),
            id="chunked-not-last",
        ),
        pytest.param(
            framed("POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding : chunked", SMUGGLED),
            id="space-before-colon",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|X-Folded: a| Transfer-Encoding: chunked|"
                f"Content-Length: {len(SMUGGLED)}",
                SMUGGLED,
            ),
            id="obs-fold",
        ),
        pytest.param(
            f"POST /api/checkout HTTP/1.1\r\nHost: x\nContent-Length: {len(SMUGGLED)}\r\n\r\n".encode()
            + SMUGGLED,
            id="bare-lf-in-head",
        ),
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|X-Null: a\x00b|"
                f"Content-Length: {len(SMUGGLED)}",
                SMUGGLED,
            ),
            id="nul-in-header",
        ),
    ],
)
async def test_ambiguous_framing_is_rejected(
    port: int, upstream: RecordingUpstream, request_bytes: bytes
) -> None:
    response = await send_raw(port, request_bytes + FOLLOW_UP)
    assert response.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    # The connection closes after the rejection, so no response to the follow-up comes after it.
    head, _, body = response.partition(b"\r\n\r\n")
    assert len(body) == content_length(head)
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("POST /reveal/cards/1 HTTP/1.1|Host: x", 401),
        ("POST /reveal/cards/1 HTTP/1.1|Host: x|Expect: 100-continue", 401),
        ("POST /reveal/other HTTP/1.1|Host: x|X-Api-Key: backend-key-0123456789", 404),
        ("POST /api/checkout HTTP/1.1|Host: x|Content-Type: text/plain", 415),
    ],
)
async def test_body_of_rejected_request_is_not_parsed(
    port: int, upstream: RecordingUpstream, head: str, status: int
) -> None:
    # The rejected request's body is itself a request, which must be skipped, not relayed.
    first = framed(f"{head}|Content-Length: {len(SMUGGLED)}", SMUGGLED)
    reader, writer = await open_raw(port)
    try:
        writer.write(first + FOLLOW_UP)
        await writer.drain()
        statuses = [(await read_response(reader))[0], (await read_response(reader))[0]]
    finally:
        await close_raw(writer)
    assert statuses == [status, 200]
    assert [received.path_qs for received in upstream.requests] == ["/after"]


async def test_chunked_body_over_limit_is_not_parsed(
    port: int, upstream: RecordingUpstream
) -> None:
    filler = (b"8000\r\n" + b" " * 0x8000 + b"\r\n") * 3
    body = filler + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
    request = framed(
        "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
        "Transfer-Encoding: chunked",
        body,
    )
    response = await send_raw(port, request + FOLLOW_UP)
    assert response.startswith(b"HTTP/1.1 413")
    assert [received.path_qs for received in upstream.requests] == ["/after"]


async def test_declared_oversize_body_is_not_parsed(port: int, upstream: RecordingUpstream) -> None:
    request = framed(
        "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|Content-Length: 100000",
        SMUGGLED + FOLLOW_UP,
    )
    reader, writer = await open_raw(port)
    try:
        writer.write(request)
        await writer.drain()
        status, _, body = await read_response(reader)
    finally:
        await close_raw(writer)
    assert status == 413
    assert json.loads(body)["error"]["type"] == "body_too_large"
    assert upstream.requests == []


async def test_expect_continue_on_unrouted_path(port: int, upstream: RecordingUpstream) -> None:
    reader, writer = await open_raw(port)
    try:
        writer.write(framed("PUT /upload HTTP/1.1|Host: x|Expect: 100-continue|Content-Length: 5"))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"hello")
        await writer.drain()
        status, _, _ = await read_response(reader)
    finally:
        await close_raw(writer)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert status == 200
    assert upstream.last.body == b"hello"
    assert "Expect" not in upstream.last.headers


# Errors from aiohttp's own HTTP parser


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            framed(
                "POST /api/checkout HTTP/1.1|Host: x|Transfer-Encoding: xchunked",
                card_body(PARSER_PAN),
            ),
            id="body-after-bad-transfer-coding",
        ),
        pytest.param(
            framed(f"GET /lookup?card={PARSER_PAN}\x7f HTTP/1.1|Host: x"),
            id="query-with-control-character",
        ),
        pytest.param(
            framed(f"POST /card-header HTTP/1.1|Host: x|X-Card-Number\x01: {PARSER_PAN}"),
            id="header-with-bad-name",
        ),
        pytest.param(
            framed(f"GET /plain HTTP/1.1|Host: x|X-Card-Number: {PARSER_PAN * 600}"),
            id="oversized-header",
        ),
    ],
)
async def test_malformed_request_leaks_nothing(
    port: int, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    response = await send_raw(port, request_bytes)
    assert response.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert PARSER_PAN.encode() not in response
    assert PARSER_PAN not in caplog.text


async def test_parser_rejection_is_json_error(port: int, upstream: RecordingUpstream) -> None:
    request = framed(
        "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
        "Content-Type: text/plain|Content-Length: 2",
        b"{}",
    )
    response = await send_raw(port, request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert upstream.requests == []
    assert head.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["type"]


# Request targets that try to make a route miss


@pytest.mark.parametrize(
    "path",
    [
        "/api%2Fcheckout",
        "/api%2fcheckout",
        "/x/../api/./checkout",
        "/x/%2e%2e/api/checkout",
        "/api/%2563heckout",
        "/api;a=b/checkout;jsessionid=1",
        "/api/checkout;",
        "/API/CHECKOUT",
        "//api//checkout//",
    ],
)
async def test_path_variant_still_tokenizes(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, path: str
) -> None:
    status, _ = await post_raw_path(client, base, path, card_body(), JSON_HEADERS)
    assert status == 200
    assert len(upstream.requests) == 1
    assert not received_anywhere(upstream, PAN)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1/api/checkout",
        "*",
        "127.0.0.1:80",
    ],
)
async def test_non_path_target_is_rejected(
    port: int, upstream: RecordingUpstream, target: str
) -> None:
    body = card_body()
    method = "CONNECT" if target[0].isdigit() else "POST"
    request = framed(
        f"{method} {target} HTTP/1.1|Host: x|Content-Type: application/json|"
        f"Content-Length: {len(body)}|Connection: close",
        body,
    )
    response = await send_raw(port, request)
    assert response.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert upstream.requests == []


async def test_fragment_does_not_skip_route(port: int, upstream: RecordingUpstream) -> None:
    body = card_body()
    request = framed(
        "POST /api/checkout#top HTTP/1.1|Host: x|Content-Type: application/json|"
        f"Content-Length: {len(body)}|Connection: close",
        body,
    )
    await send_raw(port, request)
    assert not received_anywhere(upstream, PAN)


async def test_head_request_uses_get_route(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async with client.head(f"{base}/lookup?card={PAN}") as response:
        assert response.status == 200
    assert len(upstream.requests) == 1
    assert not received_anywhere(upstream, PAN)


@pytest.mark.parametrize("path", ["/api/checkout.json", "/api\\checkout", "/api%5Ccheckout"])
async def test_backend_equivalent_path_does_not_skip_route(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, path: str
) -> None:
    await post_raw_path(client, base, path, card_body(), JSON_HEADERS)
    assert not received_anywhere(upstream, PAN)


async def test_encoded_slash_does_not_leave_mount(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    status, _ = await post_raw_path(client, base, "/reveal%2Fcards/1", b"", {}, method="GET")
    assert upstream.requests == []
    assert status == 401


async def test_encoded_slash_does_not_pass_allow_list(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    headers = {"X-Api-Key": "backend-key-0123456789"}
    path = "/reveal/admin%2F..%2Fcards%2F1"
    await post_raw_path(client, base, path, b"", headers, method="GET")
    assert [received.path_qs for received in upstream.requests] in ([], ["/cards/1"])


# JSON fields


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"card": {"\\u006eumber": "%s"}}' % PAN.encode(), id="escaped-key"),
        pytest.param(b'{"card": {"number": %s}}' % PAN.encode(), id="number-not-string"),
        pytest.param(
            b'{"card": {"number": "%s", "cvc": "%s"}}' % (PAN.encode(), CVC.encode()),
            id="with-cvc",
        ),
    ],
)
async def test_json_variant_still_tokenizes(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, body: bytes
) -> None:
    status, _ = await post_raw_path(client, base, "/api/checkout", body, JSON_HEADERS)
    assert status == 200
    assert not received_anywhere(upstream, PAN)
    cvc = json.loads(upstream.last.body)["card"].get("cvc")
    assert cvc is None or cvc.startswith("tok_")


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        pytest.param(
            b'{"card": {"number": "%s"}, "meta": {"a": {"b": 1, "b": 2}}}' % PAN.encode(),
            "invalid_body",
            id="duplicate-key-at-depth",
        ),
        pytest.param(
            b'{"card": {"number": "%s", "num\\u0062er": "1"}}' % PAN.encode(),
            "invalid_body",
            id="duplicate-key-by-escape",
        ),
        pytest.param(b'{"card": {"number": 4242424242424242.0}}', "invalid_value", id="float"),
        pytest.param(b'{"card": {"number": 1%s}}' % (b"0" * 5000), "invalid_body", id="huge-int"),
        pytest.param(b'{"card": {"number": ["%s"]}}' % PAN.encode(), "invalid_body", id="array"),
        pytest.param(b'[{"card": {"number": "%s"}}]' % PAN.encode(), "missing_field", id="list"),
        pytest.param(
            b'{"card": {"number": "%s"}, "x": "\\ud800"}' % PAN.encode(),
            "invalid_body",
            id="lone-surrogate",
        ),
        pytest.param(
            b'{"card": {"number": "%s"}, "x": %s}' % (PAN.encode(), b"[" * 5000 + b"]" * 5000),
            "invalid_body",
            id="deep-nesting",
        ),
    ],
)
async def test_json_trick_is_rejected(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    body: bytes,
    error_type: str,
) -> None:
    status, raw = await post_raw_path(client, base, "/api/checkout", body, JSON_HEADERS)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == error_type
    assert PAN.encode() not in raw
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"card": {"number": "%s", "NUMBER": "%s"}}' % (PAN.encode(), PAN.encode()),
            id="case-variant-after-required-field",
        ),
        pytest.param(
            b'{"card": {"number": "4000056655665556"}, "Email": "%s"}' % EMAIL.encode(),
            id="case-variant-of-optional-field",
        ),
    ],
)
async def test_json_key_case_variant_is_not_relayed(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, body: bytes
) -> None:
    await post_raw_path(client, base, "/api/checkout", body, JSON_HEADERS)
    assert not received_anywhere(upstream, PAN)
    assert not received_anywhere(upstream, EMAIL)


async def test_number_out_of_decimal_range_is_400(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    body = b'{"card": {"number": "%s"}, "x": 1e-99999999999999999999}' % PAN.encode()
    status, raw = await post_raw_path(client, base, "/api/checkout", body, JSON_HEADERS)
    assert upstream.requests == []
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_body"


# Form, query and header fields


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"card%5Bnumber%5D={PAN}", id="escaped-brackets"),
        pytest.param(f"card%5bnumber%5d={PAN}", id="lowercase-escapes"),
        pytest.param(f"card[number]=1&card[number]={PAN}", id="repeated"),
        pytest.param("card[number]=4242+4242+4242+4242", id="plus-for-space"),
        pytest.param("card[number]=4242%204242%204242%204242", id="escaped-space"),
    ],
)
async def test_form_variant_still_tokenizes(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, body: str
) -> None:
    status, _ = await post_raw_path(client, base, "/card-form", body.encode(), FORM_HEADERS)
    assert status == 200
    values = [value for _, value in parse_qsl(upstream.last.body.decode(), strict_parsing=True)]
    assert values
    assert all(value.startswith("tok_") for value in values)


@pytest.mark.parametrize(
    "body",
    [
        f"card[number]=1;card[number]={PAN}",
        f"card[number]={PAN}%",
        f"card[number]={PAN}%C0%AF",
        f"card[number]={PAN}\xe9",
    ],
)
async def test_form_trick_is_rejected(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream, body: str
) -> None:
    data = body.encode("latin-1")
    status, raw = await post_raw_path(client, base, "/card-form", data, FORM_HEADERS)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_body"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/card-form", f"card[number][]={PAN}"),
        ("POST", "/card-form", f"card[number][0]={PAN}"),
        ("GET", f"/lookup?card[]={PAN}", ""),
        ("GET", f"/lookup?CARD={PAN}", ""),
    ],
)
async def test_field_name_variant_is_not_relayed(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    method: str,
    path: str,
    body: str,
) -> None:
    await post_raw_path(client, base, path, body.encode(), FORM_HEADERS, method=method)
    assert not received_anywhere(upstream, PAN)


async def test_underscore_header_variant_is_not_relayed(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    async with client.post(f"{base}/card-header", headers={"X-Card_Number": PAN}) as response:
        await response.read()
    assert not received_anywhere(upstream, PAN)


async def test_repeated_header_fields_all_tokenize(port: int, upstream: RecordingUpstream) -> None:
    request = framed(
        f"POST /card-header HTTP/1.1|Host: x|X-Card-Number: {PAN}|"
        "x-card-number: 4000056655665556|Content-Length: 0|Connection: close"
    )
    response = await send_raw(port, request)
    assert response.startswith(b"HTTP/1.1 200")
    values = upstream.last.headers.getall("X-Card-Number")
    assert len(values) == 2
    assert all(value.startswith("tok_") for value in values)


# Content types and content codings


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/json; charset=utf-16"}, card_body().decode(), 415),
        ({"Content-Type": "application/json; charset=utf-8; charset=latin-1"}, None, 415),
        ({"Content-Type": "text/json"}, None, 415),
        ({"Content-Type": "application/x-json"}, None, 415),
        ({"Content-Type": ""}, None, 415),
        ({"Content-Type": "application/json", "Content-Encoding": "compress"}, None, 415),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip, foo"}, None, 415),
        ({"Content-Type": "application/json", "Content-Encoding": ","}, None, 415),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, None, 400),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, None, 400),
    ],
)
async def test_content_type_or_coding_trick_is_rejected(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    headers: dict[str, str],
    body: str | None,
    status: int,
) -> None:
    data = body.encode("utf-16") if body else card_body()
    answered, raw = await post_raw_path(client, base, "/api/checkout", data, headers)
    assert answered == status
    assert json.loads(raw)["error"]["route"] == "checkout"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("headers", "encode"),
    [
        ({"Content-Type": "application/vnd.shop+json"}, None),
        ({"Content-Type": 'application/json; charset="UTF-8"'}, None),
        ({"Content-Type": "Application/JSON"}, None),
        ({"Content-Type": "application/json", "Content-Encoding": "identity"}, None),
        ({"Content-Type": "application/json", "Content-Encoding": "GZIP"}, gzip.compress),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"},
            lambda body: gzip.compress(gzip.compress(body)),
        ),
        ({"Content-Type": "application/json", "Content-Encoding": "identity, gzip"}, gzip.compress),
    ],
)
async def test_content_type_or_coding_variant_still_tokenizes(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    headers: dict[str, str],
    encode: Callable[[bytes], bytes] | None,
) -> None:
    body = encode(card_body()) if encode else card_body()
    status, _ = await post_raw_path(client, base, "/api/checkout", body, headers)
    assert status == 200
    received = upstream.last.body
    while received.startswith(b"\x1f\x8b"):
        received = gzip.decompress(received)
    assert b"card" in received
    assert PAN.encode() not in received


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("gzip, gzip", lambda body: gzip.compress(gzip.compress(body))),
    ],
)
async def test_decompression_bomb_is_413(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    coding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    bomb = encode(b'{"card": {"number": "' + b" " * 5_000_000 + b'"}}')
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    status, raw = await post_raw_path(client, base, "/api/checkout", bomb, headers)
    assert status == 413
    assert json.loads(raw)["error"]["type"] == "body_too_large"
    assert upstream.requests == []


async def test_repeated_content_encoding_lines_are_combined(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    headers = CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "identity"),
            ("Content-Encoding", "gzip"),
        ]
    )
    status, _ = await post_raw_path(client, base, "/api/checkout", card_body(), headers)
    if status == 200:
        # A relayed body must decode with the codings named in the lines the upstream received.
        codings = ",".join(upstream.last.headers.getall("Content-Encoding"))
        body = upstream.last.body
        if "gzip" in codings:
            assert body.startswith(b"\x1f\x8b")
            body = gzip.decompress(body)
        assert json.loads(body)["card"]["number"] != PAN
    else:
        assert status in (400, 415)
        assert upstream.requests == []


# Values revealed into headers


async def test_detokenized_header_cannot_inject(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    injected = "x\r\nX-Injected: yes"
    body = {"card": {"number": PAN}, "email": injected}
    async with client.post(f"{base}/api/checkout", json=body) as response:
        assert response.status == 200
    token = json.loads(upstream.last.body)["email"]

    async with client.post(f"{base}/out/secret-header", headers={"X-Secret": token}) as response:
        assert response.status == 400
        raw = await response.read()
    assert json.loads(raw)["error"]["type"] == "invalid_value"
    assert len(upstream.requests) == 1
    assert b"Injected" not in raw
    assert token.encode() not in raw
    assert "Injected" not in caplog.text
    assert token not in caplog.text


# Slow clients


async def test_stalled_body_times_out(gateway_dir: Path, upstream: RecordingUpstream) -> None:
    try:
        gateway = await start_gateway(
            gateway_dir,
            {"shop.yaml": SHOP_ROUTES.format(upstream=upstream.url)},
            limits=LIMITS + "client_body_timeout: 1s\n",
        )
    except ConfigError as error:
        pytest.fail(f"limits.client_body_timeout is not a setting: {error}")
    try:
        request = framed(
            "POST /api/checkout HTTP/1.1|Host: x|Content-Type: application/json|"
            "Content-Length: 100",
            b'{"card": {"number": "4242',
        )
        reader, writer = await open_raw(gateway.reverse_address.port)
        try:
            writer.write(request)
            await writer.drain()
            # Ten times the configured timeout: a bound for a hang, not a speed requirement.
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        finally:
            await close_raw(writer)
    finally:
        await gateway.stop()
    assert answer.startswith(b"HTTP/1.1 408")
    assert upstream.requests == []


# Upstream responses


type GatewayStarter = Callable[[bytes], Awaitable[Gateway]]


@pytest.fixture
async def raw_gateway(tmp_path: Path) -> AsyncIterator[GatewayStarter]:
    """Return a function that starts a gateway in front of a ``RawUpstream`` with a fixed reply."""
    started: list[tuple[RawUpstream, Gateway]] = []

    async def start(reply: bytes) -> Gateway:
        server = RawUpstream(reply)
        await server.start()
        directory = tmp_path / f"raw-gateway-{len(started)}"
        directory.mkdir()
        gateway = await start_gateway(
            directory, {"shop.yaml": SHOP_ROUTES.format(upstream=server.url)}, limits=LIMITS
        )
        started.append((server, gateway))
        return gateway

    yield start
    for server, gateway in started:
        await gateway.stop()
        await server.stop()


UPSTREAM_BODY = card_body(PARSER_PAN)


@pytest.mark.parametrize("path", ["/plain", "/card-echo"])
@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n"
            % len(UPSTREAM_BODY)
            + UPSTREAM_BODY
            + b"\r\n0\r\n\r\n",
            id="content-length-and-chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
            b"Content-Length: %d\r\n\r\n" % len(UPSTREAM_BODY) + UPSTREAM_BODY,
            id="duplicate-content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + UPSTREAM_BODY + b"\r\n0\r\n\r\n",
            id="invalid-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(UPSTREAM_BODY)
            + UPSTREAM_BODY,
            id="no-content-with-body",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Split: a\rb\r\n"
            b"Content-Length: %d\r\n\r\n" % len(UPSTREAM_BODY) + UPSTREAM_BODY,
            id="bare-cr-in-header",
        ),
    ],
)
async def test_unparsable_upstream_response_is_502(
    raw_gateway: GatewayStarter, reply: bytes, path: str
) -> None:
    gateway = await raw_gateway(reply)
    request = framed(f"GET {path} HTTP/1.1|Host: x|Connection: close")
    response = await send_raw(gateway.reverse_address.port, request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502")
    assert json.loads(body)["error"]["type"] in (
        "upstream_unreachable",
        "upstream_response_invalid",
    )
    assert PARSER_PAN.encode() not in response


async def test_truncated_upstream_body_cuts_client_connection(
    raw_gateway: GatewayStarter,
) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n"
        b"\r\n" + b"x" * 100
    )
    gateway = await raw_gateway(reply)
    response = await send_raw(gateway.reverse_address.port, framed("GET /plain HTTP/1.1|Host: x"))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 1000" in head.lower()
    # The gateway closes the connection instead of leaving the client waiting for the rest.
    assert body == b"x" * 100


def responder(
    body: bytes, headers: dict[str, str], status: int = 200
) -> Callable[[web.Request, ReceivedRequest], Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: ReceivedRequest) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers=headers)
        if "Content-Type" not in headers:
            response.headers.pop("Content-Type", None)
        return response

    return respond


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"card " + PAN.encode(), {"Content-Type": "text/html"}, id="html"),
        pytest.param(card_body(), {}, id="no-content-type"),
        pytest.param(
            card_body(),
            {"Content-Type": "application/json", "Content-Encoding": "compress"},
            id="unknown-coding",
        ),
        pytest.param(
            card_body(),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            id="not-gzip",
        ),
        pytest.param(
            gzip.compress(b'{"card": {"number": "' + b" " * 5_000_000 + b'"}}'),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            id="bomb",
        ),
        pytest.param(
            b'{"card": {"number": "%s", "pad": "%s"}}' % (PAN.encode(), b"x" * 70_000),
            {"Content-Type": "application/json"},
            id="over-limit",
        ),
        pytest.param(
            b'{"card": {"number": "%s"}' % PAN.encode(),
            {"Content-Type": "application/json"},
            id="malformed-json",
        ),
        pytest.param(
            b'{"card": {"number": "%s", "number": "1"}}' % PAN.encode(),
            {"Content-Type": "application/json"},
            id="duplicate-key",
        ),
        pytest.param(
            b'{"card": {"number": "%s"}}' % PAN.encode(),
            {"Content-Type": "application/json; charset=utf-16"},
            id="wrong-charset",
        ),
    ],
)
async def test_unprocessable_upstream_response_is_502(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    body: bytes,
    headers: dict[str, str],
) -> None:
    upstream.respond = responder(body, headers)
    async with client.post(f"{base}/card-echo", json={}) as response:
        assert response.status == 502
        raw = await response.read()
    assert json.loads(raw)["error"]["type"] == "upstream_response_invalid"
    assert PAN.encode() not in raw


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/card-echo", b'{"card": {"number": "42"}}'),
        ("/card-echo-required", b'{"card": {}}'),
    ],
)
async def test_upstream_value_problem_is_502(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    path: str,
    body: bytes,
) -> None:
    upstream.respond = responder(body, {"Content-Type": "application/json"})
    async with client.post(f"{base}{path}", json={}) as response:
        raw = await response.read()
        assert response.status == 502
    assert json.loads(raw)["error"]["type"] == "upstream_response_invalid"


async def test_head_on_response_route_has_no_body(port: int, upstream: RecordingUpstream) -> None:
    upstream.respond = responder(card_body(), {"Content-Type": "application/json"})
    response = await send_raw(port, framed("HEAD /card-echo HTTP/1.1|Host: x|Connection: close"))
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert rest == b""


# Logs and error bodies


async def test_rejections_echo_no_value(
    client: aiohttp.ClientSession,
    base: str,
    upstream: RecordingUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unknown_token = "tok_" + "a1" * 16
    attempts = [
        ("/out/pay", b'{"card": {"number": "%s"}}' % unknown_token.encode(), 422),
        (
            "/out/pay",
            b'{"card": {"number": "%s"}, "email": "%s"}' % (PAN.encode(), EMAIL.encode()),
            422,
        ),
        (
            "/api/checkout",
            b'{"card": {"number": "%s", "cvc": "%s"}}' % (PAN[:10].encode(), CVC.encode()),
            400,
        ),
        (
            "/api/checkout",
            b'{"card": {"number": "%s"}, "email": ["%s"]}' % (PAN.encode(), EMAIL.encode()),
            400,
        ),
        ("/api/checkout", b'{"card": {"number": "%s"' % PAN.encode(), 400),
        ("/api/checkout", b'{"card": {"number": "%s\\q"}}' % PAN.encode(), 400),
        ("/api/checkout", b'{"card": {"number": "%s\x01"}}' % PAN.encode(), 400),
        (
            "/api/checkout",
            b'{"card": {"number": "%s"}, "x": %s}' % (PAN.encode(), b"1" * 5000),
            400,
        ),
    ]
    for path, body, status in attempts:
        answered, raw = await post_raw_path(client, base, path, body, JSON_HEADERS)
        assert answered == status, raw
        for value in (PAN, PAN[:10], CVC, EMAIL, unknown_token):
            assert value.encode() not in raw
    assert upstream.requests == []
    for value in (PAN, PAN[:10], EMAIL, unknown_token):
        assert value not in caplog.text


@pytest.mark.parametrize(
    "path",
    ["/cards/4242-4242-4242-4242", "/users/ann@example.org"],
)
async def test_access_log_redacts_path_values(
    client: aiohttp.ClientSession, base: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    await post_raw_path(client, base, path, b"", {}, method="GET")
    assert "gateway.access" in {record.name for record in caplog.records}
    for value in ("4242-4242-4242-4242", "ann@example.org"):
        assert value not in caplog.text


# Load


async def echo_body(request: web.Request, received: ReceivedRequest) -> web.Response:
    return web.Response(body=received.body, content_type="application/json")


async def test_concurrent_distinct_values_keep_their_tokens(
    client: aiohttp.ClientSession, base: str, upstream: RecordingUpstream
) -> None:
    upstream.respond = echo_body
    originals = [
        {"card": {"number": f"4000{index:06d}000000"}, "email": f"user{index % 10}@example.com"}
        for index in range(120)
    ]

    async def post(path: str, body: object) -> dict[str, object]:
        async with client.post(f"{base}{path}", json=body) as response:
            assert response.status == 200
            echoed: dict[str, object] = await response.json()
            return echoed

    tokenized = await asyncio.gather(*(post("/api/checkout", body) for body in originals))
    numbers = [body["card"]["number"] for body in tokenized]  # type: ignore[index]
    assert len(set(numbers)) == len(numbers)
    assert not set(numbers) & {body["card"]["number"] for body in originals}  # type: ignore[index]
    email_tokens: dict[str, set[object]] = {}
    for original, body in zip(originals, tokenized, strict=True):
        email_tokens.setdefault(str(original["email"]), set()).add(body["email"])
    assert all(len(tokens) == 1 for tokens in email_tokens.values())
    assert len({next(iter(tokens)) for tokens in email_tokens.values()}) == 10

    revealed = await asyncio.gather(*(post("/out/pay", body) for body in tokenized))
    assert revealed == originals
