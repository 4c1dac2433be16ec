"""Start a real gateway from YAML files in a temporary directory, listening on loopback."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from gateway.config.loader import load_config
from gateway.server import Gateway

BACKEND_KEY = "backend-key-0123456789"
"""The API key of the client ``backend``, which the default policy grants everything."""


def default_policy(connections: list[str]) -> str:
    """Return YAML for clients, classes and roles that let ``backend`` do anything.

    Every class may be revealed to every connection, so tests of the proxy mechanics need no
    policy of their own. Tests of the policy pass their own.
    """
    reveal_to = "[" + ", ".join(connections) + "]"
    return textwrap.dedent(
        f"""\
        clients:
          backend:
            keys: [{{secret: {BACKEND_KEY}}}]
            roles: [everything]
        classes:
          card.pan: {{format: pan, mask: first6_last4, reveal_to: {reveal_to}}}
          card.cvc: {{format: uuid, ttl: 15m, reveal_to: {reveal_to}}}
          pii.email: {{format: uuid, deterministic: true, mask: email, reveal_to: {reveal_to}}}
          generic.uuid: {{format: uuid, reveal_to: {reveal_to}}}
          generic.numeric: {{format: numeric, reveal_to: {reveal_to}}}
          generic.alphanumeric: {{format: alphanumeric, reveal_to: {reveal_to}}}
        roles:
          everything:
            grants:
              - {{actions: [tokenize, detokenize, delete], classes: ["*"], view: plain}}
        """
    )


async def start_gateway(
    directory: Path,
    routes: dict[str, str],
    *,
    store_url: str | None = None,
    limits: str = "",
    environ: dict[str, str] | None = None,
    policy: str | None = None,
    extra: str = "",
) -> Gateway:
    """Write a configuration and route files into ``directory`` and start a gateway on port 0.

    ``routes`` maps file names to route file texts. ``limits`` is YAML for the limits section.
    ``policy`` is YAML for clients, classes and roles; by default ``default_policy``.
    ``extra`` is more top-level YAML, such as a ``functions`` section.
    """
    routes_dir = directory / "routes"
    routes_dir.mkdir(parents=True, exist_ok=True)
    for name, text in routes.items():
        (routes_dir / name).write_text(textwrap.dedent(text))
    store = store_url or f"sqlite:///{directory / 'tokens.db'}"
    limits_yaml = textwrap.indent(textwrap.dedent(limits), "  ") if limits.strip() else "  {}"
    connections = re.findall(r"^connection:\s*(\S+)", "\n".join(routes.values()), re.MULTILINE)
    policy_yaml = textwrap.dedent(policy) if policy is not None else default_policy(connections)
    (directory / "gateway.yaml").write_text(
        f"listen: {{reverse: '127.0.0.1:0', admin: '127.0.0.1:0'}}\n"
        f"store: {{url: '{store}'}}\n"
        f"keys: {{file: keys.yaml, development: true}}\n"
        f"routes: [routes/*.yaml]\n"
        f"limits:\n{limits_yaml}\n"
        f"{policy_yaml}"
        f"{textwrap.dedent(extra)}"
    )
    config = load_config(directory / "gateway.yaml", environ=environ or {})
    return await Gateway.start(config)


def gateway_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.reverse_address.port}"


def api_url(gateway: Gateway) -> str:
    assert gateway.admin_address is not None, "the vault API is off"
    return f"http://127.0.0.1:{gateway.admin_address.port}"
