"""Load benchmark: vaultgate on the checkout route against a bare relay, mitmproxy and the upstream.

Usage, from the repository root::

    .venv/bin/python -m bench.run            # full run, about four minutes
    .venv/bin/python -m bench.run --quick    # short runs at 32 connections, under a minute

Each peer runs in its own process, in front of one shared upstream process, and wrk (one thread)
drives it with ``bench/checkout.lua``. Per peer the benchmark starts the servers, spot-checks
two requests, warms up, then measures each connection level. The vaultgate peers each get a
fresh store: a private redis-server per Redis peer, a new SQLite file for the SQLite peer. The
table goes to stdout, and ``results.json`` and ``results.md`` to the output directory.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import hotspots
from bench.load import run_wrk, spot_check, upstream_stats, wrk_executable
from bench.report import Measurement, machine_description, render_table, render_verdicts
from bench.servers import (
    BENCH_DIR,
    ServerProcess,
    machine_cpu_seconds,
    snapshot_gateway_source,
    start_mitmproxy,
    start_redis,
    start_relay,
    start_upstream,
    start_vaultgate,
)

# A line of vaultgate's text log format: "%(asctime)s %(levelname)s %(name)s: %(message)s".
_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$"
)
UPSTREAM_COUNTERS = ("requests", "tokenized", "raw", "mixed", "invalid_json", "luhn_invalid")


@dataclass
class RunningPeer:
    url: str
    server: ServerProcess
    """The process under test. For the direct peer it is the shared upstream."""
    helpers: list[ServerProcess] = field(default_factory=list)
    owns_server: bool = True

    def processes(self, upstream: ServerProcess) -> dict[str, ServerProcess]:
        named = {"server": self.server}
        if self.server is not upstream:
            named["upstream"] = upstream
        for helper in self.helpers:
            named["redis"] = helper
        return named

    def stop(self) -> None:
        if self.owns_server:
            self.server.stop()
        for helper in self.helpers:
            helper.stop()


type Starter = Callable[[Path, ServerProcess, argparse.Namespace], RunningPeer]


@dataclass(frozen=True)
class PeerSpec:
    key: str
    label: str
    tokenizes: bool
    start: Starter
    repeat_run: bool = False
    """Whether to add a run whose emails repeat, so that the email field mostly hits the store."""


def _start_direct(
    workdir: Path, upstream: ServerProcess, options: argparse.Namespace
) -> RunningPeer:
    return RunningPeer(upstream.url, upstream, owns_server=False)


def _start_relay(
    workdir: Path, upstream: ServerProcess, options: argparse.Namespace
) -> RunningPeer:
    relay = start_relay(workdir, upstream.url)
    return RunningPeer(relay.url, relay)


def _start_mitmproxy(
    workdir: Path, upstream: ServerProcess, options: argparse.Namespace
) -> RunningPeer:
    mitmproxy = start_mitmproxy(workdir, upstream.url)
    return RunningPeer(mitmproxy.url, mitmproxy)


def _redis_starter(appendfsync: str, workers: int = 1) -> Starter:
    def start(workdir: Path, upstream: ServerProcess, options: argparse.Namespace) -> RunningPeer:
        suffix = f"-{workers}w" if workers > 1 else ""
        name = f"vaultgate-redis-{appendfsync}{suffix}"
        redis = start_redis(workdir, f"redis-{appendfsync}{suffix}", appendfsync)
        try:
            gateway = start_vaultgate(
                workdir,
                name,
                f"redis://127.0.0.1:{redis.port}/0",
                upstream.url,
                source_dir=options.source_dir,
                access_log=options.access_log,
                workers=workers,
            )
        except BaseException:
            redis.stop()
            raise
        return RunningPeer(gateway.url, gateway, helpers=[redis])

    return start


def _sqlite_starter(workers: int = 1) -> Starter:
    def start(workdir: Path, upstream: ServerProcess, options: argparse.Namespace) -> RunningPeer:
        name = "vaultgate-sqlite" + (f"-{workers}w" if workers > 1 else "")
        database = workdir / name / "tokens.db"
        gateway = start_vaultgate(
            workdir,
            name,
            f"sqlite:///{database}",
            upstream.url,
            source_dir=options.source_dir,
            access_log=options.access_log,
            workers=workers,
        )
        return RunningPeer(gateway.url, gateway)

    return start


PEERS = {
    spec.key: spec
    for spec in (
        PeerSpec("direct", "upstream, direct", False, _start_direct),
        PeerSpec("relay", "bare aiohttp relay", False, _start_relay),
        PeerSpec("mitmproxy", "mitmproxy reverse", False, _start_mitmproxy),
        PeerSpec(
            "vaultgate-redis-everysec",
            "vaultgate, Redis everysec",
            True,
            _redis_starter("everysec"),
            repeat_run=True,
        ),
        PeerSpec(
            "vaultgate-redis-always", "vaultgate, Redis always", True, _redis_starter("always")
        ),
        PeerSpec(
            "vaultgate-sqlite",
            "vaultgate, SQLite",
            True,
            _sqlite_starter(),
            repeat_run=True,
        ),
        PeerSpec(
            "vaultgate-redis-everysec-2w",
            "vaultgate --workers 2, Redis everysec",
            True,
            _redis_starter("everysec", workers=2),
        ),
        PeerSpec(
            "vaultgate-sqlite-2w", "vaultgate --workers 2, SQLite", True, _sqlite_starter(workers=2)
        ),
    )
}


class Benchmark:
    def __init__(self, options: argparse.Namespace, workdir: Path, output: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.output = output
        self.session = secrets.token_hex(3)
        self.run_counter = 0
        self.round_index = 0
        self.measurements: list[Measurement] = []
        self.problems: list[str] = []
        self.logs: dict[str, list[dict[str, Any]]] = {}
        self.memory: dict[str, list[list[float]]] = {}
        self.profiles: dict[str, str] = {}
        self.warmups: list[dict[str, Any]] = []

    def run(self) -> None:
        """Run every peer in turn, and the whole sequence once per round."""
        upstream = start_upstream(self.workdir)
        try:
            for round_index in range(self.options.rounds):
                self.round_index = round_index
                for key in self.options.peers:
                    self.run_peer(PEERS[key], upstream)
        finally:
            upstream.stop()

    def run_peer(self, spec: PeerSpec, upstream: ServerProcess) -> None:
        if self.options.wait_idle > 0:
            _wait_for_idle_machine(self.options.wait_idle)
        _progress(f"[{spec.key}] starting (round {self.round_index + 1} of {self.options.rounds})")
        round_dir = self.workdir / f"round-{self.round_index + 1}"
        round_dir.mkdir(exist_ok=True)
        peer = spec.start(round_dir, upstream, self.options)
        try:
            problems = spot_check(peer.url, upstream.url, tokenizes=spec.tokenizes)
            self.problems += [f"{spec.key} spot check: {problem}" for problem in problems]
            for problem in problems:
                _progress(f"[{spec.key}] spot check FAILED: {problem}")

            levels = self.options.connections
            memory: list[float] = []
            self.memory.setdefault(spec.key, []).append(memory)
            memory.append(peer.server.rss_bytes() / 2**20)
            self.warm_up(spec, peer, max(levels), "unique")
            memory.append(peer.server.rss_bytes() / 2**20)
            for connections in levels:
                self.measure(spec, peer, upstream, connections, "unique")
                memory.append(peer.server.rss_bytes() / 2**20)
            if spec.repeat_run:
                self.warm_up(spec, peer, max(levels), "repeat")
                self.measure(spec, peer, upstream, max(levels), "repeat")
                memory.append(peer.server.rss_bytes() / 2**20)
            last_round = self.round_index == self.options.rounds - 1
            if self.options.profile and spec.tokenizes and last_round:
                self.profile(spec, peer, max(levels))
            if not peer.server.is_running():
                self.problems.append(f"{spec.key} exited during the benchmark")
        finally:
            peer.stop()
        if spec.tokenizes:
            summary = _summarize_gateway_log(peer.server.log_file)
            self.logs.setdefault(spec.key, []).append(summary)

    def _next_run_id(self) -> str:
        self.run_counter += 1
        return f"{self.session}x{self.run_counter}"

    def warm_up(self, spec: PeerSpec, peer: RunningPeer, connections: int, email_mode: str) -> None:
        """Run unmeasured load, but still count its failed requests."""
        if self.options.warmup <= 0:
            return
        result = run_wrk(
            peer.url,
            connections=connections,
            duration_s=self.options.warmup,
            run_id=self._next_run_id(),
            email_mode=email_mode,
            script=str(BENCH_DIR / "checkout.lua"),
        )
        self.warmups.append(
            {
                "peer": spec.key,
                "connections": connections,
                "email_mode": email_mode,
                "requests": result.requests,
                "requests_per_second": round(result.requests_per_second, 1),
                "non_2xx": result.non_2xx,
                "socket_errors": result.socket_errors,
            }
        )
        if result.non_2xx or result.socket_errors:
            self.problems.append(
                f"{spec.key} warm-up at {connections} connections: {result.non_2xx} non-2xx "
                f"responses and {result.socket_errors} socket errors"
            )

    def measure(
        self,
        spec: PeerSpec,
        peer: RunningPeer,
        upstream: ServerProcess,
        connections: int,
        email_mode: str,
    ) -> None:
        processes = peer.processes(upstream)
        cpu_before = {name: process.cpu_seconds() for name, process in processes.items()}
        wrk_before = _children_cpu_seconds()
        counts_before = upstream_stats(upstream.url)
        machine_before = machine_cpu_seconds()
        started = time.monotonic()
        result = run_wrk(
            peer.url,
            connections=connections,
            duration_s=self.options.duration,
            run_id=self._next_run_id(),
            email_mode=email_mode,
            script=str(BENCH_DIR / "checkout.lua"),
        )
        wall = time.monotonic() - started
        machine_after = machine_cpu_seconds()
        cores = {
            name: (process.cpu_seconds() - cpu_before[name]) / wall
            for name, process in processes.items()
        }
        cores["wrk"] = (_children_cpu_seconds() - wrk_before) / wall
        busy = (machine_after[0] - machine_before[0]) / wall
        steal = (machine_after[1] - machine_before[1]) / wall
        other_cores = max(0.0, busy - sum(cores.values())) + steal
        counts_after = upstream_stats(upstream.url)
        counts = {name: counts_after[name] - counts_before[name] for name in UPSTREAM_COUNTERS}

        measurement = Measurement(
            peer=spec.key,
            label=spec.label,
            tokenizes=spec.tokenizes,
            connections=connections,
            email_mode=email_mode,
            wrk=result,
            cores_used=cores,
            server_rss_mib=peer.server.rss_bytes() / 2**20,
            other_cores=other_cores,
            round_index=self.round_index,
            upstream_counts=counts,
        )
        self.measurements.append(measurement)
        self._check_measurement(measurement)
        _progress(
            f"[{spec.key}] {connections} connections, {email_mode} emails: "
            f"{result.requests_per_second:.0f} req/s, "
            f"p50 {result.latency_us['p50'] / 1000:.2f} ms, "
            f"p99 {result.latency_us['p99'] / 1000:.2f} ms, non-2xx {result.non_2xx}, "
            f"socket errors {result.socket_errors}, server {cores['server']:.2f} cores, "
            f"other processes {other_cores:.2f} cores"
        )

    def _check_measurement(self, measurement: Measurement) -> None:
        name = f"{measurement.peer} at {measurement.connections} connections"
        counts = measurement.upstream_counts
        if measurement.wrk.non_2xx or measurement.wrk.socket_errors:
            self.problems.append(
                f"{name}: {measurement.wrk.non_2xx} non-2xx responses and "
                f"{measurement.wrk.socket_errors} socket errors"
            )
        expected_kind = "tokenized" if measurement.tokenizes else "raw"
        wrong = counts["requests"] - counts[expected_kind]
        if wrong:
            self.problems.append(
                f"{name}: {wrong} of {counts['requests']} bodies reached the upstream "
                f"not {expected_kind}"
            )
        if counts["luhn_invalid"] or counts["invalid_json"]:
            self.problems.append(
                f"{name}: the upstream received {counts['luhn_invalid']} card numbers failing "
                f"the Luhn check and {counts['invalid_json']} invalid JSON bodies"
            )

    def profile(self, spec: PeerSpec, peer: RunningPeer, connections: int) -> None:
        raw_file = self.output / f"profile-{spec.key}.txt"
        recorder = hotspots.start_recording(peer.server.pid, self.options.duration, raw_file)
        run_wrk(
            peer.url,
            connections=connections,
            duration_s=self.options.duration,
            run_id=self._next_run_id(),
            email_mode="unique",
            script=str(BENCH_DIR / "checkout.lua"),
        )
        _, errors = recorder.communicate(timeout=self.options.duration + 60)
        if recorder.returncode != 0:
            self.problems.append(
                f"py-spy failed on {spec.key} with status {recorder.returncode}: "
                f"{errors.decode(errors='replace').strip()[-500:]}"
            )
            return
        summary = hotspots.summarize(raw_file, self.options.duration)
        (self.output / f"profile-{spec.key}-top.txt").write_text(summary + "\n")
        self.profiles[spec.key] = summary
        _progress(f"[{spec.key}] profile written to {raw_file}")


IDLE_BUSY_CORES = 0.25
"""Busy CPU, in cores, below which ``_wait_for_idle_machine`` counts the machine as idle. The
benchmark's own idle servers use about 0.01 cores."""


def _wait_for_idle_machine(max_wait_s: float) -> None:
    """Wait until the machine's busy CPU over 2 s falls below ``IDLE_BUSY_CORES``, or time is up."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy_before, steal_before = machine_cpu_seconds()
        time.sleep(2.0)
        busy_after, steal_after = machine_cpu_seconds()
        load = (busy_after - busy_before + steal_after - steal_before) / 2.0
        if load < IDLE_BUSY_CORES:
            return
        if time.monotonic() >= deadline:
            _progress(f"WARNING: other processes still use {load:.2f} cores; starting anyway")
            return
        _progress(f"waiting for an idle machine: other processes use {load:.2f} cores")
        time.sleep(3.0)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summarize_gateway_log(log_file: Path) -> dict[str, Any]:
    """Count the access log's statuses and group the warnings and errors of a vaultgate log.

    An error logged with a traceback is grouped under its message and the traceback's last
    line, which names the exception, so that different causes of one message stay apart.
    """
    statuses: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    pending: str | None = None
    exception_line = ""

    def flush() -> None:
        if pending is not None:
            messages[pending + (f" | {exception_line}" if exception_line else "")] += 1

    for line in log_file.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            # A traceback line; the last one before the next log line names the exception.
            if line.strip():
                exception_line = line.strip()[:300]
            continue
        flush()
        pending, exception_line = None, ""
        level, logger, message = match["level"], match["logger"], match["message"]
        levels[level] += 1
        if logger == "gateway.access":
            for item in message.split():
                if item.startswith("status="):
                    statuses[item.removeprefix("status=")] += 1
        elif level in ("WARNING", "ERROR", "CRITICAL"):
            pending = f"{level} {logger}: {message[:300]}"
    flush()
    return {
        "access_statuses": dict(statuses),
        "levels": dict(levels),
        "warnings_and_errors": dict(messages.most_common(10)),
    }


def _filesystem_of(path: Path) -> str:
    """Return the type and device of the mount that contains ``path``, from /proc/mounts."""
    best = ("", "unknown", "unknown")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount_point, kind = line.split()[:3]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, kind, device)
    return f"{best[1]} on {best[2]}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark vaultgate on the checkout route against a bare relay, "
        "mitmproxy and the upstream itself.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs after a 1 s warm-up, at 32 connections only (unless options below say)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole sequence of peers this many times and report medians (default 1)",
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per peer (default 3)")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(part) for part in text.split(",")],
        help="comma-separated connection counts (default 32,8,1)",
    )
    parser.add_argument(
        "--peers",
        type=lambda text: text.split(","),
        default=list(PEERS),
        help=f"comma-separated peers to run, from: {', '.join(PEERS)} (default all)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each peer, wait up to this many seconds until other processes use less "
        f"than {IDLE_BUSY_CORES} cores (default 0: do not wait)",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="run vaultgate without its access log (the shipped configuration has it on)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each vaultgate peer's runs, sample it with py-spy during one more run",
    )
    parser.add_argument(
        "--gateway-ref",
        metavar="REF",
        help="benchmark the gateway package and route files of this git commit or branch "
        "(default: a copy of the working tree, taken when the run starts)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="directory for results.json, results.md and profiles "
        "(default bench/results/<UTC time>)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="parent directory for the servers' data and logs; it must be on a real disk for "
        "the fsync costs to show (default: the system's temporary directory)",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the servers' data and logs afterwards (kept anyway when a check fails)",
    )
    options = parser.parse_args(argv)

    if options.duration is None:
        options.duration = 3.0 if options.quick else 10.0
    if options.warmup is None:
        options.warmup = 1.0 if options.quick else 3.0
    if options.connections is None:
        options.connections = [32] if options.quick else [32, 8, 1]
    unknown = [key for key in options.peers if key not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    if any(level < 1 for level in options.connections):
        parser.error("--connections must be positive integers")
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    if options.duration < 1:
        parser.error("--duration must be at least 1 second, because wrk counts whole seconds")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _parse_arguments(argv)
    wrk_executable()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = options.output or BENCH_DIR / "results" / stamp
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vaultgate-bench-", dir=options.workdir))
    filesystem = _filesystem_of(workdir)
    _progress(f"work directory {workdir} ({filesystem})")
    if filesystem.startswith("tmpfs"):
        _progress("WARNING: the work directory is on tmpfs, where fsync costs nothing")

    options.source_dir = workdir / "source"
    machine = machine_description()
    machine["workdir filesystem"] = filesystem
    benchmark = Benchmark(options, workdir, output)
    try:
        source = snapshot_gateway_source(options.source_dir, options.gateway_ref)
        machine["vaultgate source"] = source
        _progress(f"vaultgate source: {source}")
        benchmark.run()
    finally:
        if options.keep_workdir or benchmark.problems:
            _progress(f"kept the work directory {workdir} with the servers' logs and data")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    table = render_table(benchmark.measurements)
    verdicts = render_verdicts(benchmark.measurements)
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    _write_results(output, command.strip(), options, machine, benchmark, table, verdicts)

    print(table)
    print()
    for verdict in verdicts:
        print(verdict)
    print()
    busiest = max((m.other_cores for m in benchmark.measurements), default=0.0)
    if busiest > IDLE_BUSY_CORES:
        print(
            f"WARNING: other processes used up to {busiest:.2f} cores during a measured run "
            "(column 'other cores'), so those rows understate what this machine can do."
        )
        print()
    if benchmark.problems:
        print("Problems found:")
        for problem in benchmark.problems:
            print(f"- {problem}")
    else:
        print("Checks passed: every response was 2xx and every body reached the upstream as")
        print("expected (tokenized through vaultgate, unchanged through the others).")
    print(f"\nResults in {output}")
    return 1 if benchmark.problems else 0


def _write_results(
    output: Path,
    command: str,
    options: argparse.Namespace,
    machine: dict[str, str],
    benchmark: Benchmark,
    table: str,
    verdicts: list[str],
) -> None:
    settings = {
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "connections": options.connections,
        "peers": options.peers,
        "access_log": options.access_log,
        "wrk_threads": 1,
        "rounds": options.rounds,
        "wait_idle_s": options.wait_idle,
    }
    document = {
        "command": command,
        "settings": settings,
        "machine": machine,
        "measurements": [measurement.to_json() for measurement in benchmark.measurements],
        "warmups": benchmark.warmups,
        "verdicts": verdicts,
        "problems": benchmark.problems,
        "gateway_logs": benchmark.logs,
        "server_rss_mib": benchmark.memory,
    }
    (output / "results.json").write_text(json.dumps(document, indent=2) + "\n")

    machine_lines = [f"- {name}: {value}" for name, value in machine.items()]
    markdown = [
        f"Command: `{command}`",
        "",
        f"Settings: {settings}",
        "",
        *machine_lines,
        "",
        table,
        "",
        *[f"- {verdict}" for verdict in verdicts],
    ]
    if benchmark.profiles:
        for key, summary in benchmark.profiles.items():
            markdown += ["", f"Profile of {key}:", "", "```", summary, "```"]
    (output / "results.md").write_text("\n".join(markdown) + "\n")


if __name__ == "__main__":
    sys.exit(main())
