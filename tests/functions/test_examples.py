"""The shipped function examples, run from config.example.yaml through a listening gateway
with local stand-ins for the backend, Stripe, Adyen, a reservation system and a signing
service."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest

from gateway.config.loader import load_config
from gateway.engine.multipart import boundary_of, parse_multipart
from gateway.server import Gateway
from tests.harness import api_url, gateway_url
from tests.logcapture import remember_sensitive
from tests.upstream import RecordingUpstream

ROOT = Path(__file__).resolve().parents[2]
BACKEND_KEY = "dev-backend-key"
"""The development default key of the client backend in config.example.yaml."""
PAN = "4111111111111111"
CVC = "737"
HOLDER = "Jo Doe"
CONTRACT = b"%PDF-1.7\n" + bytes(range(256)) + b"\n%%EOF\n"


@dataclass
class Deployment:
    gateway: Gateway
    upstreams: dict[str, RecordingUpstream]

    @property
    def base(self) -> str:
        return gateway_url(self.gateway)


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    names = ("backend", "stripe", "adyen", "bookings", "signing")
    upstreams = {name: RecordingUpstream() for name in names}
    for server in upstreams.values():
        await server.start()
    environ = {
        "VAULTGATE_LISTEN": "127.0.0.1:0",
        "VAULTGATE_ADMIN_LISTEN": "127.0.0.1:0",
        "VAULTGATE_FORWARD_LISTEN": "off",
        "VAULTGATE_STORE": f"sqlite:///{tmp_path / 'tokens.db'}",
        "VAULTGATE_KEY_FILE": str(tmp_path / "keys.yaml"),
        "VAULTGATE_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
        "APP_UPSTREAM": upstreams["backend"].url,
        "STRIPE_API_BASE": upstreams["stripe"].url,
        "ADYEN_CHECKOUT_BASE": upstreams["adyen"].url,
        "BOOKINGS_UPSTREAM": upstreams["bookings"].url,
        "SIGNING_API_BASE": upstreams["signing"].url,
    }
    gateway = await Gateway.start(load_config(ROOT / "config.example.yaml", environ=environ))
    yield Deployment(gateway, upstreams)
    await gateway.stop()
    for server in upstreams.values():
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {BACKEND_KEY}"}
    async with aiohttp.ClientSession(trust_env=False, headers=headers) as session:
        yield session


async def tokenize(
    client: aiohttp.ClientSession, deployment: Deployment, items: list[tuple[str, str]]
) -> list[str]:
    # A three-digit CVC turns up in ports and hex tokens, so only longer values are searched for.
    remember_sensitive(*(value for value, _ in items if len(value) > 4))
    body = {"items": [{"value": value, "class": name} for value, name in items]}
    async with client.post(f"{api_url(deployment.gateway)}/v1/tokenize", json=body) as response:
        assert response.status == 200, await response.text()
        result = await response.json()
    return [item["token"] for item in result["items"]]


def neutral_payment(number: str, cvc: str, holder: str) -> dict[str, Any]:
    return {
        "amount": {"value": 1250, "currency": "EUR"},
        "reference": "order-17",
        "card": {"number": number, "cvc": cvc, "exp_month": 3, "exp_year": 2030, "holder": holder},
    }


# Unified payments


async def test_unified_payment_to_stripe(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    number, cvc, holder = await tokenize(
        client, deployment, [(PAN, "card.pan"), (CVC, "card.cvc"), (HOLDER, "pii.name")]
    )
    async with client.post(
        f"{deployment.base}/pay/stripe",
        json=neutral_payment(number, cvc, holder),
        headers={"X-Provider-Key": "sk_test_standin"},
    ) as response:
        assert response.status == 200, await response.text()

    received = deployment.upstreams["stripe"].last
    assert received.path_qs == "/v1/payment_intents"
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert received.headers["Authorization"] == "Bearer sk_test_standin"
    assert received.headers["Idempotency-Key"] == "order-17"
    assert "X-Provider-Key" not in received.headers
    form = dict(parse_qsl(received.body.decode(), strict_parsing=True))
    assert form == {
        "amount": "1250",
        "currency": "eur",
        "confirm": "true",
        "capture_method": "automatic",
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": PAN,
        "payment_method_data[card][exp_month]": "3",
        "payment_method_data[card][exp_year]": "2030",
        "payment_method_data[card][cvc]": CVC,
        "metadata[reference]": "order-17",
    }
    assert deployment.upstreams["adyen"].requests == []


async def test_unified_payment_to_adyen(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    number, cvc, holder = await tokenize(
        client, deployment, [(PAN, "card.pan"), (CVC, "card.cvc"), (HOLDER, "pii.name")]
    )
    async with client.post(
        f"{deployment.base}/pay/adyen",
        json=neutral_payment(number, cvc, holder),
        headers={"X-Provider-Key": "adyen-standin-key"},
    ) as response:
        assert response.status == 200, await response.text()

    received = deployment.upstreams["adyen"].last
    assert received.path_qs == "/v71/payments"
    assert received.headers["X-API-Key"] == "adyen-standin-key"
    assert "Authorization" not in received.headers
    assert json.loads(received.body) == {
        "amount": {"value": 1250, "currency": "EUR"},
        "reference": "order-17",
        "merchantAccount": "VaultgateDemo",
        "paymentMethod": {
            "type": "scheme",
            "number": PAN,
            "expiryMonth": "03",
            "expiryYear": "2030",
            "cvc": CVC,
            "holderName": HOLDER,
        },
    }
    assert deployment.upstreams["stripe"].requests == []


async def test_unified_payment_needs_gateway_key(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{deployment.base}/pay/stripe",
        json=neutral_payment("tok", "tok", "tok"),
        headers={"Authorization": "Bearer wrong-key"},
    ) as response:
        assert response.status == 401
    assert deployment.upstreams["stripe"].requests == []


# Date split


async def test_booking_dates_are_split(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    booking = {
        "departure": "2030-07-14T09:45:00+02:00",
        "traveler": {"name": "Jo Doe", "birth_date": "1990-03-05", "passport": "X1234567"},
        "internal_notes": "VIP",
    }
    async with client.post(f"{deployment.base}/bookings/reservations", json=booking) as response:
        assert response.status == 200, await response.text()

    assert json.loads(deployment.upstreams["bookings"].last.body) == {
        "traveler": {
            "name": "Jo Doe",
            "passport_number": "X1234567",
            "birth_day": 5,
            "birth_month": 3,
            "birth_year": 1990,
        },
        "departure_day": "14",
        "departure_month": "07",
        "departure_year": "2030",
        "departure_time": "09:45:00",
        "channel": "api",
    }


async def test_booking_with_bad_date_is_rejected(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    booking = {"departure": "14/07/2030", "traveler": {"birth_date": "1990-03-05"}}
    async with client.post(f"{deployment.base}/bookings/reservations", json=booking) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["type"] == "invalid_value"
    assert "$.departure is not an ISO 8601 date" in body["error"]["message"]
    assert deployment.upstreams["bookings"].requests == []


# Contract upload and signing


async def upload_contract(deployment: Deployment) -> str:
    """Upload a contract as a browser would; return the token the backend received."""
    form = aiohttp.FormData()
    form.add_field("customer", "cus_17")
    form.add_field("contract", CONTRACT, filename="contract-17.pdf", content_type="application/pdf")
    async with (
        aiohttp.ClientSession(trust_env=False) as browser,
        browser.post(f"{deployment.base}/contracts/upload", data=form) as response,
    ):
        assert response.status == 200, await response.text()

    received = deployment.upstreams["backend"].last
    assert CONTRACT not in received.body
    parsed = parse_multipart(received.body, boundary_of(received.headers["Content-Type"]))
    fields = {part.name: part for part in parsed.parts}
    assert fields["customer"].data == b"cus_17"
    assert fields["contract"].filename is None
    token = fields["contract"].data.decode()
    assert token.startswith("tok_")
    return token


async def test_contract_upload_then_multipart_signing(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    token = await upload_contract(deployment)
    request = {"contract": token, "signer_email": "jo@example.com", "subject": "Your contract"}
    async with client.post(f"{deployment.base}/signing/envelopes", json=request) as response:
        assert response.status == 200, await response.text()

    received = deployment.upstreams["signing"].last
    assert received.path_qs == "/envelopes"
    parsed = parse_multipart(received.body, boundary_of(received.headers["Content-Type"]))
    fields = {part.name: part for part in parsed.parts}
    assert sorted(fields) == ["contract", "signer_email", "subject"]
    assert fields["signer_email"].data == b"jo@example.com"
    assert fields["contract"].data == CONTRACT
    assert fields["contract"].filename == "contract-17.pdf"
    assert fields["contract"].content_type == "application/pdf"


async def test_contract_signing_as_base64_json(
    deployment: Deployment, client: aiohttp.ClientSession
) -> None:
    token = await upload_contract(deployment)
    request = {"contract": token, "signer_email": "jo@example.com"}
    async with client.post(f"{deployment.base}/signing/documents", json=request) as response:
        assert response.status == 200, await response.text()

    sent = json.loads(deployment.upstreams["signing"].last.body)
    assert sent["signer_email"] == "jo@example.com"
    assert sent["contract"]["filename"] == "contract-17.pdf"
    assert sent["contract"]["content_type"] == "application/pdf"
    assert base64.b64decode(sent["contract"]["content_base64"]) == CONTRACT


async def test_contract_upload_over_body_limit_is_rejected(deployment: Deployment) -> None:
    form = aiohttp.FormData()
    form.add_field("contract", io.BytesIO(b"x" * (1024 * 1024 + 1)), filename="big.pdf")
    async with (
        aiohttp.ClientSession(trust_env=False) as browser,
        browser.post(f"{deployment.base}/contracts/upload", data=form) as response,
    ):
        assert response.status == 413
    assert deployment.upstreams["backend"].requests == []
