"""Start and stop the forward proxy listener beside the reverse one, in the same event loop."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from gateway.config.model import Address, Config
from gateway.metrics import Metrics
from gateway.policy.enforcer import Enforcer
from gateway.proxy.ca import ensure_ca, load_cert_store
from gateway.proxy.forward.access import Endpoint, HostMap, TunnelGuard
from gateway.proxy.forward.addon import ForwardAddon
from gateway.proxy.forward.mitm import EmbeddedProxy
from gateway.proxy.forward.relay import ForwardRelay
from gateway.proxy.upstream import UpstreamClient

logger = logging.getLogger("gateway.forward")

_running: ForwardProxy | None = None
"""mitmproxy keeps its master and options in module globals, so one process runs one proxy."""


class ForwardProxy:
    def __init__(self, proxy: EmbeddedProxy) -> None:
        self._proxy = proxy

    @classmethod
    async def start(
        cls,
        config: Config,
        enforcer: Enforcer,
        upstream: UpstreamClient,
        own_endpoints: Iterable[Address],
        metrics: Metrics | None = None,
    ) -> ForwardProxy:
        """Start listening on ``config.listen.forward``; ``own_endpoints`` are the gateway's
        other listeners and its store, which tunnels never reach.

        Raises ``RuntimeError`` when this process runs a forward proxy already, and ``OSError``
        when the address cannot be listened on.
        """
        global _running
        assert config.listen.forward is not None, "listen.forward is off"
        if _running is not None:
            raise RuntimeError("this process runs a forward proxy already")

        ca_files = ensure_ca(config.forward.ca_dir)
        relay = ForwardRelay(
            enforcer,
            config.limits,
            upstream,
            proxy_auth=config.forward.proxy_auth,
            access_log=config.logging.access_log,
            metrics=metrics,
        )
        endpoints = [Endpoint(address.host, address.port) for address in own_endpoints]
        endpoints.append(Endpoint(config.listen.forward.host, config.listen.forward.port))
        addon = ForwardAddon(
            relay,
            enforcer,
            HostMap(config.connections),
            TunnelGuard(endpoints),
            proxy_auth=config.forward.proxy_auth,
            unlisted_hosts=config.forward.unlisted_hosts,
            client_body_timeout=config.limits.client_body_timeout,
        )
        proxy = await EmbeddedProxy.start(
            config.listen.forward, [addon], load_cert_store(ca_files), config.limits
        )
        addon.close_client = proxy.close_client
        _running = cls(proxy)
        if not config.forward.proxy_auth:
            logger.warning(
                "forward.proxy_auth is off: anyone who can reach %s may use the listed hosts",
                proxy.address,
            )
        return _running

    @property
    def address(self) -> Address:
        return self._proxy.address

    async def stop(self) -> None:
        global _running
        try:
            await self._proxy.stop()
        finally:
            _running = None


def store_endpoint(store_url: str) -> Address | None:
    """Return the host and port of a network store (Redis), or None for an embedded one."""
    parts = urlsplit(store_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return Address(parts.hostname, parts.port or 6379)
