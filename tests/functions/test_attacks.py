"""Attacks by and through function steps.

They try to escape the worker's confinement, capture another function's vault results, get
denied without an audit record, return bodies that dodge later field operations and hang the
worker. The last test checks that the forward proxy runs function steps too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import ConfigError
from tests.forward.harness import start_forward_gateway
from tests.functions.conftest import StartFunctions
from tests.harness import BACKEND_KEY, api_url, gateway_url
from tests.logcapture import remember_sensitive
from tests.upstream import RecordingUpstream

PAN = "4000002760003184"
DOCUMENT = "the merger closes on friday"
SSN = "078-05-1120"
remember_sensitive(PAN, DOCUMENT, SSN)

ONE_STEP_ROUTE = """\
connection: {name}
upstream: {upstream}
mount: /{name}
auth:
  clients: [backend]
routes:
  - name: run
    match: {{method: POST, path: /run}}
    request:
      - function: {function}
        {role}
"""


def one_step_route(
    upstream: RecordingUpstream, name: str, function: str, role: str = ""
) -> dict[str, str]:
    """A connection ``name`` mounted at ``/name`` whose POST /run runs one function step."""
    text = ONE_STEP_ROUTE.format(name=name, upstream=upstream.url, function=function, role=role)
    return {f"{name}.yaml": text}


async def post(client: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with client.post(url, json=body) as response:
        return response.status, await response.json()


def audit_records(gateway: Any) -> list[dict[str, Any]]:
    path = gateway.config.audit.file
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


# Module code that runs when the worker loads it, before the worker confines itself.
READS_KEY_FILE_AT_IMPORT = """\
import hashlib
import os

KEY_FILE = os.path.join(os.path.dirname(__file__), "..", "keys.yaml")
try:
    with open(KEY_FILE, "rb") as file:
        KEY_FILE_DIGEST = hashlib.sha256(file.read()).hexdigest()
except OSError as error:
    KEY_FILE_DIGEST = "denied: " + type(error).__name__


def transform(message):
    message["body"] = {"key_file_sha256": KEY_FILE_DIGEST}
    return message
"""

# A thread started at import keeps the rights the worker had before it confined itself.
THREAD_FROM_IMPORT = """\
import hashlib
import os
import queue
import threading

KEY_FILE = os.path.join(os.path.dirname(__file__), "..", "keys.yaml")
paths = queue.Queue()
digests = queue.Queue()


def read_digest(path):
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError as error:
        return "denied: " + type(error).__name__


def serve():
    while True:
        digests.put(read_digest(paths.get()))


threading.Thread(target=serve, daemon=True).start()


def transform(message):
    paths.put(KEY_FILE)
    message["body"] = {
        "direct": read_digest(KEY_FILE),
        "through_thread": digests.get(timeout=0.5),
    }
    return message
"""


async def test_module_import_cannot_read_key_file(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway = await start_with_functions(
        {"importer": READS_KEY_FILE_AT_IMPORT}, one_step_route(upstream, "importer", "importer")
    )
    status, body = await post(client, f"{gateway_url(gateway)}/importer/run", {})
    assert status == 200, body

    key_digest = hashlib.sha256((tmp_path / "gateway" / "keys.yaml").read_bytes()).hexdigest()
    relayed = json.loads(upstream.last.body)
    assert relayed["key_file_sha256"] != key_digest


async def test_thread_from_import_stays_confined(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway = await start_with_functions(
        {"threaded": THREAD_FROM_IMPORT}, one_step_route(upstream, "threaded", "threaded")
    )
    status, body = await post(client, f"{gateway_url(gateway)}/threaded/run", {})
    assert status == 200, body

    relayed = json.loads(upstream.last.body)
    # The calling thread is confined, so the thread from import must be too.
    assert relayed["direct"].startswith("denied: ")
    key_digest = hashlib.sha256((tmp_path / "gateway" / "keys.yaml").read_bytes()).hexdigest()
    assert relayed["through_thread"] != key_digest


SPY = """\
import sys

captured = []


def install():
    vault_client = sys.modules["__main__"].VaultClient
    if getattr(vault_client, "spied", False):
        return
    original = vault_client.detokenize

    def detokenize(self, tokens):
        values = original(self, tokens)
        captured.extend(values)
        return values

    vault_client.detokenize = detokenize
    vault_client.spied = True


def transform(message):
    install()
    message["body"] = {"captured": list(captured)}
    return message
"""

FETCH = """\
def transform(message, *, vault):
    body = message["body"]
    body["value"] = vault.detokenize([body.pop("token")])[0]
    return message
"""

ISOLATION_POLICY = f"""\
clients:
  backend:
    keys: [{{secret: {BACKEND_KEY}}}]
    roles: [intake]
classes:
  secret.doc: {{format: uuid, mask: full, reveal_to: [reader]}}
roles:
  intake:
    grants:
      - {{actions: [tokenize], classes: ["*"]}}
  doc-reader:
    grants:
      - {{actions: [detokenize], classes: [secret.doc], view: plain}}
"""


async def tokenize(gateway: Any, value: str, class_name: str) -> str:
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.post(
            api_url(gateway) + "/v1/tokenize",
            json={"items": [{"value": value, "class": class_name}]},
            headers={"Authorization": f"Bearer {BACKEND_KEY}"},
        ) as response,
    ):
        token: str = (await response.json())["items"][0]["token"]
    return token


async def test_spy_function_cannot_capture_reveals(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    routes = {
        **one_step_route(upstream, "reader", "fetch", "role: doc-reader"),
        **one_step_route(upstream, "spy", "spy"),
    }
    gateway = await start_with_functions(
        {"fetch": FETCH, "spy": SPY},
        routes,
        policy=ISOLATION_POLICY,
        functions="{dir: functions, workers: 1, timeout: 2s}",
    )
    token = await tokenize(gateway, DOCUMENT, "secret.doc")
    base = gateway_url(gateway)

    status, body = await post(client, f"{base}/spy/run", {})
    assert status == 200, body
    # The reader connection may receive the document, because its class names it in reveal_to.
    status, body = await post(client, f"{base}/reader/run", {"token": token})
    assert status == 200, body
    assert json.loads(upstream.last.body) == {"value": DOCUMENT}

    status, body = await post(client, f"{base}/spy/run", {})
    assert status == 200, body
    assert DOCUMENT not in upstream.last.body.decode()


async def test_vault_denial_without_role_is_audited(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    peek = """\
        def transform(message, *, vault):
            message["body"] = {"values": vault.detokenize([message["body"]["token"]])}
            return message
        """
    gateway = await start_with_functions({"peek": peek}, one_step_route(upstream, "peek", "peek"))
    token = await tokenize(gateway, PAN, "card.pan")

    status, body = await post(client, f"{gateway_url(gateway)}/peek/run", {"token": token})
    assert status == 403, body
    assert upstream.requests == []
    denied = [
        record
        for record in audit_records(gateway)
        if record["outcome"] == "denied" and record["operation"] == "function peek"
    ]
    assert len(denied) == 1


async def test_function_reveal_checks_connection(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    # The role may read secret.doc, but only the reader connection may receive it.
    routes = {
        **one_step_route(upstream, "reader", "fetch", "role: doc-reader"),
        **one_step_route(upstream, "elsewhere", "fetch", "role: doc-reader"),
    }
    gateway = await start_with_functions({"fetch": FETCH}, routes, policy=ISOLATION_POLICY)
    token = await tokenize(gateway, DOCUMENT, "secret.doc")

    status, body = await post(client, f"{gateway_url(gateway)}/elsewhere/run", {"token": token})
    assert status == 403, body
    assert DOCUMENT not in json.dumps(body)
    assert upstream.requests == []
    denied = [
        record
        for record in audit_records(gateway)
        if record["outcome"] == "denied" and record["connection"] == "elsewhere"
    ]
    assert [record["client"] for record in denied] == ["function:fetch"]


async def test_function_sees_no_gateway_key(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    headers_seen = """\
        def transform(message):
            message["body"] = {"headers": message["headers"]}
            return message
        """
    gateway = await start_with_functions(
        {"headers_seen": headers_seen}, one_step_route(upstream, "seen", "headers_seen")
    )
    status, body = await post(client, f"{gateway_url(gateway)}/seen/run", {})
    assert status == 200, body
    relayed = json.loads(upstream.last.body)
    assert "authorization" not in relayed["headers"]
    assert BACKEND_KEY not in upstream.last.body.decode()


RESHAPE = """\
def transform(message):
    body = message["body"]
    mode = body.pop("mode")
    number = body["card"]["number"]
    if mode == "raw":
        message["body_type"] = "raw"
        message["body"] = None
    elif mode == "text_content_type":
        message["headers"]["content-type"] = "text/plain"
    elif mode == "upper_case_keys":
        message["body"] = {"CARD": {"NUMBER": number}}
    elif mode == "no_body":
        message["body_type"] = "none"
        message["body"] = None
    elif mode == "form":
        message["body_type"] = "form"
        message["body"] = [["card[number]", number]]
    elif mode == "content_encoding":
        message["headers"]["content-encoding"] = "identity"
    elif mode == "latin1_charset":
        message["headers"]["content-type"] = "application/json; charset=latin1"
    return message
"""

RESHAPE_ROUTE = """\
connection: intake
upstream: {upstream}
mount: /intake
auth:
  clients: [backend]
routes:
  - name: run
    match: {{method: POST, path: /run}}
    request:
      - function: reshape
      - {{json: $.card.number, action: tokenize, class: card.pan, required: true}}
"""


async def test_function_body_cannot_skip_later_tokenize(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start_with_functions(
        {"reshape": RESHAPE}, {"intake.yaml": RESHAPE_ROUTE.format(upstream=upstream.url)}
    )
    url = f"{gateway_url(gateway)}/intake/run"
    modes = [
        "raw",
        "text_content_type",
        "upper_case_keys",
        "no_body",
        "form",
        "content_encoding",
        "latin1_charset",
    ]
    for mode in modes:
        status, body = await post(client, url, {"mode": mode, "card": {"number": PAN}})
        assert PAN not in json.dumps(body), mode
        if status == 200:
            assert PAN not in upstream.last.body.decode(), mode
    assert all(PAN.encode() not in request.body for request in upstream.requests)


HANGS = {
    "spins": """\
        def transform(message):
            while True:
                pass
        """,
    "reads_protocol_input": """\
        import sys

        def transform(message):
            sys.stdin.buffer.readline()
            return message
        """,
    "replies_twice": """\
        import os

        def transform(message):
            # A forged protocol reply on every descriptor that may carry the worker's output.
            for descriptor in range(3, 12):
                try:
                    os.write(descriptor, b'{"id": -1, "result": {}}\\n')
                except OSError:
                    pass
            return message
        """,
    "passes": """\
        def transform(message):
            message["body"] = {"ok": True}
            return message
        """,
}


async def test_hanging_function_times_out(
    start_with_functions: StartFunctions,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
) -> None:
    routes: dict[str, str] = {}
    for name in HANGS:
        routes.update(one_step_route(upstream, name.replace("_", "-"), name))
    gateway = await start_with_functions(
        HANGS, routes, functions="{dir: functions, workers: 2, timeout: 500ms}"
    )
    base = gateway_url(gateway)
    status, body = await post(client, f"{base}/spins/run", {})
    assert status == 504, body
    status, body = await post(client, f"{base}/reads-protocol-input/run", {})
    assert status == 504, body
    status, body = await post(client, f"{base}/replies-twice/run", {})
    assert status in (500, 504), body
    assert upstream.requests == []

    # Broken workers are replaced; retry while their replacements start.
    for _ in range(40):
        status, body = await post(client, f"{base}/passes/run", {})
        if status == 200:
            break
    assert status == 200, body
    assert json.loads(upstream.last.body) == {"ok": True}


SIGNUP_ROUTE = """\
connection: shop
upstream: {upstream}
mount: /shop
hosts: [shop.example]
routes:
  - name: signup
    match: {{method: POST, path: /signup}}
    request:
      - function: remove
        args: {{field: $.ssn}}
"""


async def test_forward_proxy_refuses_function_steps(tmp_path: Path) -> None:
    # The forward proxy does not run function steps, so a connection it serves may have none;
    # otherwise a field that a step removes in the reverse mode would reach the upstream.
    directory = tmp_path / "gateway"
    directory.mkdir()
    with pytest.raises(ConfigError, match="the forward proxy does not run function steps"):
        await start_forward_gateway(
            directory, {"shop.yaml": SIGNUP_ROUTE.format(upstream="http://127.0.0.1:9")}
        )
