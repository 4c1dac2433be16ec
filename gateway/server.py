"""Start and stop a gateway: keys, store, vault, policy, audit, and its listeners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web

from gateway.api.app import create_api_app
from gateway.audit.events import AuditSink, FanOutAuditSink
from gateway.config.model import Address, Config
from gateway.engine.routing import Router
from gateway.metrics import Metrics, MetricsAuditSink
from gateway.policy.enforcer import ApiOperations, Enforcer
from gateway.proxy.forward import ForwardProxy
from gateway.proxy.forward.listener import store_endpoint
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
    """A running gateway. ``start`` returns once every listener accepts connections."""

    config: Config
    store: TokenStore
    vault: Vault
    upstream: UpstreamClient
    metrics: Metrics
    runners: list[web.BaseRunner] = field(default_factory=list)
    reverse_address: Address = field(default_factory=lambda: Address("127.0.0.1", 0))
    admin_address: Address | None = None
    forward: ForwardProxy | None = None

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

            upstream = UpstreamClient(config.limits, config.connections)
            await upstream.start()
            cleanup.push_async_callback(upstream.close)

            metrics = Metrics()
            gateway = cls(config, store, vault, upstream, metrics)
            enforcer = Enforcer(vault, config.policy, gateway._audit_sink(), config.limits)
            cleanup.push_async_callback(gateway._stop_listeners)
            await gateway._start_listeners(enforcer)
            cleanup.pop_all()

        gateway._log_started()
        return gateway

    def _audit_sink(self) -> AuditSink:
        # TODO: add the audit trail file and stream sinks here once they exist.
        return FanOutAuditSink([MetricsAuditSink(self.metrics)])

    async def _start_listeners(self, enforcer: Enforcer) -> None:
        config = self.config
        proxy = ReverseProxy(
            Router(config.connections),
            enforcer,
            config.limits,
            self.upstream,
            access_log=config.logging.access_log,
        )
        # auto_decompress off: the route engine decodes bodies itself, with an output cap, and
        # an unrouted body must reach the upstream byte for byte with its Content-Encoding.
        server = GatewayServer(proxy.handle, access_log=None, auto_decompress=False)
        self.reverse_address = await self._listen(web.ServerRunner(server), config.listen.reverse)

        if config.listen.admin is not None:
            api = create_api_app(
                ApiOperations(enforcer),
                config.policy.clients,
                self.store,
                self.metrics,
                config.limits,
            )
            self.admin_address = await self._listen(
                web.AppRunner(api, access_log=None), config.listen.admin
            )

        if config.listen.forward is not None:
            own = [self.reverse_address, *filter(None, [self.admin_address])]
            own.extend(filter(None, [store_endpoint(config.store.url)]))
            self.forward = await ForwardProxy.start(config, enforcer, self.upstream, own)

    async def _listen(self, runner: web.BaseRunner, address: Address) -> Address:
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
        await site.start()
        host, port = runner.addresses[0][0], runner.addresses[0][1]
        return Address(str(host), int(port))

    def _log_started(self) -> None:
        for warning in self.config.warnings:
            logger.warning("configuration: %s", warning)
        for client in self.config.policy.clients.values():
            if any(key.development for key in client.keys):
                logger.warning(
                    "client %s uses a development key (it starts with 'dev-'); set a real key "
                    "before any real traffic",
                    client.name,
                )
        for connection in self.config.connections:
            logger.info(
                "connection %s: mount %s -> %s (%d routes)",
                connection.name,
                connection.mount,
                connection.upstream,
                len(connection.routes),
            )
        logger.info("reverse proxy listening on http://%s", self.reverse_address)
        if self.admin_address is not None:
            logger.info("vault API listening on http://%s", self.admin_address)
        if self.forward is not None:
            hosts = sorted(
                host for connection in self.config.connections for host in connection.hosts
            )
            logger.info(
                "forward proxy listening on http://%s for %s",
                self.forward.address,
                ", ".join(hosts) or "no host",
            )

    async def _stop_listeners(self) -> None:
        if self.forward is not None:
            await self.forward.stop()
            self.forward = None
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()

    async def stop(self) -> None:
        logger.info("stopping; finishing requests in flight")
        await self._stop_listeners()
        await self.upstream.close()
        await self.store.close()
        logger.info("stopped")


async def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    gateway = await Gateway.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
