"""``pipeline infer``: sample an input, classify each column and print a spec to review."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.classify import ColumnClass, classify_column
from gateway.pipelines.csvfile import CsvFormat
from gateway.pipelines.fileformat import FileFormat
from gateway.pipelines.jsonlines import JsonLinesFormat
from gateway.pipelines.spec import CsvOptions

DEFAULT_SAMPLE_ROWS: Final = 1000


def infer_spec(input_path: str, input_format: str | None, sample_rows: int) -> str:
    """Return the YAML text of a proposed spec for a local CSV or JSON Lines file."""
    path = Path(input_path)
    chosen = input_format or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise SourceError(f"cannot read input {path}: {exc.strerror}") from exc
    with stream:
        file_format: FileFormat = CsvFormat(CsvOptions()) if chosen == "csv" else JsonLinesFormat()
        file_format.open(stream, str(path))
        rows = itertools.islice(_records(file_format, stream), sample_rows)
        columns = _columns(file_format, list(rows))

    proposals = [
        classify_column(name, values, _last_member(name)) for name, values in columns.items()
    ]
    return _render(chosen, path, len(next(iter(columns.values()), [])), proposals, columns)


def _records(file_format: FileFormat, stream: Any) -> Iterator[Any]:
    for partition in file_format.partitions(stream):
        for row in file_format.parse(partition):
            if row.problem is not None:
                raise MalformedRecordError(file_format.name, row.number, row.problem)
            yield row.record


def _columns(file_format: FileFormat, records: list[Any]) -> dict[str, list[str]]:
    if isinstance(file_format, CsvFormat):
        return {
            name: [record[index] for record in records]
            for index, name in enumerate(file_format.columns)
        }
    columns: dict[str, list[str]] = {}
    for record in records:
        for path, value in _leaves(record, "$"):
            columns.setdefault(path, []).append(value)
    return columns


def _last_member(name: str) -> str:
    """Return the last member name of a JSONPath such as ``$.a.b[*]``, or a CSV header as it is."""
    if not name.startswith("$"):
        return name
    members = re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\"(?:[^\"\\]|\\.)*\")\]", name)
    if not members:
        return name
    plain, quoted = members[-1]
    return plain or str(json.loads(quoted))


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield the JSONPath and text of each string or number under ``value``."""
    if isinstance(value, dict):
        for key, child in value.items():
            name = f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"
            yield from _leaves(child, name)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child, f"{path}[*]")
    elif value is not None and not isinstance(value, bool):
        yield path, str(value)


def _render(
    input_format: str,
    path: Path,
    sampled: int,
    proposals: list[ColumnClass | None],
    columns: dict[str, list[str]],
) -> str:
    selector = "column" if input_format == "csv" else "json"
    lines = [
        f"# Proposed by `vaultgate pipeline infer` from {sampled} rows of {path.name}.",
        "# Review every rule before use: columns without a rule are copied unchanged.",
        f"format: {input_format}",
        "columns:",
    ]
    ruled = [proposal for proposal in proposals if proposal and proposal.action == "tokenize"]
    scanned = [proposal for proposal in proposals if proposal and proposal.action == "scan"]
    for proposal in ruled:
        lines += [
            f"  # {proposal.evidence}",
            f"  - {selector}: {json.dumps(proposal.column)}",
            f"    class: {proposal.class_name}",
            f"    format: {proposal.token_format}",
            "    deterministic: true",
        ]
    if not ruled:
        lines[-1] = "columns: []"
    lines.append("scan:" if scanned else "scan: []")
    for proposal in scanned:
        lines += [
            f"  # {proposal.evidence}",
            f"  - {selector}: {json.dumps(proposal.column)}",
            f"    detectors: [{', '.join(proposal.detectors)}]",
        ]
    unclassified = [
        name for name, proposal in zip(columns, proposals, strict=True) if proposal is None
    ]
    if unclassified:
        lines.append(f"# Left unchanged: {', '.join(unclassified)}")
    return "\n".join(lines) + "\n"
