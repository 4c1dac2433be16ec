"""``vaultgate run --workers N``: several gateway processes under one supervisor.

Each test runs the command as a subprocess on loopback ports and observes which worker served
a request through the workers' own audit files: ``audit.worker-N.jsonl`` gains a record from
the worker that served the request, before the response is sent.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.tokens.rotation import add_primary_key
from tests.logcapture import remember_sensitive
from tests.redis_server import RedisServer
from tests.supervisor.harness import (
    GatewayProcess,
    audit_lines,
    connection_refused,
    is_running,
    wait_for,
    write_config,
)
from tests.test_cli import free_port, vaultgate

MAX_REQUESTS = 200
"""Requests a test sends at most to reach a particular worker. The kernel hands each new
connection to whichever idle worker accepts first, which was either of two about equally often
in trial runs, so 200 tries that all miss one worker point to a fault."""
CARDS = [f"40000566556655{number:02d}" for number in range(100)]


@pytest.fixture(params=["redis", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tokens.db'}"
    server: RedisServer = request.getfixturevalue("private_redis_server")
    return server.url


@pytest.fixture
def two_workers(tmp_path: Path, store_url: str) -> Iterator[GatewayProcess]:
    config = write_config(tmp_path / "gw", store_url)
    gateway = GatewayProcess(config, f"supervisor-{tmp_path.name}", "--workers", "2")
    try:
        gateway.wait_ready(2)
        yield gateway
    finally:
        gateway.kill()


def tokenize_until_worker(gateway: GatewayProcess, directory: Path, worker: int) -> tuple[str, str]:
    """Tokenize new cards until worker ``worker`` served one; return that card and its token."""
    for attempt in range(MAX_REQUESTS):
        card = CARDS[attempt % len(CARDS)]
        remember_sensitive(card)
        before = len(audit_lines(directory, worker))
        token = gateway.tokenize(card)
        if len(audit_lines(directory, worker)) > before:
            return card, token
    pytest.fail(f"worker {worker} served none of {MAX_REQUESTS} tokenize requests")


def detokenize_until_worker(
    gateway: GatewayProcess, directory: Path, worker: int, token: str
) -> list[str]:
    """Detokenize ``token`` until worker ``worker`` served it; return every value revealed."""
    values = []
    for _ in range(MAX_REQUESTS):
        before = len(audit_lines(directory, worker))
        values.append(gateway.detokenize(token))
        records = audit_lines(directory, worker)[before:]
        if any(record["action"] == "detokenize" for record in records):
            return values
    pytest.fail(f"worker {worker} served none of {MAX_REQUESTS} detokenize requests")


def test_both_workers_serve_requests(two_workers: GatewayProcess, tmp_path: Path) -> None:
    directory = tmp_path / "gw"

    tokenize_until_worker(two_workers, directory, 1)
    tokenize_until_worker(two_workers, directory, 2)

    assert not (directory / "audit.jsonl").exists()
    assert len(two_workers.worker_pids()) == 2


def test_token_of_one_worker_detokenizes_at_other(
    two_workers: GatewayProcess, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"

    card_1, token_1 = tokenize_until_worker(two_workers, directory, 1)
    card_2, token_2 = tokenize_until_worker(two_workers, directory, 2)

    assert set(detokenize_until_worker(two_workers, directory, 2, token_1)) == {card_1}
    assert set(detokenize_until_worker(two_workers, directory, 1, token_2)) == {card_2}


def test_audit_verify_checks_every_worker_file(two_workers: GatewayProcess, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    tokenize_until_worker(two_workers, directory, 1)
    tokenize_until_worker(two_workers, directory, 2)
    assert two_workers.stop() == 0

    result = vaultgate("audit", "verify", "-c", str(two_workers.config))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{directory / 'audit.worker-1.jsonl'}: OK, ")
    assert lines[1].startswith(f"{directory / 'audit.worker-2.jsonl'}: OK, ")


def test_killed_worker_is_replaced(two_workers: GatewayProcess, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    card, token = tokenize_until_worker(two_workers, directory, 1)
    killed, survivor = two_workers.worker_pid(1), two_workers.worker_pid(2)
    records_before = len(audit_lines(directory, 1))

    os.kill(killed, signal.SIGKILL)
    two_workers.wait_for_log(f"worker 1 (pid {killed}) was killed by SIGKILL")
    wait_for(lambda: two_workers.worker_pid(1) != killed, "a replacement of worker 1")
    replacement = two_workers.worker_pid(1)
    two_workers.wait_for_log(f"[worker 1] ready, pid {replacement}")

    assert sorted(two_workers.worker_pids()) == sorted([replacement, survivor])
    assert set(detokenize_until_worker(two_workers, directory, 1, token)) == {card}
    assert set(detokenize_until_worker(two_workers, directory, 2, token)) == {card}
    assert two_workers.stop() == 0
    # The replacement continued the chain of the worker it replaced, in the same file.
    records = audit_lines(directory, 1)
    assert len(records) > records_before
    assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
    verified = vaultgate("audit", "verify", "-c", str(two_workers.config))
    assert verified.returncode == 0, verified.stderr


def test_sigterm_stops_every_worker(two_workers: GatewayProcess) -> None:
    workers = {index: two_workers.worker_pid(index) for index in (1, 2)}
    assert sorted(workers.values()) == two_workers.worker_pids()

    assert two_workers.stop() == 0

    assert not [pid for pid in workers.values() if is_running(pid)]
    assert connection_refused(two_workers.admin_port)
    assert connection_refused(two_workers.reverse_port)
    log = two_workers.log()
    for index, pid in workers.items():
        assert f"worker {index} (pid {pid}) exited with status 0" in log
        assert f"[worker {index}] stopped" in log


def test_sighup_reaches_every_worker(two_workers: GatewayProcess, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    add_primary_key(directory / "keys.yaml")

    two_workers.process.send_signal(signal.SIGHUP)

    reloaded = "reloaded the key ring; new records are sealed under master key version 2"
    two_workers.wait_for_log(f"[worker 1] {reloaded}")
    two_workers.wait_for_log(f"[worker 2] {reloaded}")
    two_workers.wait_for_log("[worker 1] reloaded 1 connections")
    two_workers.wait_for_log("[worker 2] reloaded 1 connections")
    card, token = tokenize_until_worker(two_workers, directory, 2)
    assert two_workers.detokenize(token) == card


def test_killed_supervisor_takes_workers_along(two_workers: GatewayProcess) -> None:
    workers = two_workers.worker_pids()

    two_workers.kill()

    # Linux sends each worker SIGTERM when the supervisor dies (PR_SET_PDEATHSIG).
    wait_for(lambda: not any(is_running(pid) for pid in workers), "the workers to stop")
    wait_for(lambda: connection_refused(two_workers.admin_port), "the listener to close")


def test_workers_from_config_with_variable(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "gw", f"sqlite:///{tmp_path / 'tokens.db'}", workers="${WORKERS:-1}"
    )
    gateway = GatewayProcess(config, "supervisor-config", env={"WORKERS": "3"})
    try:
        gateway.wait_ready(3)
        assert len(gateway.worker_pids()) == 3
        assert gateway.stop() == 0
    finally:
        gateway.kill()
    assert "[worker 3] stopped" in gateway.log()


def test_port_in_use_fails_before_workers(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw", f"sqlite:///{tmp_path / 'tokens.db'}")
    occupied_socket = socket.socket()
    occupied_socket.bind(("127.0.0.1", 0))
    occupied_socket.listen()
    port = occupied_socket.getsockname()[1]
    config.write_text(config.read_text().replace("admin: 127.0.0.1:", f"admin: 127.0.0.1:{port} #"))
    try:
        gateway = GatewayProcess(config, "supervisor-port", "--workers", "2")
        status = gateway.wait()
    finally:
        occupied_socket.close()

    assert status == 1
    log = gateway.log()
    assert f"not started: cannot listen on 127.0.0.1:{port}" in log
    assert "started worker" not in log


def run_with_locked_audit_file(tmp_path: Path, worker: int, name: str) -> GatewayProcess:
    """Run two workers while another writer locks worker ``worker``'s audit file, so that
    worker fails to start; return the finished gateway."""
    directory = tmp_path / "gw"
    config = write_config(directory, f"sqlite:///{tmp_path / 'tokens.db'}")
    holder = (directory / f"audit.worker-{worker}.jsonl").open("ab")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        gateway = GatewayProcess(config, name, "--workers", "2")
        gateway.wait()
    finally:
        holder.close()
    return gateway


def test_worker_start_failure_stops_the_others(tmp_path: Path) -> None:
    # Worker 2 fails after worker 1 is ready.
    gateway = run_with_locked_audit_file(tmp_path, 2, "supervisor-failure")

    assert gateway.wait() == 1
    log = gateway.log()
    first = gateway.worker_pid(1)
    assert f"[worker 1] ready, pid {first}" in log
    assert "is locked by another writer" in log
    assert "not started: worker 2 (pid" in log
    assert "exited with status 1 before it was ready" in log
    assert not is_running(first)
    assert not is_running(gateway.worker_pid(2))


def test_first_worker_failure_starts_no_other(tmp_path: Path) -> None:
    # Worker 1 fails while it starts alone.
    gateway = run_with_locked_audit_file(tmp_path, 1, "supervisor-first-failure")

    assert gateway.wait() == 1
    log = gateway.log()
    assert "not started: worker 1 (pid" in log
    assert "worker 2" not in log


def test_replacement_backs_off_until_fixed(two_workers: GatewayProcess, tmp_path: Path) -> None:
    key_file = tmp_path / "gw" / "keys.yaml"
    key_text = key_file.read_text()
    killed = two_workers.worker_pid(1)
    # Replacements read the key file at start, so a broken one makes each of them fail.
    key_file.write_text("format: [")

    os.kill(killed, signal.SIGKILL)
    two_workers.wait_for_log("starting a replacement in 0.5 s (death 1 in a row)")
    two_workers.wait_for_log("starting a replacement in 1.0 s (death 2 in a row)")
    two_workers.wait_for_log("starting a replacement in 2.0 s (death 3 in a row)")
    key_file.write_text(key_text)
    wait_for(lambda: two_workers.worker_pid(1) in two_workers.worker_pids(), "a live worker 1")
    two_workers.wait_for_log(f"[worker 1] ready, pid {two_workers.worker_pid(1)}")

    assert len(two_workers.worker_pids()) == 2
    assert "[worker 1] not started: " in two_workers.log()
    assert two_workers.stop() == 0


def test_port_in_use_named_by_one_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw", f"sqlite:///{tmp_path / 'tokens.db'}")
    occupied_socket = socket.socket()
    occupied_socket.bind(("127.0.0.1", 0))
    occupied_socket.listen()
    port = occupied_socket.getsockname()[1]
    config.write_text(config.read_text().replace("admin: 127.0.0.1:", f"admin: 127.0.0.1:{port} #"))
    try:
        gateway = GatewayProcess(config, "single-port")
        status = gateway.wait()
    finally:
        occupied_socket.close()

    assert status == 1
    log = gateway.log()
    assert f"not started: cannot listen on 127.0.0.1:{port} (listen.admin): " in log
    assert "Errno" not in log


def test_invalid_config_starts_no_worker(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw", "mysql://nowhere")

    gateway = GatewayProcess(config, "supervisor-invalid", "--workers", "2")

    assert gateway.wait() == 1
    log = gateway.log()
    assert "not a supported store" in log
    assert "not started" in log
    assert "started worker" not in log


def test_forward_listener_only_in_worker_one(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    config = write_config(directory, f"sqlite:///{tmp_path / 'tokens.db'}")
    forward_port = free_port()
    config.write_text(
        config.read_text().replace(
            "  workers: 1\n", f"  workers: 1\n  forward: 127.0.0.1:{forward_port}\n"
        )
        + f"forward: {{ca_dir: {directory / 'ca'}}}\n"
    )
    gateway = GatewayProcess(config, "supervisor-forward", "--workers", "2")
    try:
        gateway.wait_ready(2)
        gateway.wait_for_log(
            f"[worker 1] forward proxy listening on http://127.0.0.1:{forward_port}"
        )
        # Worker 2 logs its listeners before the line that reports it ready.
        gateway.wait_for_log(f"[worker 2] ready, pid {gateway.worker_pid(2)}")
        assert "[worker 2] forward proxy listening" not in gateway.log()
        with socket.create_connection(("127.0.0.1", forward_port), timeout=5):
            pass
        assert gateway.stop() == 0
    finally:
        gateway.kill()
