"""Benchmark: the unified-payments Stripe route with its function step, against the same
route without it, in one run.

It starts a stand-in Stripe upstream and a gateway on loopback (SQLite store, keys and
configuration in a temporary folder) and tokenizes a card through the vault API. Then it sends
requests one at a time, alternating between the two routes so that both meet the same machine
state:

- ``with function``: the shipped route, provider-neutral JSON to /pay/stripe; functions/
  to_stripe.py reshapes it into Stripe's form body in a worker process, then the card fields
  are detokenized.
- ``without function``: the backend sends Stripe's form body itself to /pay/stripe-form;
  only the detokenize runs.

It also times the function step alone (message to dictionary, worker round trip, checks of
the result) on the same message, inside the gateway process. Usage, from the repository root:

    .venv/bin/python bench/functions/run.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.loader import load_config
from gateway.engine.rewrite import MessageParts
from gateway.functions.message import HttpMessage
from gateway.policy.enforcer import Caller, Phase
from gateway.server import Gateway

ROOT = Path(__file__).resolve().parents[2]
BACKEND_KEY = "bench-backend-key-0123456789"
PAN = "4242424242424242"

CONFIG = """\
listen: {{reverse: '127.0.0.1:0', admin: '127.0.0.1:0'}}
store: {{url: 'sqlite:///{directory}/tokens.db'}}
keys: {{file: keys.yaml, development: true}}
routes: [routes/*.yaml]
functions: {{dir: {functions}, workers: 2, timeout: 1s, memory_limit: 256MiB}}
logging: {{level: WARNING, access_log: false}}
clients:
  backend:
    keys: [{{secret: {key}}}]
    roles: [payments]
classes:
  card.pan: {{format: pan, mask: first6_last4, reveal_to: [payments]}}
  card.cvc: {{format: uuid, ttl: 15m, mask: full, reveal_to: [payments]}}
  pii.name: {{format: uuid, mask: first_letter, reveal_to: [payments]}}
roles:
  payments:
    grants:
      - {{actions: [tokenize, detokenize], classes: [card.pan, card.cvc, pii.name], view: plain}}
"""

# The shipped route file plus the same route without its function step.
WITHOUT_FUNCTION = """\
  - name: stripe-form
    match: {method: POST, path: /stripe-form}
    request:
      - form: payment_method_data[card][number]
        action: detokenize
        required: true
      - form: payment_method_data[card][cvc]
        action: detokenize
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5) * 1000:7.3f} ms  "
        f"p90 {percentile(samples, 0.9) * 1000:7.3f} ms  "
        f"p99 {percentile(samples, 0.99) * 1000:7.3f} ms"
    )


async def start_stand_in() -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": "pi_bench", "status": "succeeded"})

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def main(requests: int) -> None:
    stand_in = await start_stand_in()
    stand_in_port = stand_in.addresses[0][1]
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        (directory / "routes").mkdir()
        shipped = (ROOT / "routes/unified-payments.yaml").read_text()
        (directory / "routes/payments.yaml").write_text(shipped + WITHOUT_FUNCTION)
        (directory / "gateway.yaml").write_text(
            CONFIG.format(directory=directory, functions=ROOT / "functions", key=BACKEND_KEY)
        )
        environ = {"STRIPE_API_BASE": f"http://127.0.0.1:{stand_in_port}"}
        gateway = await Gateway.start(load_config(directory / "gateway.yaml", environ=environ))
        try:
            await measure(gateway, requests)
        finally:
            await gateway.stop()
            await stand_in.cleanup()


async def measure(gateway: Gateway, requests: int) -> None:
    base = f"http://127.0.0.1:{gateway.reverse_address.port}"
    api = f"http://127.0.0.1:{gateway.admin_address.port}"  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {BACKEND_KEY}", "X-Provider-Key": "sk_test_bench"}
    async with aiohttp.ClientSession(headers=headers) as session:
        items = [{"value": PAN, "class": "card.pan"}, {"value": "123", "class": "card.cvc"}]
        async with session.post(f"{api}/v1/tokenize", json={"items": items}) as response:
            number, cvc = [item["token"] for item in (await response.json())["items"]]
        payment = {
            "amount": {"value": 1250, "currency": "EUR"},
            "reference": "order-17",
            "card": {"number": number, "cvc": cvc, "exp_month": 3, "exp_year": 2030},
        }
        form = {
            "amount": "1250",
            "currency": "eur",
            "confirm": "true",
            "capture_method": "automatic",
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": number,
            "payment_method_data[card][exp_month]": "3",
            "payment_method_data[card][exp_year]": "2030",
            "payment_method_data[card][cvc]": cvc,
            "metadata[reference]": "order-17",
        }

        async def send(with_function: bool) -> float:
            started = time.perf_counter()
            if with_function:
                call = session.post(f"{base}/pay/stripe", json=payment)
            else:
                call = session.post(f"{base}/pay/stripe-form", data=form)
            async with call as response:
                await response.read()
                assert response.status == 200, response.status
            return time.perf_counter() - started

        for _ in range(200):
            await send(True)
            await send(False)
        with_function: list[float] = []
        without_function: list[float] = []
        for _ in range(requests):
            with_function.append(await send(True))
            without_function.append(await send(False))

    step_alone = await time_function_step(gateway, payment, requests)
    difference = percentile(with_function, 0.5) - percentile(without_function, 0.5)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {cpu_model()}")
    print(f"{requests} requests per route, sequential, after 200 warm-up requests each")
    print(f"with function     {summary(with_function)}")
    print(f"without function  {summary(without_function)}")
    print(f"difference of p50 {difference * 1000:7.3f} ms per request")
    print(f"function step     {summary(step_alone)}  (timed alone in the gateway process)")


async def time_function_step(
    gateway: Gateway, payment: dict[str, object], count: int
) -> list[float]:
    """Time the step the way a request runs it: to a dictionary, a worker call, the checks."""
    import simplejson

    assert gateway.proxy is not None
    runner = gateway.proxy._steps
    connection = next(c for c in gateway.config.connections if c.name == "payments")
    route = next(r for r in connection.routes if r.name == "stripe")
    [step] = route.request_functions
    caller = Caller(None, "payments", "stripe")
    body = simplejson.dumps(payment).encode()
    samples = []
    for _ in range(200 + count):
        headers = CIMultiDict({"Content-Type": "application/json"})
        message = HttpMessage(MessageParts(headers, body, ""), "POST", "/stripe")
        started = time.perf_counter()
        await runner._run_function(step, message, caller, Phase.REQUEST)
        samples.append(time.perf_counter() - started)
    return samples[200:]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per route")
    asyncio.run(main(parser.parse_args().requests))
