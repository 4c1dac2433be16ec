"""Run ``vaultgate run --workers N`` as a subprocess on loopback and talk to its vault API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import BACKEND_KEY, default_policy
from tests.logcapture import subprocess_log_path
from tests.test_cli import ROOT, free_port

WAIT_SECONDS = 60.0
"""How long a wait for the gateway may take before the test fails as hung."""

ROUTE = """\
connection: shop
upstream: http://127.0.0.1:9
routes:
  - name: checkout
    match: {method: POST, path: /api/checkout}
    request:
      - {json: $.card.number, action: tokenize, class: card.pan}
"""


def write_config(directory: Path, store_url: str, *, workers: str = "1") -> Path:
    """Write a gateway configuration with free loopback ports; return its path.

    ``workers`` is the YAML value of ``listen.workers``.
    """
    (directory / "routes").mkdir(parents=True, exist_ok=True)
    (directory / "routes" / "shop.yaml").write_text(ROUTE)
    path = directory / "gateway.yaml"
    path.write_text(
        f"listen:\n"
        f"  reverse: 127.0.0.1:{free_port()}\n"
        f"  admin: 127.0.0.1:{free_port()}\n"
        f"  workers: {workers}\n"
        f"store: {{url: '{store_url}'}}\n"
        f"keys: {{file: keys.yaml, development: true}}\n"
        f"routes: [routes/*.yaml]\n"
        f"audit: {{file: audit.jsonl}}\n" + textwrap.dedent(default_policy(["shop"]))
    )
    return path


def wait_for(condition: Callable[[], bool], description: str) -> None:
    """Poll ``condition`` until it holds; fail the test as hung after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_SECONDS} s waiting for {description}")
        time.sleep(0.05)


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process; an unreaped zombie counts as ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class GatewayProcess:
    """A ``vaultgate run`` subprocess with its log in ``.test-logs``."""

    def __init__(self, config: Path, name: str, *arguments: str, env: dict[str, str] | None = None):
        self.config = config
        self.log_path = subprocess_log_path(name)
        self.log_path.write_text("")
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")
        }
        environment.update(env or {})
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(config), *arguments],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=log,
            )
        text = config.read_text()
        self.admin_port = int(text.split("admin: 127.0.0.1:")[1].split()[0])
        self.reverse_port = int(text.split("reverse: 127.0.0.1:")[1].split()[0])

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str) -> None:
        wait_for(lambda: text in self.log() or self.process.poll() is not None, repr(text))
        assert text in self.log(), f"the gateway exited with {self.process.returncode}"

    def wait_ready(self, workers: int) -> None:
        self.wait_for_log(f"{workers} workers ready")

    def worker_pid(self, index: int) -> int:
        """Return the process id of the latest worker ``index`` that the supervisor started."""
        marker = f"started worker {index} with pid "
        lines = [line for line in self.log().splitlines() if marker in line]
        assert lines, f"the supervisor started no worker {index}"
        return int(lines[-1].split(marker)[1].split()[0])

    def worker_pids(self) -> list[int]:
        """Return the process ids of the supervisor's children, the workers."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return sorted(int(pid) for pid in children.split())

    def wait(self) -> int:
        return self.process.wait(timeout=WAIT_SECONDS)

    def stop(self) -> int:
        """Send SIGTERM and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        """POST ``body`` to the vault API on a new connection and return the JSON response."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {BACKEND_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            result: dict[str, object] = json.loads(response.read())
            return result

    def tokenize(self, value: str) -> str:
        result = self.call("/v1/tokenize", {"items": [{"value": value, "class": "card.pan"}]})
        [item] = result["items"]  # type: ignore[misc]
        token: str = item["token"]
        return token

    def detokenize(self, token: str) -> str:
        result = self.call("/v1/detokenize", {"tokens": [token], "view": "plain"})
        [item] = result["items"]  # type: ignore[misc]
        value: str = item["value"]
        return value


def audit_lines(directory: Path, worker: int) -> list[dict[str, object]]:
    """Return the records of worker ``worker``'s audit file, or none when it has no file yet."""
    path = directory / f"audit.worker-{worker}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def connection_refused(port: int) -> bool:
    """Whether nothing listens on loopback ``port`` any more."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except urllib.error.URLError as error:
        return isinstance(error.reason, ConnectionRefusedError)
    return False
