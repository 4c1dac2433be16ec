"""Start and stop the benchmark's server processes, each on a free loopback port.

Every server runs in its own process with its output in a log file in the work directory.
``ServerProcess`` also reads the CPU time and resident memory of a process from ``/proc``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
EXAMPLE_CONFIG = "config.example.yaml"
SNAPSHOT_PATHS = ("gateway", "routes", "functions", EXAMPLE_CONFIG)
"""Top-level paths that ``snapshot_gateway_source`` copies where they exist: the package, the
route files, the functions directory that later example configurations name, and the example
configuration that the vaultgate peers run with."""
ACCESS_LOG_ON = "  access_log: true"
START_TIMEOUT = 30.0
"""Seconds that a server may take to accept connections (mitmproxy's first start makes a CA)."""
STOP_TIMEOUT = 15.0
"""Seconds between SIGTERM and SIGKILL when a server is stopped."""
RESERVED_PORTS = frozenset({6379})
"""Ports that ``free_port`` never returns, because a shared Redis server may listen on 6379."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def machine_cpu_seconds() -> tuple[float, float]:
    """Return the busy and the steal CPU time of all CPUs since boot, from /proc/stat.

    Busy is user, nice, system, irq and softirq time. Steal is time that the hypervisor gave
    to other guests while this one was ready to run.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS, steal / _CLOCK_TICKS


def free_port() -> int:
    """Return a TCP port on loopback that was free a moment ago."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def venv_executable(name: str) -> str:
    """Return the path of a console script next to this Python, or from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: install it into this Python's environment")
    return found


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_file: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """Return the user plus system CPU time so far of the process and its descendants.

        The descendants are vaultgate's workers under ``--workers`` and its function workers.
        """
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.pid))

    def rss_bytes(self) -> int:
        """Return the resident set size of the process and its descendants, from statm.

        Pages that forked workers share with the supervisor count once per process, so for
        several processes this overstates the memory in use.
        """
        return sum(_rss_bytes(pid) for pid in _process_tree(self.pid))

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log file)"

    def stop(self) -> None:
        """Stop the process with SIGTERM, and with SIGKILL if it is still running after a while."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(
                f"{self.name} did not stop within {STOP_TIMEOUT} s of SIGTERM, so it gets SIGKILL",
                file=sys.stderr,
            )
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def _process_tree(pid: int) -> list[int]:
    """Return ``pid`` and the ids of its live descendants, from /proc/PID/task/*/children."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # The thread ended.
        for child in children:
            found += _process_tree(int(child))
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0  # The process ended since the tree was read.
    # utime and stime are fields 14 and 15 of proc_pid_stat(5), and the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _rss_bytes(pid: int) -> int:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0
    return resident_pages * _PAGE_SIZE


def launch(
    name: str,
    arguments: list[str],
    workdir: Path,
    port: int,
    *,
    environment: dict[str, str] | None = None,
    ready_probe: bytes | None = None,
) -> ServerProcess:
    """Start ``arguments`` with output to ``workdir/name.log`` and wait until ``port`` accepts.

    With ``ready_probe`` the server counts as ready once a reply to that request starts with
    ``+PONG`` (Redis replies ``-LOADING`` while it reads its append-only file).
    """
    log_file = workdir / f"{name}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {})},
            cwd=workdir,
        )
    server = ServerProcess(name, process, log_file, port)
    try:
        _wait_until_ready(server, ready_probe)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: ServerProcess, ready_probe: bytes | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.is_running():
            raise RuntimeError(
                f"{server.name} exited with status {server.process.returncode} before it "
                f"accepted connections. Log:\n{server.log_tail()}"
            )
        if _is_ready(server.port, ready_probe):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{server.name} did not accept connections on port {server.port} within "
        f"{START_TIMEOUT} s. Log:\n{server.log_tail()}"
    )


def _is_ready(port: int, ready_probe: bytes | None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            if ready_probe is None:
                return True
            connection.sendall(ready_probe)
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def snapshot_gateway_source(destination: Path, ref: str | None) -> str:
    """Copy the gateway package, route files and example configuration into ``destination``
    and return a description of where they came from.

    With ``ref`` the files come from that git commit, otherwise from the working tree as it is
    now. Either way every vaultgate peer of one run imports the same code, even when the
    working tree changes during the run. Raises ``RuntimeError`` when git fails.
    """
    destination.mkdir(parents=True)
    if ref is None:
        for name in SNAPSHOT_PATHS:
            source = REPO_DIR / name
            if not source.exists():
                continue
            if source.is_dir():
                shutil.copytree(
                    source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(source, destination / name)
        commit = _git("rev-parse", "--short", "HEAD").strip()
        changed = _git("status", "--porcelain", "--", *SNAPSHOT_PATHS).splitlines()
        if not changed:
            return f"working tree, clean at commit {commit}"
        names = ", ".join(line[3:] for line in changed)
        return f"working tree at commit {commit} with uncommitted changes: {names}"

    commit = _git("rev-parse", "--short", f"{ref}^{{commit}}").strip()
    # git archive fails on a path that the commit does not have, so ask for the present ones.
    present = set(_git("ls-tree", "--name-only", commit).splitlines())
    paths = [name for name in SNAPSHOT_PATHS if name in present]
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", commit, *paths],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return f"git commit {commit} ({ref})"


def _git(*arguments: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO_DIR), *arguments], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(arguments)} failed: {completed.stderr.strip()}")
    return completed.stdout


def start_upstream(workdir: Path) -> ServerProcess:
    port = free_port()
    arguments = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port)]
    return launch("upstream", arguments, workdir, port)


def start_relay(workdir: Path, upstream_url: str) -> ServerProcess:
    port = free_port()
    arguments = [
        sys.executable, str(BENCH_DIR / "relay.py"), "--port", str(port), "--upstream", upstream_url
    ]  # fmt: skip
    return launch("relay", arguments, workdir, port)


def start_mitmproxy(workdir: Path, upstream_url: str) -> ServerProcess:
    """Start mitmdump as a reverse proxy: quiet, no flow file, its CA kept in the work directory."""
    port = free_port()
    confdir = workdir / "mitmproxy"
    confdir.mkdir(exist_ok=True)
    arguments = [
        venv_executable("mitmdump"),
        "--mode", f"reverse:{upstream_url}",
        "--listen-host", HOST,
        "--listen-port", str(port),
        "--quiet",
        "--set", f"confdir={confdir}",
        "--set", "flow_detail=0",
    ]  # fmt: skip
    return launch("mitmproxy", arguments, workdir, port)


def start_redis(workdir: Path, name: str, appendfsync: str) -> ServerProcess:
    """Start a private redis-server with the append-only file on and ``appendfsync`` as given."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: install Debian's redis-server package")
    port = free_port()
    data_dir = workdir / name
    data_dir.mkdir(exist_ok=True)
    arguments = [
        executable,
        "--bind", HOST,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
    ]  # fmt: skip
    return launch(name, arguments, workdir, port, ready_probe=b"*1\r\n$4\r\nPING\r\n")


def start_vaultgate(
    workdir: Path,
    name: str,
    store_url: str,
    upstream_url: str,
    *,
    source_dir: Path,
    access_log: bool,
    workers: int = 1,
) -> ServerProcess:
    """Start ``vaultgate run`` with the shipped example configuration, relaying to ``upstream_url``.

    ``source_dir`` is a directory made by ``snapshot_gateway_source``. The gateway imports its
    package from there and loads ``config.example.yaml`` there, with its shipped routes,
    limits, logging and audit settings. The environment variables that the file reads set the
    listen address and the store, give this gateway its own development key file and audit
    file, and turn the admin listener off. Commits whose example file reads fewer of them
    ignore the rest. ``workers`` above 1 adds ``--workers``, which commits before that option
    reject.
    """
    port = free_port()
    gateway_dir = workdir / name
    gateway_dir.mkdir(exist_ok=True)
    config_file = source_dir / EXAMPLE_CONFIG
    if not access_log:
        config_file = _without_access_log(config_file)
    arguments = [sys.executable, "-m", "gateway", "run", "-c", str(config_file)]
    if workers > 1:
        arguments += ["--workers", str(workers)]
    environment = {
        "PYTHONPATH": str(source_dir),
        "APP_UPSTREAM": upstream_url,
        "VAULTGATE_LISTEN": f"{HOST}:{port}",
        "VAULTGATE_ADMIN_LISTEN": "off",
        "VAULTGATE_FORWARD_LISTEN": "off",
        "VAULTGATE_CA_DIR": str(gateway_dir / "ca"),
        "VAULTGATE_STORE": store_url,
        "VAULTGATE_KEY_FILE": str(gateway_dir / "keys.yaml"),
        "VAULTGATE_AUDIT_FILE": str(gateway_dir / "audit.jsonl"),
        "VAULTGATE_DEVELOPMENT": "true",
        "VAULTGATE_LOG_LEVEL": "INFO",
    }
    return launch(name, arguments, gateway_dir, port, environment=environment)


def _without_access_log(config_file: Path) -> Path:
    """Write a copy of the example configuration with the access log off, beside the original."""
    text = config_file.read_text()
    if text.count(ACCESS_LOG_ON) != 1:
        raise RuntimeError(
            f"{config_file} does not contain the line {ACCESS_LOG_ON.strip()!r} exactly once, "
            "so --no-access-log cannot turn the access log off"
        )
    copy = config_file.with_name("config.no-access-log.yaml")
    copy.write_text(text.replace(ACCESS_LOG_ON, ACCESS_LOG_ON.replace("true", "false")))
    return copy
