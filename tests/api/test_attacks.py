"""Attacks on the vault API.

The tests try Authorization header variants, view escalation, mixed batches, and rate limits
split across items and concurrent calls. They delete and erase with tricks, operate while the
audit file fails, tamper with the audit chain across restarts, and look for errors that echo
input. Two tests check what a short card's token and refused calls leave behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from gateway.audit.verify import verify_audit_file
from gateway.errors import AuditUnavailableError
from gateway.server import Gateway
from gateway.tokens.formats import luhn_check_digit
from gateway.tokens.keys import load_key_ring
from tests.harness import api_url, start_gateway
from tests.logcapture import remember_sensitive
from tests.policy.test_attacks import immutable
from tests.upstream import RecordingUpstream

PAN = "4000000000003220"
EMAIL = "erase.me@example.com"
NAME = "Jo Target"
NOTE = "alarm code 9-2-4-4"
SHORT_PANS = [payload + luhn_check_digit(payload) for payload in ("50180012345", "601100456789")]
"""A 12-digit and a 13-digit card number, as Maestro issues, both passing the Luhn check."""
remember_sensitive(PAN, EMAIL, NOTE, *SHORT_PANS)

KEYS = {
    "backend": "backend-key-0123456789",
    "support": "support-key-0123456789",
    "cleaner": "cleaner-key-0123456789",
    "viewer": "viewer-key-0123456789",
}

POLICY = f"""\
clients:
  backend:
    keys: [{{secret: {KEYS["backend"]}}}]
    roles: [payments]
  support:
    keys: [{{secret: {KEYS["support"]}}}]
    roles: [support]
  cleaner:
    keys: [{{secret: {KEYS["cleaner"]}}}]
    roles: [cleaner]
  viewer:
    keys: [{{secret: {KEYS["viewer"]}}}]
    roles: [viewer]
classes:
  card.pan: {{format: pan, mask: first6_last4, reveal_to: [pay]}}
  pii.email: {{format: uuid, deterministic: true, mask: email}}
  pii.name: {{format: uuid, deterministic: true, mask: first_letter}}
  secret.note: {{format: uuid, mask: full}}
roles:
  payments:
    grants:
      - {{actions: [tokenize, detokenize, delete], classes: ["*"], view: plain}}
  support:
    grants:
      - {{actions: [detokenize], classes: [card.pan, pii.email], view: masked, rate_limit: 3/m}}
  cleaner:
    grants:
      - {{actions: [delete], classes: [pii.name]}}
  viewer:
    grants:
      - {{actions: [detokenize], classes: [card.pan], view: masked}}
"""

ROUTE = """\
connection: pay
upstream: {upstream}
auth: {{clients: [backend]}}
routes: []
"""

UNAUTHORIZED = {
    "error": {
        "type": "unauthorized",
        "message": "missing or invalid API key in the Authorization header",
    }
}


@dataclass
class Api:
    gateway: Gateway
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    """Tokens of PAN, EMAIL, NAME and NOTE by class name, made by backend."""

    @property
    def base(self) -> str:
        return api_url(self.gateway)

    async def call(
        self, method: str, path: str, client: str | None, body: object = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {KEYS[client]}"} if client else {}
        url = URL(self.base + path, encoded=True)
        async with self.http.request(method, url, json=body, headers=headers) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def detokenize(
        self, client: str, tokens: list[str], view: object = None
    ) -> tuple[int, Any]:
        body: dict[str, object] = {"tokens": tokens}
        if view is not None:
            body["view"] = view
        return await self.call("POST", "/v1/detokenize", client, body)

    async def is_revealable(self, token: str) -> bool:
        _, body = await self.detokenize("backend", [token])
        return "value" in body["items"][0]

    def audit_records(self) -> list[dict[str, Any]]:
        path = self.gateway.config.audit.file
        assert path is not None
        return [json.loads(line) for line in path.read_text().splitlines()]


async def start(directory: Path, upstream: RecordingUpstream) -> Gateway:
    return await start_gateway(
        directory, {"pay.yaml": ROUTE.format(upstream=upstream.url)}, policy=POLICY
    )


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api(tmp_path: Path, upstream: RecordingUpstream) -> AsyncIterator[Api]:
    gateway = await start(tmp_path, upstream)
    async with aiohttp.ClientSession(trust_env=False) as http:
        state = Api(gateway, http, {})
        values = {"card.pan": PAN, "pii.email": EMAIL, "pii.name": NAME, "secret.note": NOTE}
        items = [{"value": value, "class": name} for name, value in values.items()]
        status, body = await state.call("POST", "/v1/tokenize", "backend", {"items": items})
        assert status == 200, body
        state.tokens = {
            name: item["token"] for name, item in zip(values, body["items"], strict=True)
        }
        yield state
    await gateway.stop()


async def test_authorization_variants(api: Api) -> None:
    key = KEYS["backend"]
    url = api.base + "/v1/detokenize"
    body = {"tokens": [api.tokens["pii.email"]]}
    accepted = [f"bearer {key}", f"BEARER {key}", f"Bearer   {key}", f"Bearer {key}   "]
    rejected: list[tuple[str, CIMultiDict[str]]] = [
        ("two headers", CIMultiDict([("Authorization", f"Bearer {key}")] * 2)),
        ("tab", CIMultiDict({"Authorization": f"Bearer\t{key}"})),
        ("no scheme", CIMultiDict({"Authorization": key})),
        ("other scheme", CIMultiDict({"Authorization": f"Token {key}"})),
        ("extra word", CIMultiDict({"Authorization": f"Bearer {key} x"})),
        ("list", CIMultiDict({"Authorization": f"Bearer {key}, Bearer {key}"})),
        (
            "basic",
            CIMultiDict(
                {"Authorization": "Basic " + base64.b64encode(f"backend:{key}".encode()).decode()}
            ),
        ),
        ("other header", CIMultiDict({"X-Api-Key": key})),
        ("empty bearer", CIMultiDict({"Authorization": "Bearer "})),
        ("wrong key", CIMultiDict({"Authorization": "Bearer wrong-key-0123456789"})),
        ("prefix of key", CIMultiDict({"Authorization": f"Bearer {key[:-1]}"})),
    ]

    for value in accepted:
        async with api.http.post(url, json=body, headers={"Authorization": value}) as response:
            assert response.status == 200, value
            assert (await response.json())["items"][0]["value"] == EMAIL

    denials_before = len(api.audit_records())
    for name, headers in rejected:
        async with api.http.post(url, json=body, headers=headers) as response:
            assert response.status == 401, name
            assert await response.json() == UNAUTHORIZED, name
    async with api.http.post(url, params={"access_token": key}, json=body) as response:
        assert response.status == 401
        assert await response.json() == UNAUTHORIZED

    new = api.audit_records()[denials_before:]
    assert [(record["action"], record["outcome"]) for record in new] == [
        ("authenticate", "denied")
    ] * (len(rejected) + 1)


async def test_view_cannot_escalate(api: Api) -> None:
    token = api.tokens["card.pan"]
    for view in ("PLAIN", "Plain", " plain ", "plain\n"):
        status, body = await api.detokenize("viewer", [token], view)
        assert status == 200, view
        assert body["items"] == [
            {"value": "400000******3220", "class": "card.pan", "view": "masked"}
        ], view

    for view in ("raw", "unmasked", "", ["plain"], {"view": "plain"}, 3, True, "plain,masked"):
        status, body = await api.detokenize("viewer", [token], view)
        assert status == 400, view
        assert PAN not in json.dumps(body), view

    # The API has no view per item, so such items are rejected, not obeyed.
    status, body = await api.call(
        "POST", "/v1/detokenize", "viewer", {"tokens": [{"token": token, "view": "plain"}]}
    )
    assert status == 400
    assert PAN not in json.dumps(body)


async def test_mixed_batch_denials_stay_per_item(api: Api) -> None:
    tokens = [
        api.tokens["card.pan"],
        api.tokens["secret.note"],
        "tok_" + "0" * 32,
        api.tokens["pii.name"],
        api.tokens["pii.email"],
    ]
    status, body = await api.detokenize("support", tokens)
    assert status == 200
    items = body["items"]
    assert items[0] == {"value": "400000******3220", "class": "card.pan", "view": "masked"}
    assert items[1]["error"]["type"] == "forbidden"
    assert items[2]["error"]["type"] == "invalid_token"
    assert items[3]["error"]["type"] == "forbidden"
    assert items[4] == {"value": "e*******@example.com", "class": "pii.email", "view": "masked"}
    text = json.dumps(body)
    for value in (PAN, NOTE, NAME, EMAIL):
        assert value not in text
    # No error names another item's token.
    for position, item in enumerate(items):
        if "error" in item:
            others = [token for index, token in enumerate(tokens) if index != position]
            assert not any(token in item["error"]["message"] for token in others)


async def test_rate_limit_batch_and_concurrency(api: Api) -> None:
    # support may detokenize 3 tokens a minute per class.
    status, body = await api.detokenize("support", [api.tokens["card.pan"]] * 5)
    assert status == 200
    outcomes = [item.get("view") or item["error"]["type"] for item in body["items"]]
    assert outcomes == ["masked"] * 3 + ["rate_limited"] * 2

    results = await asyncio.gather(
        *(api.detokenize("support", [api.tokens["pii.email"]]) for _ in range(10))
    )
    outcomes = [
        body["items"][0].get("view") or body["items"][0]["error"]["type"] for _, body in results
    ]
    assert sorted(outcomes) == ["masked"] * 3 + ["rate_limited"] * 7

    # A lesser view costs the same.
    _, body = await api.detokenize("support", [api.tokens["pii.email"]], "redacted")
    assert body["items"][0]["error"]["type"] == "rate_limited"


async def test_delete_path_tricks(api: Api) -> None:
    token, other = api.tokens["pii.email"], api.tokens["secret.note"]
    tricks = [
        f"/v1/tokens/{token}%20",
        f"/v1/tokens/%20{token}",
        f"/v1/tokens/{token.upper()}",
        f"/v1/tokens/{token}/",
        f"/v1/tokens/{token}%2F",
        f"/v1/tokens/..%2F{token}",
        f"/v1/tokens/{other}%2F..%2F{token}",
        "/v1/tokens/..%2Fdetokenize",
        "/v1/tokens/%2e%2e",
        f"/v1/tokens/{token}%00",
    ]
    for path in tricks:
        status, _ = await api.call("DELETE", path, "backend")
        assert status != 204, path
    assert await api.is_revealable(token)
    assert await api.is_revealable(other)

    # Clients without a delete grant on the class get 403, and the token stays.
    for client in ("support", "cleaner"):
        status, _ = await api.call("DELETE", f"/v1/tokens/{token}", client)
        assert status == 403, client
    status, _ = await api.call("DELETE", f"/v1/tokens/{token}", None)
    assert status == 401
    assert await api.is_revealable(token)


async def test_erase_stays_in_its_class(api: Api) -> None:
    # cleaner may delete pii.name only. Erasing pii.email is rejected, and erasing the email
    # value under pii.name finds nothing, because the index is kept per class.
    status, _ = await api.call(
        "POST", "/v1/erase", "cleaner", {"class": "pii.email", "values": [EMAIL]}
    )
    assert status == 403
    status, body = await api.call(
        "POST", "/v1/erase", "cleaner", {"class": "pii.name", "values": [EMAIL]}
    )
    assert (status, body) == (200, {"erased": 0})
    assert await api.is_revealable(api.tokens["pii.email"])

    status, _ = await api.call(
        "POST", "/v1/erase", "backend", {"class": "secret.note", "values": [NOTE]}
    )
    assert status == 400
    assert await api.is_revealable(api.tokens["secret.note"])

    status, body = await api.call(
        "POST", "/v1/erase", "cleaner", {"class": "pii.name", "values": [NAME]}
    )
    assert (status, body) == (200, {"erased": 1})
    assert not await api.is_revealable(api.tokens["pii.name"])


async def test_no_reveal_or_token_while_audit_fails(api: Api) -> None:
    audit_file = api.gateway.config.audit.file
    assert audit_file is not None
    with immutable(audit_file):
        status, body = await api.detokenize("backend", list(api.tokens.values()))
        assert status == 503
        assert body["error"]["type"] == "audit_unavailable"
        for value in (PAN, EMAIL, NAME, NOTE):
            assert value not in json.dumps(body)

        status, body = await api.call(
            "POST", "/v1/tokenize", "backend", {"items": [{"value": EMAIL, "class": "pii.email"}]}
        )
        assert status == 503
        assert api.tokens["pii.email"] not in json.dumps(body)

        status, body = await api.call("POST", "/v1/detokenize", None, {"tokens": ["x"]})
        assert status == 503


async def test_delete_not_performed_while_audit_fails(api: Api) -> None:
    audit_file = api.gateway.config.audit.file
    assert audit_file is not None
    token = api.tokens["secret.note"]
    with immutable(audit_file):
        status, _ = await api.call("DELETE", f"/v1/tokens/{token}", "backend")
        assert status == 503
    assert await api.is_revealable(token)


async def test_erase_not_performed_while_audit_fails(api: Api) -> None:
    audit_file = api.gateway.config.audit.file
    assert audit_file is not None
    with immutable(audit_file):
        status, _ = await api.call(
            "POST", "/v1/erase", "backend", {"class": "pii.email", "values": [EMAIL]}
        )
        assert status == 503
    assert await api.is_revealable(api.tokens["pii.email"])


async def restart_and_detokenize(directory: Path, upstream: RecordingUpstream, token: str) -> None:
    gateway = await start(directory, upstream)
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            await Api(gateway, http, {}).detokenize("backend", [token])
    finally:
        await gateway.stop()


def edit_line(path: Path, number: int) -> None:
    """Turn the outcome of 1-based line ``number`` of an audit file from allowed to denied."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"outcome":"allowed"' in lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(b'"outcome":"allowed"', b'"outcome":"denied"')
    path.write_bytes(b"".join(lines))


async def test_tampered_last_record_stops_restart(
    api: Api, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    audit_file = api.gateway.config.audit.file
    assert audit_file is not None
    await api.detokenize("backend", [api.tokens["card.pan"]])
    await api.gateway.stop()
    lines = audit_file.read_bytes().count(b"\n")
    edit_line(audit_file, lines)

    with pytest.raises(AuditUnavailableError, match="does not verify"):
        await start(tmp_path, upstream)


async def test_tampered_middle_record_found_after_restart(
    api: Api, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    audit_file = api.gateway.config.audit.file
    assert audit_file is not None
    await api.detokenize("backend", [api.tokens["card.pan"]])
    await api.gateway.stop()
    # Line 2 is the tokenize of EMAIL in the fixture.
    edit_line(audit_file, 2)

    # Only the last record is checked at start, so the gateway starts and appends.
    await restart_and_detokenize(tmp_path, upstream, api.tokens["pii.email"])
    key = load_key_ring(api.gateway.config.keys, base_dir=tmp_path).audit_key
    result = verify_audit_file(audit_file, key)
    assert result.bad_line == 2
    assert result.problem == "invalid mac"


async def test_errors_do_not_echo_misplaced_values(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # Deliberately not passed to remember_sensitive: this test expects it to reach the log.
    misplaced = "misplaced.value@example.org"
    caplog.set_level(logging.WARNING, logger="gateway.api")
    status, erase_body = await api.call(
        "POST", "/v1/erase", "backend", {"class": misplaced, "values": ["pii.email"]}
    )
    assert status == 400
    status, view_body = await api.detokenize("backend", [api.tokens["pii.email"]], misplaced)
    assert status == 400

    assert misplaced not in json.dumps(erase_body)
    assert misplaced not in json.dumps(view_body)
    assert misplaced not in caplog.text


async def test_short_card_token_hides_card(api: Api) -> None:
    # A 12- or 13-digit card keeps only its last four digits in a pan token: keeping the
    # first six too would leave two or three hidden digits, one of them fixed by Luhn.
    for pan in SHORT_PANS:
        items = [{"value": pan, "class": "card.pan"}] * 20
        status, body = await api.call("POST", "/v1/tokenize", "backend", {"items": items})
        assert status == 200
        tokens = [item["token"] for item in body["items"]]
        assert all(token[-4:] == pan[-4:] for token in tokens)
        assert len({token[:-4] for token in tokens}) > 10, f"{len(pan)} digits"


async def test_refused_tokenize_and_erase_are_audited(api: Api) -> None:
    before = len(api.audit_records())
    status, body = await api.call(
        "POST", "/v1/tokenize", "backend", {"items": [{"value": EMAIL, "class": "no.such"}]}
    )
    assert body["items"][0]["error"]["type"] == "invalid_value"
    after_tokenize = len(api.audit_records())
    status, _ = await api.call(
        "POST", "/v1/erase", "backend", {"class": "no.such", "values": [EMAIL]}
    )
    assert status == 400
    after_unknown_erase = len(api.audit_records())
    status, _ = await api.call(
        "POST", "/v1/erase", "backend", {"class": "secret.note", "values": [NOTE]}
    )
    assert status == 400
    after_note_erase = len(api.audit_records())

    assert after_tokenize == before + 1
    assert after_unknown_erase == after_tokenize + 1
    assert after_note_erase == after_unknown_erase + 1
