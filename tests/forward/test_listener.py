"""Starting and stopping the forward listener beside the reverse one."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.proxy.forward import ForwardProxy
from gateway.server import Gateway
from tests.forward.harness import forward_port, start_forward_gateway

ROUTE = "connection: pay\nupstream: https://api.example.com\nhosts: [api.example.com]\nroutes: []\n"


async def test_busy_port_fails_start(gateway_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (gateway_dir / "routes").mkdir()
        (gateway_dir / "routes" / "pay.yaml").write_text(ROUTE)
        (gateway_dir / "gateway.yaml").write_text(
            "listen: {reverse: '127.0.0.1:0', admin: off, "
            f"forward: '127.0.0.1:{port}'}}\n"
            f"store: {{url: 'sqlite:///{gateway_dir / 'tokens.db'}'}}\n"
            "keys: {file: keys.yaml, development: true}\nforward: {ca_dir: ca}\n"
        )
        config = load_config(gateway_dir / "gateway.yaml", environ={})
        with pytest.raises(OSError, match="cannot listen"):
            await Gateway.start(config)


async def test_one_forward_proxy_per_process(gateway_dir: Path) -> None:
    gateway = await start_forward_gateway(gateway_dir, {"pay.yaml": ROUTE})
    try:
        assert forward_port(gateway) > 0
        with pytest.raises(RuntimeError, match="runs a forward proxy already"):
            await ForwardProxy.start(gateway.config, None, gateway.upstream, [])  # type: ignore[arg-type]
    finally:
        await gateway.stop()
    assert gateway.forward is None


async def test_stop_closes_open_tunnels(gateway_dir: Path) -> None:
    gateway = await start_forward_gateway(gateway_dir, {"pay.yaml": ROUTE})
    port = forward_port(gateway)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await gateway.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
