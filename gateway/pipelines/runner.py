"""Run a pipeline: for each input, read partitions, transform them in workers, write in order.

The main process reads the input and writes the output. Worker processes parse, transform and
serialize partitions, each with its own store connection and token cache, and with one worker
the main process does that itself. At most two partitions per worker are in flight, so memory
does not grow with the file.

Before any output is created, the store is pinged and every field a rule names is looked up in
the local inputs. A malformed row stops the run with its file, row and reason, unless rejects go
to a reject file. Either way, the output exists under its final name only when every row was
processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.fileformat import PARTITION_BYTES, FileFormat
from gateway.pipelines.formats import make_format
from gateway.pipelines.locations import (
    InputFile,
    LocalLocation,
    Location,
    PendingOutput,
    local_copy,
    parse_location,
)
from gateway.pipelines.progress import Progress
from gateway.pipelines.records import RecordAdapter
from gateway.pipelines.report import FileReport, RunReport
from gateway.pipelines.spec import PipelineSpec
from gateway.pipelines.transform import Plan
from gateway.pipelines.workers import Task, VaultSettings, Workers
from gateway.store import open_store
from gateway.tokens.keys import load_key_ring

logger = logging.getLogger("gateway.pipelines")


@dataclass(frozen=True, slots=True)
class RunOptions:
    workers: int = 1
    reveal: bool = False
    reject_file: str | None = None
    """The location that receives rejected rows whole, or None to stop at the first one."""
    partition_bytes: int = PARTITION_BYTES


def run_pipeline(
    spec: PipelineSpec,
    inputs: list[str],
    output: str,
    settings: VaultSettings,
    options: RunOptions,
    progress: Progress | None = None,
) -> RunReport:
    """Process every input into the output and return the report.

    Raises ``StoreUnavailableError`` before any output exists when the store cannot be reached,
    ``SourceError`` for an unreadable input, a missing field or an unwritable output, and
    ``MalformedRecordError`` for the first malformed row when there is no reject file.
    """
    progress = progress or Progress(enabled=False)
    started = time.monotonic()
    pairs = _pair_inputs_with_outputs(inputs, output)
    reject_locations = _reject_locations(options.reject_file, pairs)

    _check_fields(spec, [input_file for input_file, _ in pairs])
    _check_store(settings)
    report = RunReport("reveal" if options.reveal else "tokenize", options.workers)
    with (
        Workers(settings, options.workers) as workers,
        tempfile.TemporaryDirectory(prefix="vaultgate-pipeline-") as scratch_name,
    ):
        scratch = Path(scratch_name)
        for (input_file, output_location), reject_location in zip(
            pairs, reject_locations, strict=True
        ):
            file_report = _run_file(
                spec, input_file, output_location, reject_location, options, workers,
                scratch, progress,
            )  # fmt: skip
            report.files.append(file_report)
        report.store_items = workers.store_items()
    report.seconds = time.monotonic() - started
    return report


def _pair_inputs_with_outputs(inputs: list[str], output: str) -> list[tuple[InputFile, Location]]:
    if not inputs:
        raise SourceError("no input given; name one on the command line or as input in the spec")
    files: list[InputFile] = []
    folder_given = False
    for url in inputs:
        location = parse_location(url)
        folder_given = folder_given or location.is_folder()
        files.extend(location.list_files())
    if not files:
        raise SourceError(f"no input file found in {', '.join(inputs)}")

    # A folder in gives a folder out; so does an output that is a folder or ends with "/".
    target = parse_location(output)
    if len(files) == 1 and not folder_given and not target.is_folder():
        return [(files[0], target)]
    if isinstance(target, LocalLocation) and target.path.is_file():
        raise SourceError(f"{len(files)} input files need an output folder, but {output} is a file")
    names = [file.relative_name for file in files]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SourceError(f"two inputs have the same file name: {', '.join(sorted(duplicates))}")
    return [(file, target.child(file.relative_name)) for file in files]


def _reject_locations(
    reject_file: str | None, pairs: list[tuple[InputFile, Location]]
) -> list[Location | None]:
    if reject_file is None:
        return [None] * len(pairs)
    target = parse_location(reject_file)
    if len(pairs) == 1 and not target.is_folder():
        return [target]
    return [target.child(input_file.relative_name) for input_file, _ in pairs]


def _check_fields(spec: PipelineSpec, inputs: list[InputFile]) -> None:
    """Look up every ruled field in each local input, so that a missing one stops the run before
    any output exists. Remote inputs are checked when they are read."""
    for input_file in inputs:
        location = parse_location(input_file.location)
        if not isinstance(location, LocalLocation):
            continue
        try:
            with open(location.path, "rb") as stream:
                file_format = make_format(spec)
                file_format.open(stream, input_file.location)
                file_format.bind(spec.columns + spec.scans)
        except OSError as exc:
            raise SourceError(f"cannot read input {input_file.location}: {exc.strerror}") from exc


def _check_store(settings: VaultSettings) -> None:
    """Load the keys and ping the store, so that a bad key or store stops the run up front."""
    load_key_ring(settings.keys, base_dir=settings.base_dir)

    async def ping() -> None:
        store = open_store(
            settings.store_url, timeout=settings.store_timeout, base_dir=settings.base_dir
        )
        try:
            await store.ping()
        finally:
            await store.close()

    asyncio.run(ping())


def _run_file(
    spec: PipelineSpec,
    input_file: InputFile,
    output_location: Location,
    reject_location: Location | None,
    options: RunOptions,
    workers: Workers,
    scratch: Path,
    progress: Progress,
) -> FileReport:
    name = input_file.location
    file_report = FileReport(name, output_location.url)
    source = parse_location(input_file.location)
    with local_copy(source, scratch) as local_path:
        try:
            stream: BinaryIO = open(local_path, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise SourceError(f"cannot read input {name}: {exc.strerror}") from exc
        with stream:
            file_format = make_format(spec)
            preamble = file_format.open(stream, name)
            adapter, labels = file_format.bind(spec.columns + spec.scans)
            plan = Plan(
                rules=spec.columns + spec.scans,
                labels=tuple(labels),
                reveal=options.reveal,
                batch_size=spec.batch_size,
            )
            progress.start_file(name, local_path.stat().st_size)
            output = PendingOutput(output_location, scratch)
            rejects: PendingOutput | None = None
            try:
                if reject_location is not None:
                    rejects = PendingOutput(reject_location, scratch)
                _write_partitions(
                    file_format, adapter, plan, stream, preamble, output, rejects, workers,
                    file_report, progress, options.partition_bytes,
                )  # fmt: skip
            except BaseException:
                output.discard()
                if rejects is not None:
                    rejects.discard()
                raise
    output.commit()
    if rejects is not None:
        if file_report.stats.rejected:
            rejects.commit()
            file_report.rejects_file = rejects.location.url
        else:
            rejects.discard()
    logger.info(
        "%s: %d rows, %d rejected, written to %s",
        name,
        file_report.stats.rows,
        file_report.stats.rejected,
        output_location.url,
    )
    return file_report


def _write_partitions(
    file_format: FileFormat,
    adapter: RecordAdapter,
    plan: Plan,
    stream: BinaryIO,
    preamble: bytes,
    output: PendingOutput,
    rejects: PendingOutput | None,
    workers: Workers,
    file_report: FileReport,
    progress: Progress,
    partition_bytes: int,
) -> None:
    rows_before = 0
    with open(output.path, "wb") as out, _open_optional(rejects) as reject_out:
        out.write(preamble)
        if reject_out is not None:
            reject_out.write(file_format.reject_preamble())
        tasks = (
            Task(file_format, adapter, plan, partition)
            for partition in file_format.partitions(stream, partition_bytes)
        )
        for result in workers.map_ordered(tasks):
            if result.rejects and reject_out is None:
                first = result.rejects[0]
                raise MalformedRecordError(
                    file_report.input, rows_before + first.number, first.reason
                )
            for reject in result.rejects:
                assert reject_out is not None
                reject_out.write(reject.raw)
                logger.warning(
                    "%s: row %d rejected: %s",
                    file_report.input,
                    rows_before + reject.number,
                    reject.reason,
                )
            out.write(result.data)
            file_report.stats.add(result.stats)
            rows_before += result.stats.rows
            progress.advance(result.stats.rows, result.stats.bytes_in)
        out.write(file_format.finish())
    progress.finish()


@contextlib.contextmanager
def _open_optional(pending: PendingOutput | None) -> Iterator[BinaryIO | None]:
    """Open a pending output for writing, or yield None when there is none."""
    if pending is None:
        yield None
        return
    with open(pending.path, "wb") as file:
        yield file
