"""The shipped configuration in forward mode, with the official SDKs and curl as clients.

The clients keep calling https://api.stripe.com and https://checkout-test.adyen.com with tokens,
through the forward listener and trusting the gateway's CA. The shipped route files send those
hosts to local HTTPS stand-ins (STRIPE_API_BASE, ADYEN_CHECKOUT_BASE) whose certificates come
from a test CA, which the route files' upstream_ca names. The stand-ins must receive the cards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import Adyen
import aiohttp
import pytest
import stripe

from gateway.config.loader import load_config
from gateway.server import Gateway
from tests.e2e.test_sdks import adyen_payment, stripe_payment_method
from tests.forward.certificates import TestCa
from tests.forward.harness import gateway_ca_file
from tests.logcapture import remember_sensitive
from tests.upstream import RecordingUpstream

ROOT = Path(__file__).resolve().parents[2]
BACKEND_KEY = "dev-backend-key"
"""The development default key of the client backend in config.example.yaml."""
VISA = "4242424242424242"
AMEX = "378282246310005"
remember_sensitive(VISA, AMEX)


@dataclass
class Deployment:
    gateway: Gateway
    stripe: RecordingUpstream
    adyen: RecordingUpstream

    @property
    def proxy(self) -> str:
        assert self.gateway.forward is not None
        return f"http://backend:{BACKEND_KEY}@127.0.0.1:{self.gateway.forward.address.port}"

    @property
    def ca_file(self) -> Path:
        return gateway_ca_file(self.gateway)


def copy_shipped_config(directory: Path, upstream_ca: Path) -> Path:
    """Copy config.example.yaml, routes/ and functions/ into ``directory``; the stripe and adyen
    route files get one more line, ``upstream_ca``, so that the gateway trusts the stand-ins."""
    shutil.copy(ROOT / "config.example.yaml", directory / "config.yaml")
    shutil.copytree(ROOT / "routes", directory / "routes")
    shutil.copytree(ROOT / "functions", directory / "functions")
    for name in ("stripe.yaml", "adyen.yaml"):
        with (directory / "routes" / name).open("a") as route_file:
            route_file.write(f"upstream_ca: {upstream_ca}\n")
    return directory / "config.yaml"


@pytest.fixture
async def deployment(
    tmp_path: Path,
    test_ca: TestCa,
    stripe_standin: RecordingUpstream,
    adyen_standin: RecordingUpstream,
) -> AsyncIterator[Deployment]:
    stripe_standin.respond = stripe_payment_method
    adyen_standin.respond = adyen_payment
    environ = {
        "VAULTGATE_LISTEN": "127.0.0.1:0",
        "VAULTGATE_ADMIN_LISTEN": "127.0.0.1:0",
        "VAULTGATE_FORWARD_LISTEN": "127.0.0.1:0",
        "VAULTGATE_CA_DIR": str(tmp_path / "ca"),
        "VAULTGATE_STORE": f"sqlite:///{tmp_path / 'tokens.db'}",
        "VAULTGATE_KEY_FILE": str(tmp_path / "keys.yaml"),
        "APP_UPSTREAM": "http://127.0.0.1:9",
        "STRIPE_API_BASE": stripe_standin.url,
        "ADYEN_CHECKOUT_BASE": adyen_standin.url,
    }
    config = load_config(copy_shipped_config(tmp_path, test_ca.cert_file), environ=environ)
    gateway = await Gateway.start(config)
    yield Deployment(gateway, stripe_standin, adyen_standin)
    await gateway.stop()


@pytest.fixture
def stripe_settings() -> Iterator[None]:
    """Restore the Stripe SDK's module settings, which other tests set too."""
    names = ("api_key", "api_base", "proxy", "ca_bundle_path", "max_network_retries")
    saved = {name: getattr(stripe, name) for name in names}
    stripe.default_http_client = None
    yield
    for name, value in saved.items():
        setattr(stripe, name, value)
    stripe.default_http_client = None


async def tokenize(deployment: Deployment, *items: tuple[str, str]) -> list[str]:
    """Tokenize (value, class) pairs through the vault API."""
    assert deployment.gateway.admin_address is not None
    url = f"http://127.0.0.1:{deployment.gateway.admin_address.port}/v1/tokenize"
    body = {"items": [{"value": value, "class": class_name} for value, class_name in items]}
    headers = {"Authorization": f"Bearer {BACKEND_KEY}"}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        result = await response.json()
    return [item["token"] for item in result["items"]]


def stripe_form(received: bytes) -> str:
    return received.decode().replace("%5B", "[").replace("%5D", "]")


@pytest.mark.usefixtures("stripe_settings")
async def test_stripe_sdk_with_proxy_setting(deployment: Deployment) -> None:
    number, cvc = await tokenize(deployment, (VISA, "card.pan"), ("123", "card.cvc"))

    def create_payment_method() -> Any:
        stripe.api_key = "sk_test_standin"
        stripe.api_base = "https://api.stripe.com"
        stripe.proxy = deployment.proxy
        stripe.ca_bundle_path = str(deployment.ca_file)
        stripe.max_network_retries = 0
        return stripe.PaymentMethod.create(
            type="card",
            card={"number": number, "exp_month": 12, "exp_year": 2030, "cvc": cvc},
        )

    payment_method = await asyncio.to_thread(create_payment_method)
    assert payment_method.id == "pm_1TestStandIn"
    assert payment_method.card.last4 == VISA[-4:]
    received = deployment.stripe.last
    assert f"card[number]={VISA}" in stripe_form(received.body)
    assert "card[cvc]=123" in stripe_form(received.body)
    assert received.path_qs == "/v1/payment_methods"
    assert received.headers["Host"] == "api.stripe.com"
    assert received.headers["Authorization"] == "Bearer sk_test_standin"
    assert "Proxy-Authorization" not in received.headers


@pytest.mark.usefixtures("stripe_settings")
async def test_stripe_sdk_unknown_token_is_422(deployment: Deployment) -> None:
    def create_payment_method() -> Any:
        stripe.api_key = "sk_test_standin"
        stripe.api_base = "https://api.stripe.com"
        stripe.proxy = deployment.proxy
        stripe.ca_bundle_path = str(deployment.ca_file)
        stripe.max_network_retries = 0
        return stripe.PaymentMethod.create(type="card", card={"number": "4242420000004242"})

    with pytest.raises(stripe.StripeError) as caught:
        await asyncio.to_thread(create_payment_method)
    assert caught.value.http_status == 422
    assert deployment.stripe.requests == []


async def test_adyen_sdk_through_environment(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    number, cvc = await tokenize(deployment, (AMEX, "card.pan"), ("7373", "card.cvc"))
    monkeypatch.setenv("HTTPS_PROXY", deployment.proxy)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.ca_file))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    def make_payment() -> Any:
        adyen = Adyen.Adyen()
        adyen.client.xapikey = "standin-api-key"
        adyen.client.platform = "test"
        return adyen.checkout.payments_api.payments(
            request={
                "amount": {"currency": "EUR", "value": 1999},
                "reference": "order-1",
                "merchantAccount": "StandInMerchant",
                "paymentMethod": {
                    "type": "scheme",
                    "number": number,
                    "cvc": cvc,
                    "expiryMonth": "03",
                    "expiryYear": "2030",
                    "holderName": "Jo Doe",
                },
            }
        )

    result = await asyncio.to_thread(make_payment)
    assert result.message["resultCode"] == "Authorised"
    received = deployment.adyen.last
    body = json.loads(received.body)
    assert body["paymentMethod"]["number"] == AMEX
    assert body["paymentMethod"]["cvc"] == "7373"
    assert received.path_qs.endswith("/payments")
    assert received.headers["Host"] == "checkout-test.adyen.com"
    assert received.headers["X-API-Key"] == "standin-api-key"
    assert "Proxy-Authorization" not in received.headers


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_over_http2(deployment: Deployment) -> None:
    [number] = await tokenize(deployment, (VISA, "card.pan"))
    arguments = [
        "curl", "--silent", "--show-error", "--http2",
        "--proxy", deployment.proxy,
        "--cacert", str(deployment.ca_file),
        "--user", "sk_test_standin:",
        "--data-urlencode", f"card[number]={number}",
        "--data", "type=card",
        "--write-out", "\n%{http_version} %{http_code}",
        "https://api.stripe.com/v1/payment_methods",
    ]  # fmt: skip
    environ = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    result = await asyncio.to_thread(
        subprocess.run, arguments, capture_output=True, text=True, timeout=30, env=environ
    )
    assert result.returncode == 0, result.stderr
    body, _, status_line = result.stdout.rpartition("\n")
    assert status_line == "2 200"
    assert json.loads(body)["card"]["last4"] == VISA[-4:]
    assert f"card[number]={VISA}" in stripe_form(deployment.stripe.last.body)
