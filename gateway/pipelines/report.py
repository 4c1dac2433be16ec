"""The JSON report of a run: counts by file, field, class and detector, and never a value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.pipelines.records import PartitionStats


@dataclass
class FileReport:
    input: str
    output: str
    stats: PartitionStats = field(default_factory=PartitionStats)
    rejects_file: str | None = None


@dataclass
class RunReport:
    direction: str
    """``tokenize`` or ``reveal``."""
    workers: int
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0
    store_items: int = 0

    def to_json(self) -> dict[str, Any]:
        total = PartitionStats()
        for file_report in self.files:
            total.add(file_report.stats)
        return {
            "direction": self.direction,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "rows": total.rows,
            "bytes": total.bytes_in,
            "rejected_rows": total.rejected,
            "cells": _cells(total),
            "detections": dict(sorted(total.detections.items())),
            "files": [
                {
                    "input": file_report.input,
                    "output": file_report.output,
                    "rows": file_report.stats.rows,
                    "rejected_rows": file_report.stats.rejected,
                    "rejects_file": file_report.rejects_file,
                    "cells": _cells(file_report.stats),
                    "detections": dict(sorted(file_report.stats.detections.items())),
                }
                for file_report in self.files
            ],
        }


def _cells(stats: PartitionStats) -> dict[str, dict[str, int]]:
    """Return the cell counts as ``{field: {class: count}}``."""
    by_field: dict[str, dict[str, int]] = {}
    for (label, class_name), count in sorted(stats.cells.items()):
        by_field.setdefault(label, {})[class_name] = count
    return by_field
