"""Who may use the forward proxy and for which hosts: every refusal relays nothing.

The gateway is never an open proxy: unlisted hosts, missing or wrong credentials, plain-HTTP
requests to unlisted hosts, and tunnels to the gateway's own listeners, its store or loopback
addresses are all rejected, and the upstream stand-in receives no request.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import ForbiddenError
from gateway.proxy.forward.access import Endpoint, TunnelGuard
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
from tests.harness import BACKEND_KEY, default_policy
from tests.logcapture import remember_sensitive
from tests.upstream import RecordingUpstream

PAN = "5105105105105100"
remember_sensitive(PAN)

PAY_ROUTES = """\
connection: pay
upstream: {upstream}
mount: /pay
hosts: [pay.example]
auth:
  header: X-Pay-Key
  clients: [backend]
routes:
  - name: pay
    match: {{method: POST, path: /pay}}
    request:
      - {{json: $.card.number, action: detokenize}}
"""

SHOP_ROUTES = """\
connection: shop
upstream: {upstream}
mount: /shop
hosts: [shop.example]
routes:
  - name: checkout
    match: {{method: POST, path: /checkout}}
    request:
      - {{json: $.card.number, action: tokenize, class: card.pan}}
"""

STAFF_ROUTES = """\
connection: staff
upstream: {upstream}
mount: /staff
hosts: [staff.example]
auth:
  clients: [staff]
routes: []
"""


def policy() -> str:
    """The default policy, and a client ``staff`` that only the staff connection allows."""
    text = default_policy(["pay", "shop", "staff"])
    return text.replace(
        "clients:\n",
        "clients:\n  staff:\n    keys: [{secret: staff-key-0123456789}]\n    roles: [everything]\n",
        1,
    )


async def start(directory: Path, upstream: RecordingUpstream, forward: str = "") -> Gateway:
    return await start_forward_gateway(
        directory,
        {
            "pay.yaml": PAY_ROUTES.format(upstream=upstream.url),
            "shop.yaml": SHOP_ROUTES.format(upstream=upstream.url),
            "staff.yaml": STAFF_ROUTES.format(upstream=upstream.url),
        },
        forward=forward,
        policy=policy(),
    )


@pytest.fixture
async def gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start(gateway_dir, upstream)
    yield started
    await started.stop()


@pytest.fixture
async def tunnel_gateway(gateway_dir: Path, upstream: RecordingUpstream) -> AsyncIterator[Gateway]:
    started = await start(gateway_dir, upstream, forward="unlisted_hosts: tunnel\n")
    yield started
    await started.stop()


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


async def connect_status(
    gateway: Gateway, target: str, authorization: str | None
) -> tuple[int, bytes]:
    status, body, _, writer = await connect(
        forward_port(gateway), target, authorization=authorization
    )
    await close(writer)
    return status, body


async def test_unlisted_host_is_403(gateway: Gateway, upstream: RecordingUpstream) -> None:
    status, body = await connect_status(gateway, "evil.example:443", basic())
    assert status == 403
    error = error_of(body)
    assert error["type"] == "forbidden"
    assert "evil.example" in error["message"]
    assert "forward.unlisted_hosts: tunnel" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic("backend", "wrong-key"),
        basic("support", BACKEND_KEY),
        basic("", BACKEND_KEY),
        "Basic not-base64!",
        f"Bearer {BACKEND_KEY}",
    ],
    ids=["missing", "wrong-key", "wrong-name", "no-name", "malformed", "not-basic"],
)
async def test_bad_credentials_are_407(
    gateway: Gateway, upstream: RecordingUpstream, authorization: str | None
) -> None:
    status, body = await connect_status(gateway, "pay.example:443", authorization)
    assert status == 407
    assert error_of(body)["type"] == "proxy_unauthorized"
    assert BACKEND_KEY.encode() not in body
    assert upstream.requests == []


async def test_client_not_allowed_on_connection_is_403(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    status, body = await connect_status(gateway, "staff.example:443", basic())
    assert status == 403
    assert "may not call connection 'staff'" in error_of(body)["message"]
    assert upstream.requests == []


async def test_plain_http_to_unlisted_host_is_403(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    proxy = f"http://127.0.0.1:{forward_port(gateway)}"
    auth = {"Proxy-Authorization": basic()}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get("http://evil.example/x", proxy=proxy, headers=auth) as response,
    ):
        assert response.status == 403
        assert "evil.example" in (await response.json())["error"]["message"]
    assert upstream.requests == []


async def test_plain_http_without_credentials_is_407(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    proxy = f"http://127.0.0.1:{forward_port(gateway)}"
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.post("http://shop.example/checkout", json={}, proxy=proxy) as response,
    ):
        assert response.status == 407
        assert response.headers["Proxy-Authenticate"] == 'Basic realm="vaultgate"'
    assert upstream.requests == []


async def test_plain_http_to_listed_host_is_routed(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    proxy = f"http://127.0.0.1:{forward_port(gateway)}"
    auth = {"Proxy-Authorization": basic()}
    body = {"card": {"number": PAN}}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.post(
            "http://shop.example/checkout", json=body, proxy=proxy, headers=auth
        ) as response,
    ):
        assert response.status == 200
    received = upstream.last
    assert PAN.encode() not in received.body
    assert received.headers["Host"] == "shop.example"
    assert "Proxy-Authorization" not in received.headers


async def test_host_header_of_another_host_is_rejected(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    reader, writer = await open_intercepted(gateway, "shop.example")
    try:
        writer.write(b"GET /anything HTTP/1.1\r\nHost: pay.example\r\n\r\n")
        status, _, body = await read_response(reader)
    finally:
        await close(writer)
    assert status == 400
    assert "Host header names pay.example" in error_of(body)["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("listener", ["reverse", "admin", "forward"])
async def test_tunnel_to_own_listener_is_403(
    tunnel_gateway: Gateway, upstream: RecordingUpstream, listener: str
) -> None:
    addresses = {
        "reverse": tunnel_gateway.reverse_address,
        "admin": tunnel_gateway.admin_address,
        "forward": tunnel_gateway.forward.address if tunnel_gateway.forward else None,
    }
    address = addresses[listener]
    assert address is not None
    status, body = await connect_status(tunnel_gateway, f"127.0.0.1:{address.port}", basic())
    assert status == 403
    assert error_of(body)["type"] == "forbidden"
    status, _ = await connect_status(tunnel_gateway, f"localhost:{address.port}", basic())
    assert status == 403
    assert upstream.requests == []


async def test_tunnel_to_loopback_is_403(
    tunnel_gateway: Gateway, upstream: RecordingUpstream
) -> None:
    status, body = await connect_status(tunnel_gateway, f"127.0.0.1:{upstream.port}", basic())
    assert status == 403
    assert "loopback" in error_of(body)["message"]
    assert upstream.requests == []


async def test_tunnel_to_unlisted_host_needs_credentials(tunnel_gateway: Gateway) -> None:
    status, _ = await connect_status(tunnel_gateway, "example.org:443", None)
    assert status == 407


async def test_tunnel_relays_without_interception(
    tunnel_gateway: Gateway, test_ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tunnels never reach loopback, and a test may reach nothing else. So for this test the guard
    # lets one loopback stand-in through, to show that its bytes pass uninterpreted.
    standin = RecordingUpstream(test_ca.issue("tunnel.example").server_context())
    await standin.start()

    async def resolve(self: TunnelGuard, host: str, port: int) -> str:
        assert (host, port) == ("tunnel.example", standin.port)
        return "127.0.0.1"

    monkeypatch.setattr(TunnelGuard, "resolve", resolve)
    try:
        status, _, reader, writer = await connect(
            forward_port(tunnel_gateway), f"tunnel.example:{standin.port}", authorization=basic()
        )
        assert status == 200
        # The client trusts only the test CA: the stand-in's own certificate must arrive.
        await writer.start_tls(
            ssl.create_default_context(cafile=test_ca.cert_file), server_hostname="tunnel.example"
        )
        body = json.dumps({"card": {"number": PAN}}).encode()
        writer.write(
            b"POST /checkout HTTP/1.1\r\nHost: tunnel.example\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, _ = await read_response(reader)
        await close(writer)
    finally:
        await standin.stop()
    assert status == 200
    assert standin.last.body == body


async def test_proxy_auth_off_uses_connection_keys(
    gateway_dir: Path, upstream: RecordingUpstream
) -> None:
    gateway = await start(gateway_dir, upstream, forward="proxy_auth: off\n")
    try:
        token_body = json.dumps({"card": {"number": "tok_" + "0" * 32}}).encode()
        reader, writer = await open_intercepted(gateway, "pay.example", authorization=None)
        try:
            writer.write(
                b"POST /pay HTTP/1.1\r\nHost: pay.example\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(token_body), token_body)
            )
            status, _, body = await read_response(reader)
        finally:
            await close(writer)
    finally:
        await gateway.stop()
    assert status == 401
    assert error_of(body)["type"] == "unauthorized"
    assert upstream.requests == []


async def test_guard_refuses_own_endpoints() -> None:
    # Only decisions: resolving an IP literal sends nothing over the network.
    guard = TunnelGuard([Endpoint("10.1.2.3", 6379), Endpoint("0.0.0.0", 8081)])
    with pytest.raises(ForbiddenError, match="gateway's own listener or store"):
        await guard.resolve("10.1.2.3", 6379)
    with pytest.raises(ForbiddenError, match="gateway's own listener or store"):
        await guard.resolve("10.9.9.9", 8081)
    with pytest.raises(ForbiddenError, match="link-local"):
        await guard.resolve("169.254.169.254", 80)
    assert await guard.resolve("10.1.2.3", 443) == "10.1.2.3"
