"""The ``vaultgate pipeline run`` and ``vaultgate pipeline infer`` commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.config.loader import load_config, missing_config_message
from gateway.config.model import Config, LoggingConfig
from gateway.engine.auth import find_client
from gateway.errors import (
    ConfigError,
    KeyMaterialError,
    PipelineError,
    StoreError,
    StoreUnavailableError,
)
from gateway.logs import configure_logging
from gateway.pipelines.access import PipelineAccess, resolve_classes
from gateway.pipelines.infer import DEFAULT_SAMPLE_ROWS, infer_spec
from gateway.pipelines.progress import Progress
from gateway.pipelines.runner import RunOptions, run_pipeline
from gateway.pipelines.specfile import load_spec
from gateway.pipelines.workers import VaultSettings
from gateway.policy.model import View

logger = logging.getLogger("gateway.pipelines")


def register(commands: Any) -> None:
    """Add ``pipeline run`` and ``pipeline infer`` to the ``vaultgate`` subcommands."""
    pipeline = commands.add_parser("pipeline", help="tokenize or reveal files")
    pipeline_commands = pipeline.add_subparsers(title="pipeline commands")

    default_config = os.environ.get("VAULTGATE_CONFIG", "config.yaml")
    run = pipeline_commands.add_parser(
        "run", help="tokenize the sensitive values of files by the rules of a spec"
    )
    run.add_argument("spec", type=Path, help="pipeline spec (YAML)")
    run.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="input files or folders: local paths, s3://bucket/key or sftp://host/path "
        "(default: the spec's input)",
    )
    run.add_argument(
        "-o", "--output", help="output file or folder (ends with /); default: the spec's output"
    )
    run.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(default_config),
        help="gateway configuration whose store and keys to use "
        "(default: $VAULTGATE_CONFIG or config.yaml)",
    )
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument(
        "--reveal",
        action="store_true",
        help="replace tokens by their original values; the output then contains plaintext",
    )
    run.add_argument(
        "--client",
        help="the client from the configuration that the run acts as; required with --reveal, "
        "which writes what this client's grants allow; its key is read from the variable "
        "that --client-key-env names",
    )
    run.add_argument(
        "--client-key-env",
        default="VAULTGATE_CLIENT_KEY",
        help="environment variable holding the client's API key (default VAULTGATE_CLIENT_KEY)",
    )
    run.add_argument(
        "--view",
        choices=("plain", "masked", "redacted"),
        help="with --reveal: the view to write, capped by the client's best grant per class "
        "(default: that best grant)",
    )
    run.add_argument(
        "--reject-file",
        help="write malformed rows here, whole, and go on; without it the first one stops the run",
    )
    run.add_argument(
        "--report", type=Path, help="write the JSON report to this file instead of stdout"
    )
    run.set_defaults(command_function=_run)

    infer = pipeline_commands.add_parser(
        "infer", help="sample a file and print a spec that tokenizes its sensitive columns"
    )
    infer.add_argument("input", help="a CSV or JSON Lines file")
    infer.add_argument(
        "--format", choices=("csv", "jsonl"), help="input format (default: from the file name)"
    )
    infer.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help=f"rows to sample (default {DEFAULT_SAMPLE_ROWS})",
    )
    infer.set_defaults(command_function=_infer)


def _access(arguments: argparse.Namespace, source: object, config: Config) -> PipelineAccess | str:
    """Return the run's client and policy, or the reason it may not run."""
    client = arguments.client
    if arguments.reveal and client is None:
        return "--reveal needs --client: a reveal writes what that client's grants allow"
    if client is not None:
        key = os.environ.get(arguments.client_key_env, "")
        found = find_client(key, config.policy.clients)
        if found is None or found.name != client:
            return (
                f"missing or invalid API key for client {client!r} in the "
                f"{arguments.client_key_env} environment variable"
            )
    return PipelineAccess(
        client=client,
        policy=config.policy,
        view=View.parse(arguments.view) if arguments.view else None,
        operation=f"pipeline {Path(str(source)).name}",
        audit=config.audit,
    )


def _fail(message: str) -> int:
    print(f"vaultgate: {message}", file=sys.stderr)
    return 1


def _run(arguments: argparse.Namespace) -> int:
    if arguments.workers < 1:
        return _fail("--workers must be 1 or more")
    message = missing_config_message(arguments.config)
    if message is not None:
        return _fail(message)
    try:
        spec = load_spec(arguments.spec)
        config = load_config(arguments.config)
    except ConfigError as error:
        print(f"vaultgate: {len(error.problems)} configuration problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    configure_logging(LoggingConfig(level="WARNING", format=config.logging.format))

    inputs = list(arguments.inputs) or list(spec.inputs)
    output = arguments.output or spec.output
    if not inputs:
        return _fail("no input: name one after the spec, or set input in the spec")
    if not output:
        return _fail("no output: pass -o, or set output in the spec")
    if spec.reveals() and not arguments.reveal:
        return _fail(
            f"{spec.source} detokenizes, which writes plaintext; pass --reveal to allow that"
        )
    access = _access(arguments, spec.source, config)
    if isinstance(access, str):
        return _fail(access)
    spec, class_problems = resolve_classes(spec, config.policy)
    if class_problems:
        for class_problem in class_problems:
            print(f"vaultgate: {class_problem}", file=sys.stderr)
        return 1

    settings = VaultSettings(
        store_url=config.store.url,
        store_timeout=config.limits.store_timeout,
        base_dir=config.source.parent,
        keys=config.keys,
        access=access,
    )
    options = RunOptions(
        workers=arguments.workers, reveal=arguments.reveal, reject_file=arguments.reject_file
    )
    # SIGTERM ends the run like Ctrl-C does, so that its temporary output files are removed.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        report = run_pipeline(spec, inputs, output, settings, options, Progress())
    except (
        PipelineError,
        StoreUnavailableError,
        StoreError,
        KeyMaterialError,
        ConfigError,
    ) as error:
        return _fail(f"pipeline stopped; the file it stopped in has no output: {error}")

    text = json.dumps(report.to_json(), indent=2) + "\n"
    if arguments.report:
        arguments.report.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _exit_on_signal(signal_number: int, frame: object) -> None:
    raise SystemExit(128 + signal_number)


def _infer(arguments: argparse.Namespace) -> int:
    configure_logging(LoggingConfig(level="WARNING"))
    try:
        text = infer_spec(arguments.input, arguments.format, arguments.sample_rows)
    except PipelineError as error:
        return _fail(str(error))
    sys.stdout.write(text)
    return 0
