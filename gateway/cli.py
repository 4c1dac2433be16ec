"""The ``vaultgate`` command: run, check, and keys generate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from gateway import __version__
from gateway.config.loader import load_config
from gateway.config.model import LoggingConfig
from gateway.errors import ConfigError, KeyMaterialError, StoreUnavailableError
from gateway.logs import configure_logging
from gateway.pipelines import cli as pipeline_cli
from gateway.server import serve
from gateway.tokens.keys import generate_key_file_text

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
    pipeline_cli.register(commands)
    return parser


def _print_config_error(error: ConfigError) -> None:
    print(f"vaultgate: {len(error.problems)} configuration problem(s):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def _check(arguments: argparse.Namespace) -> int:
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        _print_config_error(error)
        return 1
    routes = sum(len(connection.routes) for connection in config.connections)
    print(f"{config.source}: OK, {len(config.connections)} connection(s), {routes} route(s)")
    return 0


def _run(arguments: argparse.Namespace) -> int:
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        _print_config_error(error)
        print("vaultgate: not started; fix the problems above", file=sys.stderr)
        return 1
    configure_logging(config.logging)
    try:
        asyncio.run(serve(config))
    except (KeyMaterialError, StoreUnavailableError, ConfigError) as error:
        logger.error("not started: %s", error)
        return 1
    except OSError as error:
        logger.error("not started: %s", error)
        return 1
    return 0


def _keys_generate(arguments: argparse.Namespace) -> int:
    configure_logging(LoggingConfig(level="WARNING"))
    sys.stdout.write(generate_key_file_text(development=arguments.development))
    return 0
