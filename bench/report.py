"""Describe the machine and render the results as a Markdown table with ratios to the relay."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.load import WrkResult

BASELINE = "relay"
TARGET_THROUGHPUT_RATIO = 0.8
"""vaultgate's throughput must be at least this fraction of the bare relay's."""
TARGET_ADDED_P99_MS = 2.0
"""vaultgate's p99 latency may exceed the bare relay's by less than this, in milliseconds."""
TARGET_CONNECTIONS = 32
PACKAGES = ("aiohttp", "mitmproxy", "redis", "hiredis", "cryptography", "simplejson", "jsonpath-ng")


@dataclass
class Measurement:
    peer: str
    label: str
    tokenizes: bool
    connections: int
    email_mode: str
    wrk: WrkResult
    cores_used: dict[str, float]
    """CPU time of each process during the run divided by the run's wall time."""
    server_rss_mib: float
    other_cores: float
    """CPU that the rest of the machine used during the run, in cores: busy time from
    /proc/stat minus the benchmark processes' CPU time, plus steal time."""
    round_index: int = 0
    upstream_counts: dict[str, int] = field(default_factory=dict)
    """How many checkout bodies the upstream received during the run, by kind."""

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "label": self.label,
            "connections": self.connections,
            "email_mode": self.email_mode,
            "round": self.round_index,
            "requests": self.wrk.requests,
            "duration_s": round(self.wrk.duration_s, 3),
            "requests_per_second": round(self.wrk.requests_per_second, 1),
            "latency_us": self.wrk.latency_us,
            "non_2xx": self.wrk.non_2xx,
            "socket_errors": self.wrk.socket_errors,
            "cores_used": {name: round(value, 3) for name, value in self.cores_used.items()},
            "server_rss_mib": round(self.server_rss_mib, 1),
            "other_cores": round(self.other_cores, 3),
            "upstream_counts": self.upstream_counts,
        }


def machine_description() -> dict[str, str]:
    """Return the CPU model, core count, kernel, Python, SQLite and tool and package versions."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    description = {
        "cpu": cpu_model,
        "cores": str(len(_online_cpus())),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": _first_line(["wrk", "--version"]),
        "redis-server": _first_line(["redis-server", "--version"]),
    }
    for package in PACKAGES:
        try:
            description[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            description[package] = "not installed"
    return description


def _online_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _first_line(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError as error:
        return f"unavailable ({error.strerror})"
    output = (completed.stdout or completed.stderr).strip().splitlines()
    return output[0] if output else "unknown"


@dataclass
class Row:
    """The runs of one peer at one load, with the median of each metric over the rounds."""

    first: Measurement
    runs: list[Measurement]

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.first.peer, self.first.connections, self.first.email_mode)

    @property
    def requests_per_second(self) -> float:
        return statistics.median(run.wrk.requests_per_second for run in self.runs)

    def latency_ms(self, percentile: str) -> float:
        return statistics.median(run.wrk.latency_us[percentile] for run in self.runs) / 1000

    def median_cores(self, names: tuple[str, ...] | None = None) -> float:
        return statistics.median(
            sum(value for name, value in run.cores_used.items() if names is None or name in names)
            for run in self.runs
        )

    @property
    def other_cores(self) -> float:
        return statistics.median(run.other_cores for run in self.runs)

    def total(self, count: str) -> int:
        if count in ("non_2xx", "socket_errors"):
            return sum(getattr(run.wrk, count) for run in self.runs)
        return sum(run.upstream_counts.get(count, 0) for run in self.runs)


def group_rows(measurements: list[Measurement]) -> list[Row]:
    """Group the runs by peer, connections and email mode, in the order of their first run."""
    rows: dict[tuple[str, int, str], Row] = {}
    for measurement in measurements:
        key = (measurement.peer, measurement.connections, measurement.email_mode)
        if key in rows:
            rows[key].runs.append(measurement)
        else:
            rows[key] = Row(measurement, [measurement])
    return list(rows.values())


def _baseline_for(row: Row, rows: list[Row]) -> Row | None:
    for candidate in rows:
        if candidate.key == (BASELINE, row.first.connections, "unique"):
            return candidate
    return None


def _ratio(value: float, baseline: float | None) -> str:
    if baseline is None or baseline == 0:
        return "-"
    return f"{value / baseline:.2f}"


def _upstream_summary(row: Row) -> str:
    kind = "tokenized" if row.first.tokenizes else "raw"
    wrong = row.total("requests") - row.total(kind)
    summary = f"{row.total(kind)} {kind}"
    if wrong:
        summary += f", {wrong} NOT {kind}"
    return summary


def _throughput_cell(row: Row) -> str:
    median = f"{row.requests_per_second:.0f}"
    if len(row.runs) == 1:
        return median
    values = [run.wrk.requests_per_second for run in row.runs]
    return f"{median} ({min(values):.0f}-{max(values):.0f})"


def render_table(measurements: list[Measurement]) -> str:
    """Return a Markdown table with one row per peer and load, and ratios to the relay.

    With several rounds each cell is the median over the rounds, the throughput cell also
    gives the range, and the error and upstream counts are totals.
    """
    header = (
        "| Peer | Emails | Conns | req/s | req/s / relay | p50 ms | p50 / relay | p99 ms "
        "| p99 / relay | p99 added ms | non-2xx | socket errors | server cores | bench cores "
        "| other cores | upstream received |"
    )
    lines = [header, _separator(header)]
    rows = group_rows(measurements)
    for row in rows:
        baseline = _baseline_for(row, rows)
        p50, p99 = row.latency_ms("p50"), row.latency_ms("p99")
        baseline_p99 = baseline.latency_ms("p99") if baseline else None
        cells = [
            row.first.label,
            row.first.email_mode,
            str(row.first.connections),
            _throughput_cell(row),
            _ratio(row.requests_per_second, baseline.requests_per_second if baseline else None),
            f"{p50:.2f}",
            _ratio(p50, baseline.latency_ms("p50") if baseline else None),
            f"{p99:.2f}",
            _ratio(p99, baseline_p99),
            f"{p99 - baseline_p99:+.2f}" if baseline_p99 is not None else "-",
            str(row.total("non_2xx")),
            str(row.total("socket_errors")),
            f"{row.median_cores(('server',)):.2f}",
            f"{row.median_cores():.2f}",
            f"{row.other_cores:.2f}",
            _upstream_summary(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _separator(header: str) -> str:
    columns = header.count("|") - 1
    return "|" + "---|" * columns


def render_verdicts(measurements: list[Measurement]) -> list[str]:
    """Return one line per vaultgate peer on whether it meets the target at 32 connections."""
    verdicts = []
    rows = group_rows(measurements)
    for row in rows:
        if not (
            row.first.tokenizes
            and row.first.connections == TARGET_CONNECTIONS
            and row.first.email_mode == "unique"
        ):
            continue
        baseline = _baseline_for(row, rows)
        if baseline is None:
            verdicts.append(f"{row.first.label}: no relay run at {TARGET_CONNECTIONS} connections")
            continue
        ratio = row.requests_per_second / baseline.requests_per_second
        added_ms = row.latency_ms("p99") - baseline.latency_ms("p99")
        throughput_ok = ratio >= TARGET_THROUGHPUT_RATIO
        latency_ok = added_ms < TARGET_ADDED_P99_MS
        verdict = "meets" if throughput_ok and latency_ok else "MISSES"
        verdicts.append(
            f"{row.first.label}: {verdict} the target at {TARGET_CONNECTIONS} connections "
            f"(throughput {ratio:.2f} of the relay, target >= {TARGET_THROUGHPUT_RATIO}; "
            f"p99 added {added_ms:+.2f} ms, target < {TARGET_ADDED_P99_MS} ms)"
        )
    return verdicts
