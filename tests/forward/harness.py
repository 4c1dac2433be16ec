"""Start a gateway with its forward listener on loopback, and talk to it as proxy clients do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import textwrap
from pathlib import Path

from gateway.config.loader import load_config
from gateway.server import Gateway
from tests.harness import BACKEND_KEY, default_policy

CONNECT_TIMEOUT = 5.0


async def start_forward_gateway(
    directory: Path,
    routes: dict[str, str],
    *,
    forward: str = "",
    limits: str = "",
    store_url: str | None = None,
    policy: str | None = None,
) -> Gateway:
    """Write a configuration with every listener on port 0 and start the gateway.

    ``forward`` is YAML for the forward section besides ``ca_dir``; ``limits`` for limits;
    ``policy`` for clients, classes and roles, by default ``default_policy``.
    """
    routes_dir = directory / "routes"
    routes_dir.mkdir(parents=True, exist_ok=True)
    for name, text in routes.items():
        (routes_dir / name).write_text(textwrap.dedent(text))
    store = store_url or f"sqlite:///{directory / 'tokens.db'}"
    connections = re.findall(r"^connection:\s*(\S+)", "\n".join(routes.values()), re.MULTILINE)
    forward_yaml = textwrap.indent(textwrap.dedent(forward), "  ")
    limits_yaml = textwrap.indent(textwrap.dedent(limits), "  ") if limits.strip() else "  {}"
    (directory / "gateway.yaml").write_text(
        "listen: {reverse: '127.0.0.1:0', admin: '127.0.0.1:0', forward: '127.0.0.1:0'}\n"
        f"store: {{url: '{store}'}}\n"
        "keys: {file: keys.yaml, development: true}\n"
        "routes: [routes/*.yaml]\n"
        f"forward:\n  ca_dir: ca\n{forward_yaml}\n"
        f"limits:\n{limits_yaml}\n"
        f"{textwrap.dedent(policy) if policy is not None else default_policy(connections)}"
    )
    config = load_config(directory / "gateway.yaml", environ={})
    return await Gateway.start(config)


def forward_port(gateway: Gateway) -> int:
    assert gateway.forward is not None, "the forward listener is off"
    return gateway.forward.address.port


def gateway_ca_file(gateway: Gateway) -> Path:
    return gateway.config.forward.ca_dir / "vaultgate-ca-cert.pem"


def proxy_url(gateway: Gateway, client: str = "backend", key: str = BACKEND_KEY) -> str:
    return f"http://{client}:{key}@127.0.0.1:{forward_port(gateway)}"


def client_tls(gateway: Gateway) -> ssl.SSLContext:
    """A client TLS context that trusts the gateway's CA and nothing else."""
    return ssl.create_default_context(cafile=gateway_ca_file(gateway))


def basic(client: str = "backend", key: str = BACKEND_KEY) -> str:
    return "Basic " + base64.b64encode(f"{client}:{key}".encode()).decode()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
    return int(head.split(b" ", 2)[1]), head


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """Read one response framed by Content-Length: its status, head and body."""
    _, head = await read_head(reader)
    return await read_response_rest(reader, head)


async def connect(
    port: int, target: str, *, authorization: str | None = None
) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send CONNECT ``target`` (host:port) and return the proxy's status, body and streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status, head = await read_head(reader)
    body = b""
    if status != 200:
        _, _, body = await read_response_rest(reader, head)
    return status, body, reader, writer


async def read_response_rest(reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes, bytes]:
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), CONNECT_TIMEOUT) if length else b""
    return status, head, body


async def open_intercepted(
    gateway: Gateway, host: str, *, authorization: str | None = basic()
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a CONNECT tunnel to ``host``:443 and start TLS in it, trusting the gateway's CA."""
    status, body, reader, writer = await connect(
        forward_port(gateway), f"{host}:443", authorization=authorization
    )
    assert status == 200, body
    await writer.start_tls(client_tls(gateway), server_hostname=host)
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
