"""A private redis-server for tests, on a free loopback port with its own data directory.

It runs with ``--appendonly yes --appendfsync always`` so that a write acknowledged before a
``kill -9`` is still there after ``restart``, which keeps the same port and directory.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
"""Seconds to wait for the server to reply to PING, including loading its append-only file."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process that a test can start, stop, kill and restart."""

    def __init__(self, directory: Path, *extra_args: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server is not installed, and the Redis store tests need a real one: run "
                "scripts/test, which installs it, or install Debian's redis-server package"
            )
        self.executable = executable
        self.directory = directory
        self.extra_args = extra_args
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start the server and return once it replies to PING."""
        assert self.process is None, "the server is already running"
        arguments = [
            self.executable,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL)
        self._wait_until_ready()

    def stop(self) -> None:
        """Stop the server with SIGTERM, which lets it flush and exit cleanly."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash or power cut would end it."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        if self.process is not None:
            self.stop()
        self.start()

    def _end(self, signal_number: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        self.process.wait(timeout=START_TIMEOUT)
        self.process = None

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {self.process.returncode}. "
                    f"Log:\n{self._log_tail()}"
                )
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"redis-server did not reply to PING within {START_TIMEOUT} s. Log:\n{self._log_tail()}"
        )

    def _answers_ping(self) -> bool:
        # A loading server replies -LOADING, so only +PONG counts as ready.
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as connection:
                connection.sendall(b"*1\r\n$4\r\nPING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log file)"
