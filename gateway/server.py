"""Start and stop a gateway: keys, store, vault, policy, audit, and its listeners.

A running gateway reloads its key file on SIGHUP, which is how it picks up a rotated key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.api.app import create_api_app
from gateway.audit.events import AuditSink, FanOutAuditSink
from gateway.audit.log import AuditLog
from gateway.audit.writer import open_audit_log
from gateway.config.model import Address, Config
from gateway.engine.routing import Router
from gateway.errors import KeyMaterialError
from gateway.functions.pool import FunctionPools, start_pool
from gateway.functions.reload import reload_routes
from gateway.metrics import Metrics, MetricsAuditSink
from gateway.policy.enforcer import ApiOperations, Enforcer
from gateway.proxy.forward import ForwardProxy
from gateway.proxy.forward.listener import store_endpoint
from gateway.proxy.listener import GatewayServer
from gateway.proxy.reverse import ReverseProxy
from gateway.proxy.upstream import UpstreamClient
from gateway.store import open_store
from gateway.store.base import TokenStore
from gateway.supervisor.sockets import ListenerSockets, bound_address
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
    audit_log: AuditLog | None = None
    runners: list[web.BaseRunner] = field(default_factory=list)
    reverse_address: Address = field(default_factory=lambda: Address("127.0.0.1", 0))
    admin_address: Address | None = None
    proxy: ReverseProxy | None = None
    forward: ForwardProxy | None = None
    sockets: ListenerSockets | None = None
    """Listeners bound by a supervisor; None when the gateway binds its own."""
    serve_forward: bool = True
    """Whether this gateway runs the forward listener, if ``config.listen.forward`` is set."""

    @classmethod
    async def start(
        cls,
        config: Config,
        *,
        sockets: ListenerSockets | None = None,
        serve_forward: bool = True,
    ) -> Gateway:
        """Start everything, or raise after closing what was already started.

        With ``sockets`` the reverse and admin listeners accept on those bound sockets, which
        gateway workers share, instead of binding ``config.listen``. ``serve_forward`` off
        leaves the forward listener to another worker.
        """
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
            audit_log = await open_audit_log(
                config.audit, key_ring.audit_key, redis_timeout=config.limits.store_timeout
            )
            if audit_log is not None:
                cleanup.push_async_callback(audit_log.close)
            else:
                logger.warning("the audit trail is off (audit.enabled: false)")

            upstream = UpstreamClient(config.limits, config.connections)
            await upstream.start()
            cleanup.push_async_callback(upstream.close)

            functions = await start_pool(config)
            if functions is not None:
                cleanup.push_async_callback(functions.stop)

            metrics = Metrics()
            gateway = cls(config, store, vault, upstream, metrics, audit_log)
            gateway.sockets = sockets
            gateway.serve_forward = serve_forward
            enforcer = Enforcer(vault, config.policy, gateway._audit_sink(), config.limits)
            cleanup.push_async_callback(gateway._stop_listeners)
            await gateway._start_listeners(enforcer, functions)
            cleanup.pop_all()

        gateway._log_started()
        return gateway

    def _audit_sink(self) -> AuditSink:
        # The trail comes first: metrics count only what was recorded.
        sinks: list[AuditSink] = [MetricsAuditSink(self.metrics)]
        if self.audit_log is not None:
            sinks.insert(0, self.audit_log)
        return FanOutAuditSink(sinks)

    async def _start_listeners(self, enforcer: Enforcer, functions: FunctionPools | None) -> None:
        config = self.config
        proxy = ReverseProxy(
            Router(config.connections),
            enforcer,
            config.limits,
            self.upstream,
            access_log=config.logging.access_log,
            functions=functions,
            metrics=self.metrics,
        )
        self.proxy = proxy
        # auto_decompress off: the route engine decodes bodies itself, with an output cap, and
        # an unrouted body must reach the upstream byte for byte with its Content-Encoding.
        server = GatewayServer(proxy.handle, access_log=None, auto_decompress=False)
        self.reverse_address = await self._listen(
            web.ServerRunner(server),
            config.listen.reverse,
            self.sockets.reverse if self.sockets is not None else (),
            "listen.reverse",
        )

        if config.listen.admin is not None:
            api = create_api_app(
                ApiOperations(enforcer),
                config.policy.clients,
                self.store,
                self.metrics,
                config.limits,
            )
            self.admin_address = await self._listen(
                web.AppRunner(api, access_log=None),
                config.listen.admin,
                self.sockets.admin if self.sockets is not None else (),
                "listen.admin",
            )

        if config.listen.forward is not None and self.serve_forward:
            own = [self.reverse_address, *filter(None, [self.admin_address])]
            own.extend(filter(None, [store_endpoint(config.store.url)]))
            self.forward = await ForwardProxy.start(
                config, enforcer, self.upstream, own, metrics=self.metrics
            )

    async def _listen(
        self,
        runner: web.BaseRunner,
        address: Address,
        sockets: tuple[socket.socket, ...],
        setting: str,
    ) -> Address:
        """Accept on ``sockets`` when given, or bind ``address``; return the bound address.

        Raises ``OSError`` naming the address and the ``setting`` that sets it when the address
        cannot be bound.
        """
        await runner.setup()
        self.runners.append(runner)
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
            return bound_address(sockets)
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"cannot listen on {address} ({setting}): {reason}") from exc
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

    def reload_keys(self) -> bool:
        """Reload the key ring from the configured key source; see ``reload_key_ring``."""
        return reload_key_ring(self.config, self.vault)

    async def stop(self) -> None:
        logger.info("stopping; finishing requests in flight")
        await self._stop_listeners()
        if self.proxy is not None and self.proxy.functions is not None:
            await self.proxy.functions.stop()
        await self.upstream.close()
        if self.audit_log is not None:
            await self.audit_log.close()
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


async def serve(
    config: Config,
    *,
    sockets: ListenerSockets | None = None,
    serve_forward: bool = True,
    on_ready: Callable[[Gateway], None] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully; reload keys and routes on SIGHUP.

    ``sockets`` and ``serve_forward`` are passed to ``Gateway.start``. ``on_ready`` is called
    once the gateway accepts connections and its signal handlers are in place.
    """
    gateway = await Gateway.start(config, sockets=sockets, serve_forward=serve_forward)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads = _reload_on_sighup(loop, gateway)
    try:
        if on_ready is not None:
            on_ready(gateway)
        await stop.wait()
    finally:
        for task in list(reloads):
            task.cancel()
        await gateway.stop()


def _reload_on_sighup(loop: asyncio.AbstractEventLoop, gateway: Gateway) -> set[asyncio.Task[bool]]:
    """Reload the key ring, then route files and function modules, on each SIGHUP.

    Returns the set of route reloads still running. One handler does both, because the event
    loop keeps only the last handler registered for a signal.
    """
    reloads: set[asyncio.Task[bool]] = set()

    def start_reload() -> None:
        gateway.reload_keys()
        logger.info("SIGHUP received: reloading route files and function modules")
        task = loop.create_task(reload_routes(gateway))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    return reloads
