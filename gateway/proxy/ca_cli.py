"""``vaultgate ca export`` and ``vaultgate ca rotate``: the forward proxy's CA from the shell."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError
from gateway.proxy.ca import ensure_ca, rotate_ca


def register(subparsers: Any) -> None:
    """Add the ``ca`` command to the ``vaultgate`` parser's subcommands."""
    ca = subparsers.add_parser("ca", help="manage the forward proxy's certificate authority")
    commands = ca.add_subparsers(title="ca commands")
    export = commands.add_parser(
        "export",
        help="print the CA certificate (PEM) for clients to trust; creates the CA if needed",
    )
    _add_config_argument(export)
    export.set_defaults(command_function=_export)
    rotate = commands.add_parser(
        "rotate", help="replace the CA with a new one; restart the gateway afterwards"
    )
    _add_config_argument(rotate)
    rotate.set_defaults(command_function=_rotate)


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get("VAULTGATE_CONFIG", "config.yaml")),
        help="configuration file (default: $VAULTGATE_CONFIG or config.yaml)",
    )


def _load(path: Path) -> Config | None:
    if not path.is_file():
        print(
            f"vaultgate: configuration file {path} not found in {Path.cwd()}; pass one with -c",
            file=sys.stderr,
        )
        return None
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"vaultgate: {len(error.problems)} configuration problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _export(arguments: argparse.Namespace) -> int:
    config = _load(arguments.config)
    if config is None:
        return 1
    files = ensure_ca(config.forward.ca_dir)
    sys.stdout.write(files.cert_file.read_text(encoding="ascii"))
    return 0


def _rotate(arguments: argparse.Namespace) -> int:
    config = _load(arguments.config)
    if config is None:
        return 1
    files = rotate_ca(config.forward.ca_dir)
    print(
        f"new forward proxy CA in {files.directory}, SHA-256 {files.fingerprint()}; restart the "
        "gateway, then give clients the new certificate (vaultgate ca export)",
        file=sys.stderr,
    )
    return 0
