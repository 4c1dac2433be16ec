"""Attacks on the policy through proxied routes, each checked at the upstream stand-in.

The tests paste tokens into fields of connections that their class may not reach and try
look-alike tokens. A client with a masked grant sends a card upstream, and concurrent requests
on several routes race the rate limit. Reveals are attempted while the audit file cannot be
written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.audit.verify import verify_audit_file
from gateway.errors import ConfigError
from gateway.server import Gateway
from gateway.tokens.keys import load_key_ring
from tests.harness import api_url, gateway_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.upstream import ReceivedRequest, RecordingUpstream

PAN = "4000002500003155"
EMAIL = "target.person@example.com"
NOTE = "vault combination 7-31-5"
remember_sensitive(PAN, EMAIL, NOTE)

BACKEND_KEY = "backend-key-0123456789"
SUPPORT_KEY = "support-key-0123456789"

POLICY = f"""\
clients:
  backend:
    keys: [{{secret: {BACKEND_KEY}}}]
    roles: [payments]
  support:
    keys: [{{secret: {SUPPORT_KEY}}}]
    roles: [support]
classes:
  card.pan: {{format: pan, mask: first6_last4, reveal_to: [pay]}}
  pii.email: {{format: uuid, deterministic: true, mask: email, reveal_to: [mail]}}
  secret.note: {{format: uuid, mask: full}}
roles:
  payments:
    grants:
      - {{actions: [tokenize, detokenize, delete], classes: ["*"], view: plain}}
  support:
    grants:
      - {{actions: [detokenize], classes: [card.pan], view: masked, rate_limit: 3/m}}
"""

ROUTES = {
    "pay.yaml": """\
connection: pay
upstream: {upstream}
mount: /pay
auth: {{header: X-Key, clients: [backend, support]}}
routes:
  - name: json
    match: {{path: /json}}
    request:
      - {{json: $.value, action: detokenize}}
  - name: form
    match: {{path: /form}}
    request:
      - {{form: value, action: detokenize}}
  - name: query
    match: {{path: /query}}
    request:
      - {{query: value, action: detokenize}}
  - name: header
    match: {{path: /header}}
    request:
      - {{header: X-Value, action: detokenize}}
""",
    "show.yaml": """\
connection: show
upstream: {upstream}
mount: /show
auth: {{header: X-Key, clients: [backend, support]}}
routes:
  - name: show
    match: {{path: /value}}
    response:
      - {{json: $.value, action: detokenize}}
""",
    "mail.yaml": """\
connection: mail
upstream: {upstream}
mount: /mail
auth: {{header: X-Key, clients: [backend]}}
routes:
  - name: send
    match: {{path: /json}}
    request:
      - {{json: $.value, action: detokenize}}
""",
}


@dataclass
class Setup:
    gateway: Gateway
    upstream: RecordingUpstream
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    """Tokens of PAN, EMAIL and NOTE by class name."""
    shown_token: str = ""
    """The token that the upstream returns in ``{"value": ...}`` for ``/show/value``."""

    @property
    def base(self) -> str:
        return gateway_url(self.gateway)

    def audit_records(self) -> list[dict[str, Any]]:
        path = self.gateway.config.audit.file
        assert path is not None
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    upstream = RecordingUpstream()
    await upstream.start()
    routes = {name: text.format(upstream=upstream.url) for name, text in ROUTES.items()}
    gateway = await start_gateway(tmp_path, routes, policy=POLICY)
    async with aiohttp.ClientSession(trust_env=False) as http:
        items = [
            {"value": PAN, "class": "card.pan"},
            {"value": EMAIL, "class": "pii.email"},
            {"value": NOTE, "class": "secret.note"},
        ]
        async with http.post(
            api_url(gateway) + "/v1/tokenize",
            json={"items": items},
            headers={"Authorization": f"Bearer {BACKEND_KEY}"},
        ) as response:
            assert response.status == 200
            tokens = [item["token"] for item in (await response.json())["items"]]
        classes = ["card.pan", "pii.email", "secret.note"]
        state = Setup(gateway, upstream, http, dict(zip(classes, tokens, strict=True)))

        async def respond(request: web.Request, received: ReceivedRequest) -> web.Response:
            # /value serves a stored token for the response route; every other path echoes the
            # request body, as an upstream that reflects its input in an error message does.
            if received.path_qs.startswith("/value"):
                return web.json_response({"value": state.shown_token})
            return web.Response(body=received.body, content_type="text/plain")

        upstream.respond = respond
        yield state
    await gateway.stop()
    await upstream.stop()


async def send_in_field(
    setup: Setup, selector: str, token: str, key: str = BACKEND_KEY
) -> tuple[int, str]:
    """Send ``token`` to the pay route of ``selector``; return the status and response text."""
    url = f"{setup.base}/pay/{selector}"
    headers = {"X-Key": key}
    request: Any
    if selector == "json":
        request = setup.http.post(url, json={"value": token}, headers=headers)
    elif selector == "form":
        request = setup.http.post(url, data={"value": token}, headers=headers)
    elif selector == "query":
        request = setup.http.get(url, params={"value": token}, headers=headers)
    else:
        request = setup.http.get(url, headers={**headers, "X-Value": token})
    async with request as response:
        return response.status, await response.text()


SELECTORS = ["json", "form", "query", "header"]


async def test_pasted_token_refused_in_every_field(setup: Setup) -> None:
    # The card token is revealable to pay, so each route works and the refusals below are
    # the policy's, not a broken route's.
    for selector in SELECTORS:
        status, _ = await send_in_field(setup, selector, setup.tokens["card.pan"])
        assert status == 200, selector
        last = setup.upstream.last
        assert PAN in last.body.decode() + last.path_qs + last.headers.get("X-Value", ""), selector
    relayed = len(setup.upstream.requests)

    for selector in SELECTORS:
        for class_name in ("pii.email", "secret.note"):
            status, text = await send_in_field(setup, selector, setup.tokens[class_name])
            case = (selector, class_name)
            assert status == 403, case
            assert EMAIL not in text, case
            assert NOTE not in text, case
    assert len(setup.upstream.requests) == relayed

    denied = [
        record
        for record in setup.audit_records()
        if record["action"] == "detokenize" and record["outcome"] == "denied"
    ]
    assert len(denied) == 2 * len(SELECTORS)


LOOKALIKES = {
    "upper case": str.upper,
    "leading space": lambda token: " " + token,
    "trailing space": lambda token: token + " ",
    "no-break space": lambda token: token + "\u00a0",
    "zero-width space": lambda token: token[:4] + "\u200b" + token[4:],
    "fullwidth letters": lambda token: token.translate(
        {ord(character): ord(character) + 0xFEE0 for character in "tok_"}
    ),
    "cyrillic o": lambda token: token.replace("o", "\u043e", 1),
}


async def test_lookalike_tokens_not_revealed(setup: Setup) -> None:
    token = setup.tokens["pii.email"]
    for name, change in LOOKALIKES.items():
        lookalike = change(token)
        assert lookalike != token, name
        async with setup.http.post(
            f"{setup.base}/mail/json", json={"value": lookalike}, headers={"X-Key": BACKEND_KEY}
        ) as response:
            status, text = response.status, await response.text()
        assert status == 422, name
        assert EMAIL not in text, name
    assert setup.upstream.requests == []

    # Digits of other scripts and separators in a card token do not find the card either.
    pan_token = setup.tokens["card.pan"]
    for lookalike in (
        pan_token.translate({ord(digit): ord(digit) + 0xFEE0 for digit in "0123456789"}),
        pan_token.translate({ord(digit): ord(digit) - ord("0") + 0x0660 for digit in "0123456789"}),
        f"{pan_token[:4]} {pan_token[4:8]} {pan_token[8:12]} {pan_token[12:]}",
        f"{pan_token[:4]}-{pan_token[4:]}",
    ):
        status, text = await send_in_field(setup, "json", lookalike)
        assert status == 422, lookalike
        assert PAN not in text, lookalike
    assert setup.upstream.requests == []


async def test_masked_grant_sends_no_plaintext_upstream(setup: Setup) -> None:
    status, text = await send_in_field(setup, "json", setup.tokens["card.pan"], key=SUPPORT_KEY)
    assert PAN not in text, status
    assert all(PAN.encode() not in request.body for request in setup.upstream.requests)


async def test_rate_limit_holds_across_routes_and_concurrency(setup: Setup) -> None:
    # support may detokenize 3 card tokens a minute, masked; 12 concurrent requests on the
    # response route share that bucket, and requests that would send the card upstream are
    # refused outright, without taking from it.
    setup.shown_token = setup.tokens["card.pan"]

    async def show() -> int:
        async with setup.http.get(
            f"{setup.base}/show/value", headers={"X-Key": SUPPORT_KEY}
        ) as response:
            await response.read()
            return response.status

    async def pay() -> int:
        status, _ = await send_in_field(setup, "json", setup.tokens["card.pan"], SUPPORT_KEY)
        return status

    shown = await asyncio.gather(*(show() for _ in range(12)))
    assert sorted(shown) == [200] * 3 + [429] * 9
    paid = await asyncio.gather(*(pay() for _ in range(3)))
    assert paid == [403, 403, 403]

    # The vault API draws from the same bucket.
    async with setup.http.post(
        api_url(setup.gateway) + "/v1/detokenize",
        json={"tokens": [setup.tokens["card.pan"]]},
        headers={"Authorization": f"Bearer {SUPPORT_KEY}"},
    ) as response:
        items = (await response.json())["items"]
    assert items[0]["error"]["type"] == "rate_limited"

    limited = [
        record
        for record in setup.audit_records()
        if record["outcome"] == "denied" and "rate limit" in (record["reason"] or "")
    ]
    assert len(limited) == 10


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make ``path`` immutable with chattr +i, so that every write to it fails, until the exit."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    result = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"chattr +i failed: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_no_reveal_while_audit_file_fails(setup: Setup) -> None:
    audit_file = setup.gateway.config.audit.file
    assert audit_file is not None
    setup.shown_token = setup.tokens["card.pan"]
    with immutable(audit_file):
        status, text = await send_in_field(setup, "json", setup.tokens["card.pan"])
        assert status == 503
        assert "audit_unavailable" in text
        assert setup.upstream.requests == []

        async with setup.http.get(
            f"{setup.base}/show/value", headers={"X-Key": BACKEND_KEY}
        ) as response:
            status, text = response.status, await response.text()
        assert status == 503
        assert PAN not in text

        async with setup.http.post(
            api_url(setup.gateway) + "/v1/detokenize",
            json={"tokens": list(setup.tokens.values())},
            headers={"Authorization": f"Bearer {BACKEND_KEY}"},
        ) as response:
            status, text = response.status, await response.text()
        assert status == 503
        for value in (PAN, EMAIL, NOTE):
            assert value not in text

        # A denial that cannot be recorded is not answered as a plain denial either.
        status, _ = await send_in_field(setup, "json", setup.tokens["secret.note"])
        assert status == 503

    # Once the file takes writes again, reveals resume and the chain has no gap.
    status, _ = await send_in_field(setup, "json", setup.tokens["card.pan"])
    assert status == 200
    config = setup.gateway.config
    key = load_key_ring(config.keys, base_dir=config.source.parent)
    assert verify_audit_file(audit_file, key.audit_key).ok


async def test_client_without_roles_refused(tmp_path: Path) -> None:
    upstream = RecordingUpstream()
    await upstream.start()
    policy = POLICY.replace("    roles: [support]\n", "    roles: []\n")
    routes = {name: text.format(upstream=upstream.url) for name, text in ROUTES.items()}
    try:
        with pytest.raises(ConfigError, match="client 'support' has no roles"):
            await start_gateway(tmp_path, routes, policy=policy)
    finally:
        await upstream.stop()
