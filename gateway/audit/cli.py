"""The ``vaultgate audit`` commands: ``audit verify [FILE ...]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.audit.verify import verify_audit_file
from gateway.config.audit import existing_audit_files
from gateway.config.loader import load_config, missing_config_message
from gateway.config.model import LoggingConfig
from gateway.errors import ConfigError, KeyMaterialError
from gateway.logs import configure_logging
from gateway.secret import Secret
from gateway.tokens.keys import load_key_ring


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the ``audit`` command and its subcommands to the ``vaultgate`` parser."""
    audit = commands.add_parser("audit", help="inspect audit files")
    audit_commands = audit.add_subparsers(title="audit commands")

    verify = audit_commands.add_parser(
        "verify",
        help="check that an audit file is one unbroken chain of records",
        description=(
            "Check every record of each audit file and the chain that links them, under the "
            "audit key derived from the configuration's key file. Prints the number of "
            "records and the last sequence number and mac of each file, or its first bad "
            "line. Without FILE it checks the configuration's audit.file and the files of its "
            "gateway workers and pipeline workers beside it (audit.worker-N.jsonl, "
            "audit.pipeline-PID.jsonl). Records removed from the end cannot be detected from "
            "a file alone: compare the last sequence and mac with those the gateway logged "
            "when it closed the file."
        ),
    )
    verify.add_argument(
        "files",
        metavar="FILE",
        type=Path,
        nargs="*",
        help="an audit file (JSON Lines); default: every audit file of the configuration",
    )
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
    message = missing_config_message(arguments.config)
    if message is not None:
        return _error(message)
    try:
        config = load_config(arguments.config)
        # A key generated now could not verify anything, so a missing key is an error here.
        key_ring = load_key_ring(config.keys, base_dir=config.source.parent, generate_missing=False)
    except (ConfigError, KeyMaterialError) as error:
        return _error(str(error))

    files: list[Path] = arguments.files
    if not files:
        if config.audit.file is None:
            return _error("audit.file is off in the configuration; name the files to verify")
        files = existing_audit_files(config.audit.file)
        if not files:
            return _error(
                f"no audit file found: neither {config.audit.file} nor a worker's file beside it"
            )
    failed = [path for path in files if not _verify_file(path, key_ring.audit_key)]
    if len(files) > 1 and failed:
        print(f"vaultgate: {len(failed)} of {len(files)} audit files failed", file=sys.stderr)
    return 1 if failed else 0


def _verify_file(path: Path, key: Secret[bytes]) -> bool:
    """Verify one file and print its result; return whether it verified."""
    try:
        result = verify_audit_file(path, key)
    except OSError as error:
        print(
            f"vaultgate: cannot read audit file {path}: {error.strerror or error}", file=sys.stderr
        )
        return False

    if result.ok:
        print(
            f"{path}: OK, {result.records} record(s), last sequence {result.last_seq}, "
            f"last mac {result.last_mac}"
        )
        return True
    print(f"{path}:{result.bad_line}: {result.problem}: {result.detail}", file=sys.stderr)
    print(
        f"vaultgate: the {result.records} record(s) before line {result.bad_line} verify, "
        f"up to sequence {result.last_seq}",
        file=sys.stderr,
    )
    return False


def _error(message: str) -> int:
    print(f"vaultgate: {message}", file=sys.stderr)
    return 1
