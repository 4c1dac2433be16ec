"""Reload route files and function modules into a running gateway, without a restart.

On SIGHUP the gateway reads its configuration again. When it is valid and its clients, classes
and roles are unchanged, new requests get the new routes and a new function worker pool at
once. Requests in flight finish on the old ones, and the old pool stops after them. A change
to the policy, the listeners, the store or the keys needs a restart, and a configuration with
any problem is rejected whole while the running one stays.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.config.loader import load_config
from gateway.engine.routing import Router
from gateway.errors import ConfigError
from gateway.functions.pool import start_pool

if TYPE_CHECKING:
    from gateway.server import Gateway

logger = logging.getLogger("gateway.server")


async def reload_routes(gateway: Gateway) -> bool:
    """Apply the route files and function modules on disk; return whether they were applied."""
    proxy = gateway.proxy
    if proxy is None:
        return False
    try:
        config = load_config(gateway.config.source)
    except ConfigError as error:
        logger.error("reload rejected, keeping the running routes: %s", error)
        return False
    if config.policy != gateway.config.policy:
        logger.error(
            "reload rejected: clients, classes or roles changed, which needs a restart; "
            "the running routes stay"
        )
        return False
    try:
        pool = await start_pool(config)
    except ConfigError as error:
        logger.error("reload rejected, keeping the running routes: %s", error)
        return False

    old_pool = proxy.functions
    proxy.replace_routes(Router(config.connections), pool)
    gateway.config = config
    routes = sum(len(connection.routes) for connection in config.connections)
    logger.info(
        "reloaded %d connections with %d routes and %d function modules",
        len(config.connections),
        routes,
        len(config.functions.modules),
    )
    if old_pool is not None:
        await old_pool.stop(grace=old_pool.config.timeout)
    return True
