"""The ``vaultgate`` command: run, check, keys (generate, rotate, reencrypt, status, retire),
audit verify, and ca export and rotate."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

from gateway import __version__
from gateway.audit import cli as audit_cli
from gateway.config.loader import load_config, missing_config_message
from gateway.config.model import LoggingConfig
from gateway.errors import (
    AuditUnavailableError,
    ConfigError,
    KeyMaterialError,
    StoreUnavailableError,
)
from gateway.logs import configure_logging
from gateway.pipelines import cli as pipeline_cli
from gateway.proxy import ca_cli
from gateway.server import serve
from gateway.supervisor.supervisor import run_workers
from gateway.tokens.keys import generate_key_file_text, load_key_ring
from gateway.tokens.keys_cli import register as register_key_rotation_commands

logger = logging.getLogger("gateway.server")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command_function"):
        parser.print_help()
        return 2
    result: int = arguments.command_function(arguments)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultgate", description="Self-hosted data-privacy vault gateway."
    )
    parser.add_argument("--version", action="version", version=f"vaultgate {__version__}")
    commands = parser.add_subparsers(title="commands")

    default_config = os.environ.get("VAULTGATE_CONFIG", "config.yaml")
    run = commands.add_parser("run", help="start the gateway")
    run.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(default_config),
        help="configuration file (default: $VAULTGATE_CONFIG or config.yaml)",
    )
    run.add_argument(
        "--workers",
        type=_worker_count,
        help="gateway processes that share the listeners (default: listen.workers, which "
        "defaults to 1)",
    )
    run.set_defaults(command_function=_run)

    check = commands.add_parser("check", help="validate the configuration and route files")
    check.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(default_config),
        help="configuration file (default: $VAULTGATE_CONFIG or config.yaml)",
    )
    check.set_defaults(command_function=_check)

    keys = commands.add_parser("keys", help="manage master keys")
    key_commands = keys.add_subparsers(title="keys commands")
    generate = key_commands.add_parser("generate", help="print a new key file to stdout")
    generate.add_argument(
        "--development",
        action="store_true",
        help="mark the key as a development key, refused outside development",
    )
    generate.set_defaults(command_function=_keys_generate)
    register_key_rotation_commands(key_commands)
    audit_cli.register(commands)
    ca_cli.register(commands)
    pipeline_cli.register(commands)
    return parser


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count


def _print_config_error(error: ConfigError) -> None:
    print(f"vaultgate: {len(error.problems)} configuration problem(s):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def _config_missing(path: Path) -> bool:
    message = missing_config_message(path)
    if message is None:
        return False
    print(f"vaultgate: {message}", file=sys.stderr)
    return True


def _check(arguments: argparse.Namespace) -> int:
    if _config_missing(arguments.config):
        return 1
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        _print_config_error(error)
        return 1
    if not config.keys.development:
        # Outside development the gateway refuses to start without a valid key. In
        # development it generates a missing one, so there is nothing to check yet.
        try:
            load_key_ring(config.keys, base_dir=config.source.parent, generate_missing=False)
        except KeyMaterialError as error:
            print(f"vaultgate: {error}", file=sys.stderr)
            return 1
    routes = sum(len(connection.routes) for connection in config.connections)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{config.source}: OK, {len(config.connections)} connection(s), {routes} route(s), "
        f"{len(config.policy.clients)} client(s), {len(config.policy.classes)} class(es), "
        f"{len(config.policy.roles)} role(s)"
    )
    return 0


def _run(arguments: argparse.Namespace) -> int:
    if _config_missing(arguments.config):
        return 1
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        _print_config_error(error)
        print("vaultgate: not started; fix the problems above", file=sys.stderr)
        return 1
    if arguments.workers is not None:
        config = dataclasses.replace(
            config, listen=dataclasses.replace(config.listen, workers=arguments.workers)
        )
    if config.listen.workers > 1:
        return run_workers(config, config.listen.workers)

    configure_logging(config.logging)
    try:
        asyncio.run(serve(config))
    except (KeyMaterialError, StoreUnavailableError, AuditUnavailableError, ConfigError) as error:
        logger.error("not started: %s", error)
        return 1
    except OSError as error:
        logger.error(
            "not started: %s; stop the other process or change that address (config.example.yaml "
            "reads listen.reverse, listen.admin and listen.forward from VAULTGATE_LISTEN, "
            "VAULTGATE_ADMIN_LISTEN and VAULTGATE_FORWARD_LISTEN)",
            error.strerror or error,
        )
        return 1
    return 0


def _keys_generate(arguments: argparse.Namespace) -> int:
    configure_logging(LoggingConfig(level="WARNING"))
    sys.stdout.write(generate_key_file_text(development=arguments.development))
    return 0
