"""Tokenize a Synthea-shaped CSV with the Redis and the SQLite store, one and two workers.

For each store and worker count the run starts on an empty store, so every distinct value is a
new token, and it records wall time, MB/s, MB/s per worker and the peak resident memory of the
largest process. Presidio's rate is measured on a sample in ``presidio.py``.

    python -m bench.pipelines.speed --size 1GB --results bench/results/pipelines-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pipelines.generate import generate
from gateway.config.fields import parse_size
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]

# Runs the command in this process, then prints the peak resident memory of this process and
# of its largest worker (KiB on Linux). Measured inside, because the benchmark's own children
# include the redis-server.
LAUNCHER = (
    "import resource, sys\n"
    "from gateway.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "main_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print('peak', main_kib, worker_kib, file=sys.stderr)\n"
    "sys.exit(code)\n"
)

# The columns that `vaultgate pipeline infer` proposes for the patients file, plus the Id that
# joins it to the encounters. Every rule is deterministic, so that joins survive.
SPEC = """\
format: csv
columns:
  - {column: Id, class: patient.id, deterministic: true}
  - {column: BIRTHDATE, class: person.birthdate, deterministic: true}
  - {column: SSN, class: person.ssn, deterministic: true}
  - {column: DRIVERS, class: person.drivers_license, deterministic: true}
  - {column: PASSPORT, class: person.passport, deterministic: true}
  - {column: FIRST, class: person.name, deterministic: true}
  - {column: LAST, class: person.name, deterministic: true}
  - {column: MAIDEN, class: person.name, deterministic: true}
  - {column: ADDRESS, class: person.address, deterministic: true}
"""


def run_once(work: Path, source: Path, store_url: str, workers: int) -> dict[str, Any]:
    """Run the pipeline in a subprocess and return its measurements."""
    config = work / "gateway.yaml"
    config.write_text(
        f'store: {{url: "{store_url}"}}\n'
        "keys: {file: keys.yaml, development: true}\n"
        "routes: []\n",
        encoding="utf-8",
    )
    (work / "spec.yaml").write_text(SPEC, encoding="utf-8")
    output = work / "out.csv"
    command = [
        sys.executable, "-c", LAUNCHER, "pipeline", "run", str(work / "spec.yaml"), str(source),
        "-o", str(output), "-c", str(config), "--workers", str(workers),
        "--report", str(work / "report.json"),
    ]  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"pipeline failed: {completed.stderr[-2000:]}")
    peak_line = next(line for line in completed.stderr.splitlines() if line.startswith("peak "))
    main_kib, worker_kib = (int(part) for part in peak_line.split()[1:])
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    output.unlink()
    megabytes = source.stat().st_size / 1e6
    return {
        "workers": workers,
        "seconds": round(seconds, 1),
        "rows": report["rows"],
        "cells": sum(sum(classes.values()) for classes in report["cells"].values()),
        "mb_per_s": round(megabytes / seconds, 2),
        "mb_per_s_per_worker": round(megabytes / seconds / workers, 2),
        "peak_rss_main_mb": round(main_kib / 1024, 1),
        "peak_rss_worker_mb": round(worker_kib / 1024, 1) if workers > 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--input", type=Path, help="an existing generated file to use")
    parser.add_argument("--stores", default="redis,sqlite")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--results", type=Path)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(
        prefix="bench-pipelines-", dir=os.environ.get("BENCH_TMP")
    ) as name:
        scratch = Path(name)
        source = arguments.input or scratch / "patients.csv"
        if arguments.input is None:
            rows = generate(source, parse_size(arguments.size))
            print(f"generated {source.stat().st_size / 1e6:.0f} MB, {rows} rows", flush=True)
        results = []
        for store in arguments.stores.split(","):
            for workers in (int(count) for count in arguments.workers.split(",")):
                work = scratch / f"{store}-{workers}"
                work.mkdir()
                redis = None
                if store == "redis":
                    # The durability the gateway recommends: append-only file, fsync every second.
                    redis = RedisServer(work / "redis", "--appendfsync", "everysec")
                    redis.start()
                    url = redis.url
                else:
                    url = "sqlite:///tokens.db"
                try:
                    result = {"store": store, **run_once(work, source, url, workers)}
                finally:
                    if redis is not None:
                        redis.stop()
                print(json.dumps(result), flush=True)
                results.append(result)
    if arguments.results:
        arguments.results.parent.mkdir(parents=True, exist_ok=True)
        arguments.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
