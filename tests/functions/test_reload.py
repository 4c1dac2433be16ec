"""Reloading route files and function modules without a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import aiohttp

from gateway.functions.reload import reload_routes
from tests.functions.conftest import StartFunctions
from tests.harness import gateway_url
from tests.logcapture import subprocess_log_path
from tests.upstream import RecordingUpstream

ROUTES = """\
connection: shop
upstream: {upstream}
mount: /
routes:
  - name: label
    match: {{method: POST, path: /label}}
    request:
      - function: label
"""


def label_module(text: str) -> str:
    return f'def transform(message):\n    message["body"]["label"] = "{text}"\n    return message\n'


async def test_reload_applies_new_function_and_routes(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway = await start_with_functions(
        {"label": label_module("old")}, {"shop.yaml": ROUTES.format(upstream=upstream.url)}
    )
    base = gateway_url(gateway)
    async with client.post(f"{base}/label", json={}) as response:
        assert response.status == 200
    assert json.loads(upstream.last.body) == {"label": "old"}

    directory = tmp_path / "gateway"
    (directory / "functions" / "label.py").write_text(label_module("new"))
    routes = (
        ROUTES.format(upstream=upstream.url)
        + "      - function: set\n        args: {field: $.extra, value: 1}\n"
    )
    (directory / "routes" / "shop.yaml").write_text(routes)
    assert await reload_routes(gateway)
    async with client.post(f"{base}/label", json={}) as response:
        assert response.status == 200
    assert json.loads(upstream.last.body) == {"label": "new", "extra": 1}


async def test_reload_with_problem_keeps_running_routes(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway = await start_with_functions(
        {"label": label_module("old")}, {"shop.yaml": ROUTES.format(upstream=upstream.url)}
    )
    directory = tmp_path / "gateway"
    (directory / "routes" / "shop.yaml").write_text(
        ROUTES.format(upstream=upstream.url).replace("function: label", "function: missing")
    )
    assert not await reload_routes(gateway)

    (directory / "routes" / "shop.yaml").write_text(ROUTES.format(upstream=upstream.url))
    (directory / "functions" / "label.py").write_text("import not_a_module\n" + label_module("x"))
    assert not await reload_routes(gateway)

    async with client.post(f"{gateway_url(gateway)}/label", json={}) as response:
        assert response.status == 200
    assert json.loads(upstream.last.body) == {"label": "old"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def post_label(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/label",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status)


def test_sighup_reloads_a_running_gateway(tmp_path: Path) -> None:
    upstream_port, port = free_port(), free_port()
    stand_in = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[2] / "scripts/echo-upstream.py"),
            str(upstream_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    (tmp_path / "routes").mkdir()
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "label.py").write_text(label_module("old"))
    (tmp_path / "routes" / "shop.yaml").write_text(
        ROUTES.format(upstream=f"http://127.0.0.1:{upstream_port}")
    )
    (tmp_path / "gw.yaml").write_text(
        textwrap.dedent(
            f"""\
            listen: {{reverse: '127.0.0.1:{port}', admin: 'off'}}
            store: {{url: 'sqlite:///{tmp_path / "tokens.db"}'}}
            keys: {{file: keys.yaml, development: true}}
            functions: {{dir: functions, workers: 1}}
            """
        )
    )
    log_path = subprocess_log_path("functions-sighup")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")}
    with log_path.open("a") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(tmp_path / "gw.yaml")],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert post_label(port) == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            (tmp_path / "functions" / "label.py").write_text(label_module("new"))
            gateway.send_signal(signal.SIGHUP)
            while "reloaded 1 connections" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            assert post_label(port) == 200
        finally:
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(timeout=30) == 0
            stand_in.terminate()
            printed, _ = stand_in.communicate(timeout=10)
    assert '"label":"old"' in printed.replace(" ", "")
    assert '"label":"new"' in printed.replace(" ", "")
