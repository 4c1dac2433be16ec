"""Function failures through a listening gateway: each fails the request, names the function
and the reason, and sends nothing upstream; the pool replaces broken workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.functions.conftest import StartFunctions
from tests.harness import gateway_url
from tests.upstream import RecordingUpstream

ROUTES = """\
connection: shop
upstream: {upstream}
mount: /
auth:
  clients: [backend]
routes:
  - name: run
    match: {{method: POST, path: "/run/{{name}}"}}
    request:
      - function: {function}
        {role}
"""

SECRET_MARKER = "vaultgate-test-secret-0123456789"


def shop_routes(upstream: RecordingUpstream, function: str, role: str = "") -> dict[str, str]:
    return {
        f"{function}.yaml".replace("_", "-"): ROUTES.format(
            upstream=upstream.url, function=function, role=role
        )
        .replace("connection: shop", f"connection: {function.replace('_', '-')}")
        .replace("mount: /", f"mount: /{function}")
    }


async def post(client: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with client.post(url, json=body) as response:
        return response.status, await response.json()


FAILING = {
    "raises": """\
        def transform(message):
            secret = message["body"]["card"]
            raise KeyError(secret)
        """,
    "sleeps": """\
        import time

        def transform(message):
            time.sleep(30)
            return message
        """,
    "hogs_memory": """\
        def transform(message):
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        """,
    "returns_list": """\
        def transform(message):
            return [message]
        """,
    "returns_bad_header": """\
        def transform(message):
            message["headers"]["content-length"] = "5"
            return message
        """,
    "returns_set": """\
        def transform(message):
            message["body"]["x"] = {1, 2}
            return message
        """,
}


async def test_each_failure_names_function_and_reason(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    routes: dict[str, str] = {}
    for name in FAILING:
        routes.update(shop_routes(upstream, name))
    # Two seconds leave the worker that replaces the timed-out one time to start.
    gateway = await start_with_functions(
        FAILING, routes, functions="{dir: functions, workers: 1, timeout: 2s}"
    )
    base = gateway_url(gateway)
    card = "4242424242424242"

    expected = {
        "raises": (500, "function_failed", "function raises raised KeyError"),
        "sleeps": (504, "function_timeout", "function sleeps did not finish within 2 s"),
        "hogs_memory": (500, "function_failed", "function hogs_memory ran out of memory"),
        "returns_list": (500, "function_failed", "returned list, not a message dictionary"),
        "returns_bad_header": (500, "function_failed", "header content-length is set by the relay"),
        "returns_set": (500, "function_failed", "returned a value that is not JSON"),
    }
    for name, (status, error_type, message) in expected.items():
        got_status, body = await post(client, f"{base}/{name}/run/x", {"card": card})
        assert got_status == status, (name, body)
        assert body["error"]["type"] == error_type, (name, body)
        assert message in body["error"]["message"], (name, body)
        assert card not in json.dumps(body), name
    assert upstream.requests == []


async def test_worker_replaced_after_timeout(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    modules = {
        "maybe_sleep": """\
            import time

            def transform(message):
                if message["body"].get("sleep"):
                    time.sleep(30)
                message["body"]["pid_seen"] = True
                return message
            """
    }
    gateway = await start_with_functions(
        modules,
        shop_routes(upstream, "maybe_sleep"),
        functions="{dir: functions, workers: 1, timeout: 300ms}",
    )
    base = gateway_url(gateway)
    status, _ = await post(client, f"{base}/maybe_sleep/run/x", {"sleep": True})
    assert status == 504
    # The only worker was killed; the call below waits for its replacement within the limit
    # or fails, so retry until the new worker is up.
    for _ in range(50):
        status, body = await post(client, f"{base}/maybe_sleep/run/x", {"sleep": False})
        if status == 200:
            break
    assert status == 200, body
    assert json.loads(upstream.last.body) == {"sleep": False, "pid_seen": True}


async def test_function_finds_no_secrets(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway's own environment contains a secret, which its workers must not inherit.
    monkeypatch.setenv("VAULTGATE_TEST_SECRET", SECRET_MARKER)
    modules = {
        "snoop": """\
            import os

            def attempt(read):
                try:
                    return read()
                except OSError as error:
                    return "denied: " + type(error).__name__

            def transform(message, *, paths: list):
                found = {"environ": dict(os.environ)}
                for path in paths:
                    found[path] = attempt(lambda: open(path, encoding="utf-8", errors="replace").read())
                found["parent_environ"] = attempt(
                    lambda: open(f"/proc/{os.getppid()}/environ", "rb").read().decode("latin-1")
                )
                found["socket"] = attempt(lambda: __import__("socket").create_connection(("127.0.0.1", 9), 1) and "connected")
                message["body"] = found
                return message
            """
    }
    gateway_dir = tmp_path / "gateway"
    key_file = gateway_dir / "keys.yaml"
    config_file = gateway_dir / "gateway.yaml"
    routes = shop_routes(upstream, "snoop")
    routes["snoop.yaml"] = routes["snoop.yaml"].replace(
        "      - function: snoop\n",
        f"      - function: snoop\n        args: {{paths: ['{key_file}', '{config_file}', '/etc/shadow']}}\n",
    )
    gateway = await start_with_functions(modules, routes)
    status, body = await post(client, f"{gateway_url(gateway)}/snoop/run/x", {})
    assert status == 200, body

    found = json.loads(upstream.last.body)
    assert sorted(found["environ"]) == ["LANG", "LC_ALL", "PATH"]
    assert found[str(key_file)].startswith("denied: ")
    assert found[str(config_file)].startswith("denied: ")
    assert found["/etc/shadow"].startswith("denied: ")
    assert found["parent_environ"].startswith("denied: ")
    assert found["socket"].startswith("denied: ")
    key_text = key_file.read_text()
    assert key_text.strip()
    assert SECRET_MARKER not in upstream.last.body.decode()
    for line in key_text.splitlines():
        secret = line.partition(":")[2].strip()
        if len(secret) > 20:
            assert secret not in upstream.last.body.decode()


async def test_vault_class_outside_role_is_denied(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    modules = {
        "reveal": """\
            def transform(message, *, vault):
                message["body"]["values"] = vault.detokenize([message["body"]["token"]])
                return message
            """,
        "tokenize_card": """\
            def transform(message, *, vault):
                message["body"]["token"] = vault.tokenize([message["body"]["card"]], "card.pan")[0]
                return message
            """,
    }
    policy = """\
        clients:
          backend:
            keys: [{secret: backend-key-0123456789}]
            roles: [everything]
        classes:
          card.pan: {format: pan, reveal_to: [reveal, tokenize-card]}
          pii.email: {format: uuid, reveal_to: [reveal]}
        roles:
          everything:
            grants:
              - {actions: [tokenize, detokenize], classes: ["*"], view: plain}
          email-only:
            grants:
              - {actions: [tokenize, detokenize], classes: [pii.email], view: plain}
        """
    routes = {
        **shop_routes(upstream, "reveal", "role: email-only"),
        **shop_routes(upstream, "tokenize_card", "role: email-only"),
    }
    gateway = await start_with_functions(modules, routes, policy=policy)
    base = gateway_url(gateway)

    async with client.post(
        f"http://127.0.0.1:{gateway.admin_address.port}/v1/tokenize",  # type: ignore[union-attr]
        json={"items": [{"value": "4242424242424242", "class": "card.pan"}]},
    ) as response:
        token = (await response.json())["items"][0]["token"]

    status, body = await post(client, f"{base}/reveal/run/x", {"token": token})
    assert status == 403, body
    assert "function reveal was denied a vault request" in body["error"]["message"]
    assert "may not detokenize class 'card.pan'" in body["error"]["message"]

    status, body = await post(client, f"{base}/tokenize_card/run/x", {"card": "4242424242424242"})
    assert status == 403, body
    assert "may not tokenize class 'card.pan'" in body["error"]["message"]
    assert upstream.requests == []
