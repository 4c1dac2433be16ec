"""Presidio's cell-by-cell rate on a sample of a Synthea-shaped CSV, for the speed ratio.

Every cell of the sample rows is passed to ``AnalyzerEngine.analyze`` with the six entity types,
as a Presidio pipeline over a table would do it; the rate is the sample's CSV bytes per second
of analysis alone (Presidio's anonymizer would add time).

    python -m bench.pipelines.presidio_rate [--rows 2000] [--input FILE]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import tempfile
import time
from pathlib import Path

from bench.pipelines.generate import generate
from bench.pipelines.presidio import ENTITIES, presidio_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--results", type=Path)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as name:
        source = arguments.input
        if source is None:
            source = Path(name) / "sample.csv"
            generate(source, arguments.rows * 400)
        with source.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            rows = [row for _, row in zip(range(arguments.rows), reader, strict=False)]

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    sample_bytes = len(buffer.getvalue().encode())

    engine = presidio_engine()
    found = 0
    started = time.perf_counter()
    for row in rows:
        for cell in row:
            found += len(engine.analyze(text=cell, language="en", entities=list(ENTITIES)))
    seconds = time.perf_counter() - started
    result = {
        "rows": len(rows),
        "cells": sum(len(row) for row in rows),
        "bytes": sample_bytes,
        "seconds": round(seconds, 2),
        "mb_per_s": round(sample_bytes / seconds / 1e6, 4),
        "kb_per_s": round(sample_bytes / seconds / 1e3, 1),
        "detections": found,
    }
    print(json.dumps(result))
    if arguments.results:
        arguments.results.parent.mkdir(parents=True, exist_ok=True)
        arguments.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
