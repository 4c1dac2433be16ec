"""The vaultgate command, run as a subprocess the way operators run it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.store.sqlite import SqliteStore
from gateway.tokens.keys import parse_key_file
from gateway.tokens.rotation import add_primary_key
from tests.logcapture import remember_sensitive, subprocess_log_path

ROOT = Path(__file__).resolve().parents[1]


def vaultgate(
    *arguments: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_check_accepts_example_config() -> None:
    result = vaultgate("check", "-c", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK, 7 connection(s), 10 route(s), 2 client(s), 5 class(es), 3 role(s)" in result.stdout
    assert "class 'pii.email' is revealed to no connection" in result.stderr


def test_check_requires_key_outside_development(tmp_path: Path) -> None:
    environment = {
        "VAULTGATE_DEVELOPMENT": "false",
        "VAULTGATE_KEY_FILE": str(tmp_path / "missing-keys.yaml"),
        "VAULTGATE_BACKEND_KEY": "backend-" + "k" * 40,
        "VAULTGATE_SUPPORT_KEY": "support-" + "k" * 40,
    }

    result = vaultgate("check", "-c", "config.example.yaml", env=environment)

    assert result.returncode == 1
    assert "no master key found" in result.stderr
    assert "OK," not in result.stdout
    assert not (tmp_path / "missing-keys.yaml").exists()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["check"], id="check"),
        pytest.param(["keys", "status"], id="keys-status"),
        pytest.param(["audit", "verify"], id="audit-verify"),
        pytest.param(["pipeline", "run", "spec.yaml", "in.csv", "-o", "out.csv"], id="pipeline"),
    ],
)
def test_missing_config_gets_one_message(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    result = vaultgate(*command, "-c", str(missing), cwd=tmp_path)

    assert result.returncode == 1
    assert f"vaultgate: configuration file {missing} not found in {tmp_path}" in result.stderr
    assert "pass one with -c (for example -c config.example.yaml)" in result.stderr


def test_check_lists_every_problem_with_line(tmp_path: Path) -> None:
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes/bad.yaml").write_text(
        "connection: bad\nupstream: http://127.0.0.1:1\nroutes:\n  - name: r\n    match: {path: /x}\n"
        "    request:\n      - {json: $.a, action: tokenize, format: card}\n"
        "    response:\n      - {json: $.a, action: detokenize}\n"
    )
    (tmp_path / "gateway.yaml").write_text("listen: {reverse: nowhere}\nroutes: [routes/*.yaml]\n")
    result = vaultgate("check", "-c", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "vaultgate: 3 configuration problem(s):"
    assert any("gateway.yaml:1: listen.reverse" in line for line in lines)
    assert any(
        "bad.yaml:7: unknown token format 'card'" in line and "use one of" in line for line in lines
    )
    assert any("bad.yaml:4:" in line and "sends plaintext" in line for line in lines)


def test_run_refuses_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("store: {url: 'mysql://x'}\nroutes: []\n")
    result = vaultgate("run", "-c", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 1
    assert "not a supported store" in result.stderr
    assert "not started" in result.stderr


def test_run_without_key_outside_development(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: keys.yaml, development: false}\nroutes: []\n"
    )
    result = vaultgate("run", "-c", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 1
    assert "not started" in result.stderr
    assert "vaultgate keys generate" in result.stderr
    assert not (tmp_path / "keys.yaml").exists()


def test_run_refuses_development_key_in_production(tmp_path: Path) -> None:
    generated = vaultgate("keys", "generate", "--development")
    (tmp_path / "keys.yaml").write_text(generated.stdout)
    (tmp_path / "keys.yaml").chmod(0o600)
    (tmp_path / "gateway.yaml").write_text(
        "keys: {file: keys.yaml, development: false}\nroutes: []\n"
    )
    result = vaultgate("run", "-c", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 1
    assert "development" in result.stderr.lower()


def test_keys_generate_prints_a_valid_key_file() -> None:
    result = vaultgate("keys", "generate")
    assert result.returncode == 0
    key_file = parse_key_file(result.stdout, source="stdout")
    assert key_file.development is False
    assert key_file.primary == 1
    assert vaultgate("keys", "generate").stdout != result.stdout


def test_version() -> None:
    result = vaultgate("--version")
    assert result.stdout.startswith("vaultgate ")


def test_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, forward_port = free_port(), free_port()
    log_path = subprocess_log_path("cli-run")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")}
    env.update(
        {
            "VAULTGATE_LISTEN": f"127.0.0.1:{port}",
            "VAULTGATE_ADMIN_LISTEN": "127.0.0.1:0",
            "VAULTGATE_FORWARD_LISTEN": f"127.0.0.1:{forward_port}",
            "VAULTGATE_CA_DIR": str(tmp_path / "ca"),
            "VAULTGATE_STORE": f"sqlite:///{tmp_path / 'tokens.db'}",
            "VAULTGATE_KEY_FILE": str(tmp_path / "keys.yaml"),
            "VAULTGATE_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
            "APP_UPSTREAM": "http://127.0.0.1:9",
        }
    )
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", "config.example.yaml"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            status = wait_for_status(f"http://127.0.0.1:{port}/stripe-nowhere", deadline=30)
            # No upstream listens on port 9, so the checkout connection answers 502.
            assert status == 502
            card = {"card": {"number": "4000056655665556"}}
            remember_sensitive("4000056655665556")
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/checkout",
                data=json.dumps(card).encode(),
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)  # noqa: S310
            caught.value.close()
            assert caught.value.code == 502
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    output = log_path.read_text()
    assert f"reverse proxy listening on http://127.0.0.1:{port}" in output
    assert f"forward proxy listening on http://127.0.0.1:{forward_port}" in output
    assert (tmp_path / "ca" / "vaultgate-ca.pem").stat().st_mode & 0o777 == 0o600
    assert "DEVELOPMENT key" in output
    assert "stopped" in output


def wait_for_status(url: str, *, deadline: float) -> int:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"the gateway did not answer at {url} within {deadline} s")


def wait_for_log(path: Path, text: str, *, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if text in path.read_text():
            return
        time.sleep(0.1)
    pytest.fail(f"{text!r} did not appear in {path} within {deadline} s")


def post_checkout(port: int, pan: str) -> int:
    """Post a card to the checkout route and return the status; 502 means it was tokenized."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/checkout",
        data=json.dumps({"card": {"number": pan}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    caught.value.close()
    return caught.value.code


def test_run_reloads_keys_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(vaultgate("keys", "generate").stdout)
    key_file.chmod(0o600)
    log_path = subprocess_log_path("cli-sighup")
    log_path.write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")}
    env.update(
        {
            "VAULTGATE_LISTEN": f"127.0.0.1:{port}",
            "VAULTGATE_STORE": f"sqlite:///{tmp_path / 'tokens.db'}",
            "VAULTGATE_KEY_FILE": str(key_file),
            "VAULTGATE_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
            "VAULTGATE_ADMIN_LISTEN": "127.0.0.1:0",
            "VAULTGATE_FORWARD_LISTEN": "off",
            "VAULTGATE_DEVELOPMENT": "false",
            "VAULTGATE_BACKEND_KEY": "backend-key-0123456789",
            "VAULTGATE_SUPPORT_KEY": "support-key-0123456789",
            "APP_UPSTREAM": "http://127.0.0.1:9",
        }
    )
    remember_sensitive("4000056655665556", "5555555555554444", "4242424242424242")
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", "config.example.yaml"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for_status(f"http://127.0.0.1:{port}/stripe-nowhere", deadline=30)
            # No upstream listens on port 9, so a checkout that was tokenized gets status 502.
            assert post_checkout(port, "4000056655665556") == 502

            add_primary_key(key_file)
            process.send_signal(signal.SIGHUP)
            wait_for_log(log_path, "sealed under master key version 2", deadline=30)
            assert post_checkout(port, "5555555555554444") == 502

            key_file.write_text("format: [")
            process.send_signal(signal.SIGHUP)
            wait_for_log(log_path, "key reload failed", deadline=30)
            assert post_checkout(port, "4242424242424242") == 502
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0

    output = log_path.read_text()
    assert "keeps master key versions 1, 2 with primary version 2" in output
    counts = asyncio.run(count_records(tmp_path / "tokens.db"))
    # The key-check record and the first card under version 1, the two later cards under 2.
    assert counts == {1: 2, 2: 2}


async def count_records(path: Path) -> dict[int, int]:
    store = SqliteStore(path, timeout=5.0)
    try:
        return await store.count_by_key_version()
    finally:
        await store.close()
