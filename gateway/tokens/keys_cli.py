"""The ``vaultgate keys`` commands of key rotation: rotate, reencrypt, status and retire.

``register`` adds them to the ``keys`` command of ``gateway.cli``. Each command reads the
gateway's configuration file, so it works on the same key file and token store as the gateway.
The steps and their order are described in ``gateway.tokens.rotation``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from gateway.config.loader import load_config, missing_config_message
from gateway.config.model import Config, LoggingConfig
from gateway.errors import ConfigError, VaultgateError
from gateway.logs import configure_logging
from gateway.store import open_store
from gateway.store.base import TokenStore
from gateway.tokens.keys import KeyRing, load_key_ring
from gateway.tokens.rotation import (
    DEFAULT_BATCH_SIZE,
    ReencryptProgress,
    ReencryptReport,
    add_primary_key,
    reencrypt,
    retire_key,
)
from gateway.tokens.vault import Vault

DEFAULT_STATE_FILE: Final = Path("var/reencrypt-state.json")
PROGRESS_INTERVAL: Final = 2.0
"""Minimum seconds between two progress lines of ``keys reencrypt``."""
_RELOAD_HINT: Final = "reload every gateway with SIGHUP (kill -HUP <pid>)"


def register(keys_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the rotate, reencrypt, status and retire commands to the ``keys`` subparsers."""
    rotate = keys_subparsers.add_parser(
        "rotate",
        help="add a new master key to keys.file and make it the primary (not with keys.env)",
    )
    _add_config_option(rotate)
    rotate.set_defaults(command_function=_rotate)

    reencrypt_parser = keys_subparsers.add_parser(
        "reencrypt", help="move records of older master keys to the primary key, resumably"
    )
    _add_config_option(reencrypt_parser)
    reencrypt_parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"records read and replaced per store call (default: {DEFAULT_BATCH_SIZE})",
    )
    reencrypt_parser.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="file that keeps the scan position, so that a stopped run resumes from it "
        f"(default: {DEFAULT_STATE_FILE} beside the configuration file)",
    )
    reencrypt_parser.set_defaults(command_function=_reencrypt)

    status = keys_subparsers.add_parser(
        "status", help="count the records sealed under each master key version"
    )
    _add_config_option(status)
    status.set_defaults(command_function=_status)

    retire = keys_subparsers.add_parser(
        "retire", help="remove a master key that no record uses any more from the key file"
    )
    retire.add_argument("version", type=_positive_int, help="master key version to remove")
    _add_config_option(retire)
    retire.set_defaults(command_function=_retire)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get("VAULTGATE_CONFIG", "config.yaml")),
        help="configuration file (default: $VAULTGATE_CONFIG or config.yaml)",
    )


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not at least 1")
    return number


def _rotate(arguments: argparse.Namespace) -> int:
    config = _load_config(arguments.config)
    if config is None:
        return 1
    key_file_path = _editable_key_file(config, "rotate")
    if key_file_path is None:
        return 1
    try:
        rotated = add_primary_key(key_file_path)
    except VaultgateError as error:
        return _fail(error)

    versions = ", ".join(str(master.version) for master in rotated.master_keys)
    print(f"added master key version {rotated.primary} to {key_file_path} as the primary")
    print(f"master key versions in the file: {versions}")
    print(
        f"next: {_RELOAD_HINT}, then move the existing records to the new key with "
        f"`vaultgate keys reencrypt -c {arguments.config}`"
    )
    return 0


def _reencrypt(arguments: argparse.Namespace) -> int:
    config = _load_config(arguments.config)
    if config is None:
        return 1
    state_file = arguments.state or config.source.parent / DEFAULT_STATE_FILE

    async def run(store: TokenStore, key_ring: KeyRing) -> int:
        await Vault(store, key_ring).check_key_ring()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(
            f"re-encrypting records of other master key versions under primary version "
            f"{key_ring.primary_version}; state file {state_file}"
        )
        report = await reencrypt(
            store,
            key_ring,
            batch_size=arguments.batch_size,
            state_file=state_file,
            stop_event=stop,
            on_batch=_ProgressPrinter(),
        )
        return _print_reencrypt_report(report, state_file, arguments.config)

    return _with_store(config, run)


class _ProgressPrinter:
    """Print the running totals at most every ``PROGRESS_INTERVAL`` seconds."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._last_print = self._started

    def __call__(self, progress: ReencryptProgress) -> None:
        now = time.monotonic()
        if now - self._last_print < PROGRESS_INTERVAL:
            return
        self._last_print = now
        rate = progress.scanned / max(now - self._started, 1e-9)
        print(
            f"scanned {progress.scanned} records ({rate:.0f}/s): {progress.reencrypted} "
            f"re-encrypted, {progress.conflicts} changed meanwhile, {progress.failed} failed",
            flush=True,
        )


def _print_reencrypt_report(report: ReencryptReport, state_file: Path, config_path: Path) -> int:
    progress = report.progress
    rate = progress.reencrypted / report.elapsed if report.elapsed > 0 else 0.0
    print(f"records by master key version before: {_counts_text(report.before)}")
    print(f"records by master key version after:  {_counts_text(report.after)}")
    print(
        f"scanned {progress.scanned} records in {report.elapsed:.1f} s: {progress.reencrypted} "
        f"re-encrypted ({rate:.0f}/s), {progress.conflicts} changed meanwhile, "
        f"{progress.failed} failed to open"
    )
    if not report.completed:
        print(
            f"stopped before the end; run `vaultgate keys reencrypt -c {config_path}` again to "
            f"resume from {state_file}",
            file=sys.stderr,
        )
        return 1
    if report.remaining:
        print(
            f"{report.remaining} records still use other master key versions than "
            f"{report.primary_version}. They are records written meanwhile by gateways that "
            "have not reloaded the key file, or records that failed to open (logged above). "
            "Reload every gateway with SIGHUP and run this command again",
            file=sys.stderr,
        )
        return 1
    print(f"every record is sealed under master key version {report.primary_version}")
    return 0


def _status(arguments: argparse.Namespace) -> int:
    config = _load_config(arguments.config)
    if config is None:
        return 1

    async def run(store: TokenStore, key_ring: KeyRing) -> int:
        counts = await store.count_by_key_version()
        versions = ", ".join(str(version) for version in key_ring.versions)
        print(f"master key versions in the key ring: {versions}")
        print(f"primary master key version: {key_ring.primary_version}")
        print("records by master key version:")
        for version in sorted(set(counts) | set(key_ring.versions)):
            notes = []
            if version == key_ring.primary_version:
                notes.append("primary")
            if version not in key_ring.versions:
                notes.append("NOT IN THE KEY RING, so these records cannot be opened")
            suffix = f" ({', '.join(notes)})" if notes else ""
            print(f"  version {version}: {counts.get(version, 0)}{suffix}")
        return 0

    return _with_store(config, run)


def _retire(arguments: argparse.Namespace) -> int:
    config = _load_config(arguments.config)
    if config is None:
        return 1
    key_file_path = _editable_key_file(config, "retire")
    if key_file_path is None:
        return 1

    async def run(store: TokenStore, key_ring: KeyRing) -> int:
        # A store of another key ring has no records of this key file, which would let any
        # version pass the count.
        await Vault(store, key_ring).check_key_ring()
        retired = await retire_key(key_file_path, arguments.version, store)
        versions = ", ".join(str(master.version) for master in retired.master_keys)
        print(f"removed master key version {arguments.version} from {key_file_path}")
        print(f"master key versions in the file: {versions}")
        print(f"next: {_RELOAD_HINT}, so that they drop the retired key")
        return 0

    return _with_store(config, run)


def _load_config(path: Path) -> Config | None:
    """Return the configuration, or print why it cannot be loaded and return None."""
    message = missing_config_message(path)
    if message is not None:
        print(f"vaultgate: {message}", file=sys.stderr)
        return None
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"vaultgate: {len(error.problems)} configuration problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    # Progress and results go to stdout, so only warnings and errors are logged.
    configure_logging(LoggingConfig(level="WARNING", format=config.logging.format))
    return config


def _editable_key_file(config: Config, command: str) -> Path | None:
    """Return the key file that ``keys <command>`` may change, or print why there is none."""
    # The gateway reads keys.env in preference to keys.file whenever the variable is set.
    if config.keys.env and config.keys.env in os.environ:
        print(
            f"vaultgate: `keys {command}` works only with a key file (keys.file), but the keys "
            f"come from environment variable {config.keys.env} (keys.env), which it cannot "
            "change. Write the key file to disk, point keys.file at it, unset the variable and "
            "run the command again",
            file=sys.stderr,
        )
        return None
    if config.keys.file is None:
        print(f"vaultgate: `keys {command}` needs keys.file to be set", file=sys.stderr)
        return None
    if not config.keys.file.is_file():
        print(
            f"vaultgate: key file {config.keys.file} not found; create one with "
            "`vaultgate keys generate` first",
            file=sys.stderr,
        )
        return None
    return config.keys.file


def _with_store(config: Config, run: Callable[[TokenStore, KeyRing], Awaitable[int]]) -> int:
    """Load the key ring, open the store, await ``run`` and close the store; map errors to 1."""

    async def main() -> int:
        key_ring = load_key_ring(config.keys, base_dir=config.source.parent)
        store = open_store(
            config.store.url, timeout=config.limits.store_timeout, base_dir=config.source.parent
        )
        try:
            return await run(store, key_ring)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except VaultgateError as error:
        return _fail(error)


def _fail(error: VaultgateError) -> int:
    print(f"vaultgate: {error}", file=sys.stderr)
    return 1


def _counts_text(counts: dict[int, int]) -> str:
    if not counts:
        return "no records"
    return ", ".join(f"version {version}: {counts[version]}" for version in sorted(counts))
