"""The whole path with the shipped configuration and the official Stripe and Adyen SDKs.

A browser-style checkout posts card data through the gateway to the company's backend, which
receives tokens. The backend then calls Stripe and Adyen through the gateway with those tokens,
using the unmodified SDKs, and the provider stand-ins receive the real card numbers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import Adyen
import aiohttp
import pytest
import stripe
from aiohttp import web

from gateway.config.loader import load_config
from gateway.server import Gateway
from tests.data import load_test_card_rows
from tests.upstream import ReceivedRequest, RecordingUpstream

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Card:
    pan: str
    brand: str


def load_test_cards() -> list[Card]:
    return [Card(row["pan"], row["brand_or_scenario"]) for row in load_test_card_rows()]


CARDS = load_test_cards()
BACKEND_KEY = "dev-backend-key"
"""The development default key of the client backend in config.example.yaml."""


async def stripe_payment_method(request: web.Request, received: ReceivedRequest) -> web.Response:
    """Answer POST /v1/payment_methods as Stripe does, from what was received."""
    form = dict(await request.post())
    number = str(form.get("card[number]", ""))
    return web.json_response(
        {
            "id": "pm_1TestStandIn",
            "object": "payment_method",
            "type": "card",
            "card": {"last4": number[-4:], "exp_month": int(str(form.get("card[exp_month]", 0)))},
            "livemode": False,
        }
    )


async def adyen_payment(request: web.Request, received: ReceivedRequest) -> web.Response:
    return web.json_response({"pspReference": "PSP0000000000001", "resultCode": "Authorised"})


@dataclass
class Deployment:
    gateway: Gateway
    backend: RecordingUpstream
    stripe: RecordingUpstream
    adyen: RecordingUpstream

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.reverse_address.port}"


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    backend, stripe_upstream, adyen_upstream = (
        RecordingUpstream(),
        RecordingUpstream(),
        RecordingUpstream(),
    )
    stripe_upstream.respond = stripe_payment_method
    adyen_upstream.respond = adyen_payment
    for server in (backend, stripe_upstream, adyen_upstream):
        await server.start()

    environ = {
        "VAULTGATE_LISTEN": "127.0.0.1:0",
        "VAULTGATE_ADMIN_LISTEN": "127.0.0.1:0",
        "VAULTGATE_FORWARD_LISTEN": "off",
        "VAULTGATE_STORE": f"sqlite:///{tmp_path / 'tokens.db'}",
        "VAULTGATE_KEY_FILE": str(tmp_path / "keys.yaml"),
        "VAULTGATE_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
        "APP_UPSTREAM": backend.url,
        "STRIPE_API_BASE": stripe_upstream.url,
        "ADYEN_CHECKOUT_BASE": adyen_upstream.url,
    }
    config = load_config(ROOT / "config.example.yaml", environ=environ)
    gateway = await Gateway.start(config)
    yield Deployment(gateway, backend, stripe_upstream, adyen_upstream)
    await gateway.stop()
    for server in (backend, stripe_upstream, adyen_upstream):
        await server.stop()


async def post_checkout(deployment: Deployment, card: Card, cvc: str) -> dict[str, Any]:
    """Post the checkout form as a browser would; return what the backend received."""
    body = {
        "card": {
            "number": card.pan,
            "exp_month": 12,
            "exp_year": 2030,
            "cvc": cvc,
            "name": "Jo Doe",
        },
        "email": "jo.doe@example.com",
        "amount": 1999,
    }
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.post(f"{deployment.base}/api/checkout", json=body) as response,
    ):
        assert response.status == 200, await response.text()
    received: dict[str, Any] = json.loads(deployment.backend.last.body)
    return received


def stripe_create_payment_method(base: str, number_token: str, cvc_token: str) -> Any:
    stripe.api_key = "sk_test_standin"
    stripe.api_base = f"{base}/stripe"
    stripe.max_network_retries = 0
    return stripe.PaymentMethod.create(
        type="card",
        card={"number": number_token, "exp_month": 12, "exp_year": 2030, "cvc": cvc_token},
        headers={"X-Vaultgate-Key": BACKEND_KEY},
    )


def adyen_make_payment(base: str, number_token: str, cvc_token: str) -> Any:
    adyen = Adyen.Adyen()
    adyen.client.xapikey = "standin-api-key"
    adyen.client.platform = "test"
    adyen.checkout.payments_api.baseUrl = f"{base}/adyen/v72"
    return adyen.checkout.payments_api.payments(
        header_parameters={"Authorization": f"Bearer {BACKEND_KEY}"},
        request={
            "amount": {"currency": "EUR", "value": 1999},
            "reference": "order-1",
            "merchantAccount": "StandInMerchant",
            "paymentMethod": {
                "type": "scheme",
                "number": number_token,
                "cvc": cvc_token,
                "expiryMonth": "03",
                "expiryYear": "2030",
                "holderName": "Jo Doe",
            },
        },
    )


def test_every_card_length_is_present() -> None:
    assert {len(card.pan) for card in CARDS} >= {14, 15, 16, 19}


@pytest.mark.parametrize("card", CARDS, ids=[f"{card.pan[:6]}-{len(card.pan)}" for card in CARDS])
async def test_checkout_then_stripe_and_adyen(deployment: Deployment, card: Card) -> None:
    cvc = "7373" if len(card.pan) == 15 else "737"
    received = await post_checkout(deployment, card, cvc)

    assert card.pan.encode() not in deployment.backend.last.body
    number_token = received["card"]["number"]
    cvc_token = received["card"]["cvc"]
    assert number_token != card.pan
    assert len(number_token) == len(card.pan)
    assert number_token[:6] == card.pan[:6]
    assert number_token[-4:] == card.pan[-4:]
    assert cvc_token.startswith("tok_")
    assert received["card"]["name"].startswith("tok_")
    assert received["email"].startswith("tok_")
    assert received["amount"] == 1999

    payment_method = await asyncio.to_thread(
        stripe_create_payment_method, deployment.base, number_token, cvc_token
    )
    assert payment_method.id == "pm_1TestStandIn"
    assert payment_method.card.last4 == card.pan[-4:]
    stripe_form = deployment.stripe.last.body.decode()
    assert f"card[number]={card.pan}" in stripe_form.replace("%5B", "[").replace("%5D", "]")
    assert f"card[cvc]={cvc}" in stripe_form.replace("%5B", "[").replace("%5D", "]")
    assert deployment.stripe.last.headers["Authorization"] == "Bearer sk_test_standin"
    assert "X-Vaultgate-Key" not in deployment.stripe.last.headers
    assert deployment.stripe.last.path_qs == "/v1/payment_methods"

    result = await asyncio.to_thread(adyen_make_payment, deployment.base, number_token, cvc_token)
    assert result.message["resultCode"] == "Authorised"
    adyen_body = json.loads(deployment.adyen.last.body)
    assert adyen_body["paymentMethod"]["number"] == card.pan
    assert adyen_body["paymentMethod"]["cvc"] == cvc
    assert adyen_body["paymentMethod"]["holderName"] == "Jo Doe"
    assert deployment.adyen.last.path_qs == "/v72/payments"
    assert deployment.adyen.last.headers["X-API-Key"] == "standin-api-key"
    assert "Authorization" not in deployment.adyen.last.headers


async def test_adyen_encrypted_fields_pass_untouched(deployment: Deployment) -> None:
    encrypted = "adyenjs_0_1_25$" + "A" * 200
    adyen = Adyen.Adyen()
    adyen.client.xapikey = "standin-api-key"
    adyen.client.platform = "test"
    adyen.checkout.payments_api.baseUrl = f"{deployment.base}/adyen/v71"
    request = {
        "amount": {"currency": "EUR", "value": 1},
        "reference": "order-2",
        "merchantAccount": "StandInMerchant",
        "paymentMethod": {
            "type": "scheme",
            "encryptedCardNumber": encrypted,
            "encryptedSecurityCode": encrypted,
        },
    }
    await asyncio.to_thread(
        adyen.checkout.payments_api.payments,
        request=request,
        header_parameters={"Authorization": f"Bearer {BACKEND_KEY}"},
    )
    body = json.loads(deployment.adyen.last.body)
    assert body["paymentMethod"]["encryptedCardNumber"] == encrypted
    assert deployment.adyen.last.path_qs == "/v71/payments"


async def test_stripe_sdk_sees_clear_error_for_unknown_token(deployment: Deployment) -> None:
    with pytest.raises(stripe.StripeError) as caught:
        await asyncio.to_thread(
            stripe_create_payment_method, deployment.base, "4242420000004242", "tok_" + "0" * 32
        )
    assert caught.value.http_status == 422
    assert deployment.stripe.requests == []
