"""Start a real gateway from YAML files in a temporary directory, listening on loopback."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.config.loader import load_config
from gateway.server import Gateway


async def start_gateway(
    directory: Path,
    routes: dict[str, str],
    *,
    store_url: str | None = None,
    limits: str = "",
    environ: dict[str, str] | None = None,
) -> Gateway:
    """Write a configuration and route files into ``directory`` and start a gateway on port 0.

    ``routes`` maps file names to route file texts. ``limits`` is YAML for the limits section.
    """
    routes_dir = directory / "routes"
    routes_dir.mkdir(parents=True, exist_ok=True)
    for name, text in routes.items():
        (routes_dir / name).write_text(textwrap.dedent(text))
    store = store_url or f"sqlite:///{directory / 'tokens.db'}"
    limits_yaml = textwrap.indent(textwrap.dedent(limits), "  ") if limits.strip() else "  {}"
    (directory / "gateway.yaml").write_text(
        f"listen: {{reverse: '127.0.0.1:0'}}\n"
        f"store: {{url: '{store}'}}\n"
        f"keys: {{file: keys.yaml, development: true}}\n"
        f"routes: [routes/*.yaml]\n"
        f"limits:\n{limits_yaml}\n"
    )
    config = load_config(directory / "gateway.yaml", environ=environ or {})
    return await Gateway.start(config)


def gateway_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.reverse_address.port}"
