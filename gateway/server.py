"""Start and stop a gateway: keys, store, vault, router and the reverse listener.

A running gateway reloads its key file on SIGHUP, which is how it picks up a rotated key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from gateway.config.model import Address, Config
from gateway.engine.routing import Router
from gateway.errors import KeyMaterialError
from gateway.proxy.listener import GatewayServer
from gateway.proxy.reverse import ReverseProxy
from gateway.proxy.upstream import UpstreamClient
from gateway.store import open_store
from gateway.store.base import TokenStore
from gateway.tokens.keys import load_key_ring
from gateway.tokens.vault import Vault

logger = logging.getLogger("gateway.server")


@dataclass
class Gateway:
    """A running gateway. ``start`` returns once the listener accepts connections."""

    config: Config
    store: TokenStore
    upstream: UpstreamClient
    runner: web.ServerRunner
    reverse_address: Address
    vault: Vault

    @classmethod
    async def start(cls, config: Config) -> Gateway:
        """Start everything, or raise after closing what was already started."""
        async with contextlib.AsyncExitStack() as cleanup:
            base_dir = config.source.parent
            key_ring = load_key_ring(config.keys, base_dir=base_dir)
            store = open_store(
                config.store.url, timeout=config.limits.store_timeout, base_dir=base_dir
            )
            cleanup.push_async_callback(store.close)
            await store.ping()
            for warning in await store.durability_warnings():
                logger.warning("store durability: %s", warning)
            vault = Vault(store, key_ring)
            await vault.check_key_ring()

            upstream = UpstreamClient(config.limits)
            await upstream.start()
            cleanup.push_async_callback(upstream.close)
            runner, address = await _start_reverse_listener(config, vault, upstream)
            cleanup.pop_all()

        for connection in config.connections:
            logger.info(
                "connection %s: mount %s -> %s (%d routes)",
                connection.name,
                connection.mount,
                connection.upstream,
                len(connection.routes),
            )
        logger.info("reverse proxy listening on http://%s", address)
        return cls(config, store, upstream, runner, address, vault)

    def reload_keys(self) -> bool:
        """Reload the key ring from the configured key source; see ``reload_key_ring``."""
        return reload_key_ring(self.config, self.vault)

    async def stop(self) -> None:
        logger.info("stopping; finishing requests in flight")
        await self.runner.cleanup()
        await self.upstream.close()
        await self.store.close()
        logger.info("stopped")


def reload_key_ring(config: Config, vault: Vault) -> bool:
    """Load the key ring again from ``config.keys`` and swap it into ``vault``; return success.

    Requests in flight finish with the ring they started with. When the new ring fails to load,
    or has another index key, the running ring stays in place and the error is logged.
    """
    # NOTE: with keys.development on and the key file gone, load_key_ring writes a new
    # development key file. Its index key differs, so the reload fails, but the file stays.
    running = vault.key_ring
    try:
        key_ring = load_key_ring(config.keys, base_dir=config.source.parent)
        vault.use_key_ring(key_ring)
    except (KeyMaterialError, OSError) as error:
        logger.error(
            "key reload failed, so the gateway keeps master key versions %s with primary "
            "version %d: %s",
            ", ".join(str(version) for version in running.versions),
            running.primary_version,
            error,
        )
        return False
    logger.info(
        "reloaded the key ring; new records are sealed under master key version %d",
        key_ring.primary_version,
    )
    return True


async def _start_reverse_listener(
    config: Config, vault: Vault, upstream: UpstreamClient
) -> tuple[web.ServerRunner, Address]:
    proxy = ReverseProxy(
        Router(config.connections),
        vault,
        config.limits,
        upstream,
        access_log=config.logging.access_log,
    )
    # auto_decompress off: the route engine decodes bodies itself, with an output cap, and an
    # unrouted body must reach the upstream byte for byte with its Content-Encoding.
    server = GatewayServer(proxy.handle, access_log=None, auto_decompress=False)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    listen = config.listen.reverse
    site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][0], runner.addresses[0][1]
    return runner, Address(str(host), int(port))


async def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully; reload the keys on SIGHUP."""
    gateway = await Gateway.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_keys)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
