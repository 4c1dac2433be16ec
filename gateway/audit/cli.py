"""The ``vaultgate audit`` commands: ``audit verify FILE``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.audit.verify import verify_audit_file
from gateway.config.loader import load_config
from gateway.config.model import LoggingConfig
from gateway.errors import ConfigError, KeyMaterialError
from gateway.logs import configure_logging
from gateway.tokens.keys import load_key_ring


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the ``audit`` command and its subcommands to the ``vaultgate`` parser."""
    audit = commands.add_parser("audit", help="inspect audit files")
    audit_commands = audit.add_subparsers(title="audit commands")

    verify = audit_commands.add_parser(
        "verify",
        help="check that an audit file is one unbroken chain of records",
        description=(
            "Check every record of an audit file and the chain that links them, under the "
            "audit key derived from the configuration's key file. Prints the number of "
            "records and the last sequence number and mac, or the first bad line. Records "
            "removed from the end cannot be detected from the file alone: compare the last "
            "sequence and mac with those the gateway logged when it closed the file."
        ),
    )
    verify.add_argument("file", type=Path, help="the audit file (JSON Lines)")
    verify.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get("VAULTGATE_CONFIG", "config.yaml")),
        help="configuration file whose keys settings give the key (default: "
        "$VAULTGATE_CONFIG or config.yaml)",
    )
    verify.set_defaults(command_function=_verify)


def _verify(arguments: argparse.Namespace) -> int:
    configure_logging(LoggingConfig(level="WARNING"))
    if not arguments.config.is_file():
        return _error(f"configuration file {arguments.config} not found; pass one with -c")
    try:
        config = load_config(arguments.config)
        # A key generated now could not verify anything, so a missing key is an error here.
        key_ring = load_key_ring(config.keys, base_dir=config.source.parent, generate_missing=False)
    except (ConfigError, KeyMaterialError) as error:
        return _error(str(error))

    try:
        result = verify_audit_file(arguments.file, key_ring.audit_key)
    except OSError as error:
        return _error(f"cannot read audit file {arguments.file}: {error.strerror or error}")

    if result.ok:
        print(
            f"{arguments.file}: OK, {result.records} record(s), last sequence "
            f"{result.last_seq}, last mac {result.last_mac}"
        )
        return 0
    print(
        f"{arguments.file}:{result.bad_line}: {result.problem}: {result.detail}",
        file=sys.stderr,
    )
    print(
        f"vaultgate: the {result.records} record(s) before line {result.bad_line} verify, "
        f"up to sequence {result.last_seq}",
        file=sys.stderr,
    )
    return 1


def _error(message: str) -> int:
    print(f"vaultgate: {message}", file=sys.stderr)
    return 1
