"""The forward benchmark's stand-in for api.stripe.com: an HTTPS aiohttp server.

It responds to ``POST /v1/payment_methods`` as Stripe does and counts what reached it: requests
whose ``card[cvc]`` is digits (``plain``, as vaultgate relays them) and those where it is a
``tok_`` token (``token``, as plain mitmproxy relays them). The CVC tells them apart because the
card number's token keeps the card number's format. ``GET /_bench/stats`` returns the
counters and the last form body received.

Run: ``python -m bench.forward.upstream --port PORT --cert CERT --key KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from urllib.parse import parse_qsl

from aiohttp import web

STATS_PATH = "/_bench/stats"


class StandIn:
    def __init__(self) -> None:
        self.counters = {"requests": 0, "plain": 0, "token": 0, "other": 0}
        self.last_body = ""

    async def payment_method(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        form = dict(parse_qsl(body))
        number = form.get("card[number]", "")
        cvc = form.get("card[cvc]", "")
        self.counters["requests"] += 1
        if cvc.isdigit():
            self.counters["plain"] += 1
        elif cvc.startswith("tok_"):
            self.counters["token"] += 1
        else:
            self.counters["other"] += 1
        self.last_body = body
        return web.json_response(
            {
                "id": "pm_1BenchStandIn",
                "object": "payment_method",
                "type": "card",
                "card": {"last4": number[-4:], "exp_month": 12, "exp_year": 2030},
                "livemode": False,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.counters, "last_body": self.last_body})


async def serve(port: int, cert: str, key: str) -> None:
    stand_in = StandIn()
    app = web.Application()
    app.router.add_post("/v1/payment_methods", stand_in.payment_method)
    app.router.add_get(STATS_PATH, stand_in.stats)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.cert, arguments.key))


if __name__ == "__main__":
    main()
