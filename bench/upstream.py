"""The benchmark's upstream: a small aiohttp server that accepts checkout POSTs.

It parses every JSON body, as a real backend would, and counts what reached it. A body is
``tokenized`` when the card number's middle digits differ from the raw PAN's and the cvc, name
and email are vaultgate ``tok_`` tokens. It is ``raw`` when the body arrived as the client sent
it, and ``mixed`` otherwise. The load script sends the raw PAN's middle digits (between the
six-digit BIN and the last four) in the ``X-Bench-Pan-Middle`` header, because the ``pan`` token
format keeps the BIN and the last four digits and always changes the middle.

``GET /_bench/stats`` returns the counters and the last checkout body received.

Run: ``python bench/upstream.py --port PORT``; it stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

CHECKOUT_PATH = "/api/checkout"
STATS_PATH = "/_bench/stats"
PAN_MIDDLE_HEADER = "X-Bench-Pan-Middle"
TOKEN_PREFIX = "tok_"  # noqa: S105 - the uuid token format's prefix, not a credential


@dataclass
class Counters:
    requests: int = 0
    tokenized: int = 0
    raw: int = 0
    mixed: int = 0
    invalid_json: int = 0
    luhn_invalid: int = 0
    other_paths: int = 0


def is_luhn_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = ord(character) - 48
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def classify(body: dict[str, Any], pan_middle: str | None) -> str:
    """Return ``tokenized``, ``raw`` or ``mixed`` for one parsed checkout body."""
    card = body.get("card") or {}
    number = str(card.get("number", ""))
    pan_is_raw = pan_middle is not None and number[6:-4] == pan_middle
    token_fields = (card.get("cvc"), card.get("name"), body.get("email"))
    tokens = sum(
        isinstance(value, str) and value.startswith(TOKEN_PREFIX) for value in token_fields
    )
    if not pan_is_raw and tokens == len(token_fields):
        return "tokenized"
    if pan_is_raw and tokens == 0:
        return "raw"
    return "mixed"


class Upstream:
    def __init__(self) -> None:
        self.counters = Counters()
        self.last_body: Any = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path == STATS_PATH:
            return web.json_response({**asdict(self.counters), "last_body": self.last_body})
        if request.method != "POST" or request.path != CHECKOUT_PATH:
            self.counters.other_paths += 1
            return web.json_response({"error": "not found"}, status=404)

        raw_body = await request.read()
        # No await from here on, so a stats request never reads "requests" incremented without
        # the counter of the body's kind.
        self.counters.requests += 1
        try:
            body = json.loads(raw_body)
        except ValueError:
            self.counters.invalid_json += 1
            return web.json_response({"error": "invalid JSON"}, status=400)
        self.last_body = body

        kind = classify(body, request.headers.get(PAN_MIDDLE_HEADER))
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        number = str((body.get("card") or {}).get("number", ""))
        if not (number.isdigit() and is_luhn_valid(number)):
            self.counters.luhn_invalid += 1
        return web.json_response(
            {"status": "accepted", "order_id": body.get("order_id"), "amount": body.get("amount")}
        )


async def serve(port: int) -> None:
    upstream = Upstream()
    server = web.Server(upstream.handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print(f"upstream listening on http://127.0.0.1:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="loopback TCP port to listen on")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port))


if __name__ == "__main__":
    main()
