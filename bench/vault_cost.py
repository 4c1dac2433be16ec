"""Measure the CPU time that tokenizing one checkout's four fields costs, without HTTP.

Concurrent tasks call ``Vault.tokenize_many`` with the four items of the shipped checkout
route: a card number (``pan``), a CVC (``uuid``, 15 minute TTL), and a name and an email
(``uuid``, deterministic, a new email every call). The store is a fresh SQLite file or a private
redis-server with ``appendfsync everysec``. The script prints the calls per second and the CPU
time of this process per call. That time covers the vault, the key derivation and sealing, and
the store client. It leaves out the policy checks, the audit trail and all HTTP work.

Run, from the repository root::

    .venv/bin/python -m bench.vault_cost --store redis
    .venv/bin/python -m bench.vault_cost --store sqlite --gateway-ref HEAD

Like ``bench.run``, it imports the gateway package from a copy taken at the start: of the
working tree, or of the commit that ``--gateway-ref`` names.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import snapshot_gateway_source, start_redis

CVC_TTL_SECONDS = 15 * 60


async def measure(store_url: str, directory: Path, concurrency: int, duration_s: float) -> str:
    """Run the tasks for ``duration_s`` seconds and return a line with the results."""
    # Imported here, after main() has put the copy of the gateway first on the path.
    from gateway.config.model import KeysConfig
    from gateway.store import open_store
    from gateway.tokens.keys import load_key_ring
    from gateway.tokens.vault import TokenizeItem, Vault

    def checkout_items(task: int, call: int) -> list[TokenizeItem]:
        """Return the four items of one checkout, with an email that no other call uses."""
        return [
            TokenizeItem("4242421234564242", format="pan", class_name="card.pan"),
            TokenizeItem("123", format="uuid", ttl=CVC_TTL_SECONDS, class_name="card.cvc"),
            TokenizeItem("Anna Schmidt", format="uuid", deterministic=True, class_name="pii.name"),
            TokenizeItem(
                f"customer.{task}.{call}@example.com",
                format="uuid",
                deterministic=True,
                class_name="pii.email",
            ),
        ]

    key_ring = load_key_ring(
        KeysConfig(file=directory / "keys.yaml", development=True), base_dir=directory
    )
    store = open_store(store_url, timeout=5.0, base_dir=directory)
    vault = Vault(store, key_ring)
    calls = 0
    deadline = time.monotonic() + duration_s

    async def run_task(task: int) -> None:
        nonlocal calls
        call = 0
        while time.monotonic() < deadline:
            call += 1
            await vault.tokenize_many(checkout_items(task, call))
            calls += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(run_task(task) for task in range(concurrency)))
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return (
        f"{calls / elapsed:.0f} calls/s with {concurrency} concurrent tasks, "
        f"{cpu / elapsed:.2f} cores, {1e6 * cpu / calls:.0f} us of CPU per call"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "redis"), required=True, help="token store")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent tasks (default 32)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    parser.add_argument(
        "--gateway-ref",
        metavar="REF",
        help="measure the gateway package of this git commit (default: the working tree)",
    )
    arguments = parser.parse_args()
    # The development key warnings are expected here.
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="vaultgate-vault-cost-") as name:
        directory = Path(name)
        source = snapshot_gateway_source(directory / "source", arguments.gateway_ref)
        # The copy goes first on the path, before the working tree that "python -m" puts there.
        sys.path.insert(0, str(directory / "source"))
        redis = None
        if arguments.store == "redis":
            redis = start_redis(directory, "redis", "everysec")
            store_url = f"redis://127.0.0.1:{redis.port}/0"
        else:
            store_url = f"sqlite:///{directory / 'tokens.db'}"
        try:
            summary = asyncio.run(
                measure(store_url, directory, arguments.concurrency, arguments.duration)
            )
        finally:
            if redis is not None:
                redis.stop()
    print(f"{arguments.store}, {source}: {summary}")


if __name__ == "__main__":
    main()
