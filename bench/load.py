"""Drive load with wrk and check what reached the upstream.

``run_wrk`` runs wrk with ``checkout.lua`` and parses the ``BENCH_RESULT`` line that the script
prints. ``spot_check`` sends two checkout requests through a peer with the standard library's
HTTP client and checks the status and the body that the upstream received.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

BENCH_LUA = "checkout.lua"
RESULT_PREFIX = "BENCH_RESULT "
TOKEN = re.compile(r"tok_[0-9a-f]{32}")
WRK_TIMEOUT_SECONDS = 10
"""Seconds after which wrk counts a request as timed out."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    non_2xx: int
    """Responses with a status outside 200-399 (wrk counts 3xx as success)."""
    socket_errors: int
    """Connect, read and write errors and timeouts."""
    latency_us: dict[str, float]
    """Mean, max and the 50th, 90th, 99th and 99.9th percentiles, in microseconds."""

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s


def wrk_executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: run `apt-get install wrk` (Debian's package)")
    return found


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    run_id: str,
    email_mode: str,
    script: str,
    threads: int = 1,
) -> WrkResult:
    """Run wrk against ``url`` for ``duration_s`` seconds and return its summary.

    Raises ``RuntimeError`` when wrk fails or prints no result line.
    """
    arguments = [
        wrk_executable(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={WRK_TIMEOUT_SECONDS}s",
        f"--script={script}",
        url,
        "--",
        run_id,
        email_mode,
    ]
    completed = subprocess.run(
        arguments, capture_output=True, text=True, check=False, timeout=duration_s + 60
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"wrk failed with status {completed.returncode}: {completed.stderr.strip()}"
        )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return _parse_result(json.loads(line[len(RESULT_PREFIX) :]))
    raise RuntimeError(f"wrk printed no {RESULT_PREFIX.strip()} line. Output:\n{completed.stdout}")


def _parse_result(summary: dict[str, Any]) -> WrkResult:
    latency = {
        "mean": summary["latency_mean_us"],
        "max": summary["latency_max_us"],
        "p50": summary["latency_p50_us"],
        "p90": summary["latency_p90_us"],
        "p99": summary["latency_p99_us"],
        "p99.9": summary["latency_p99.9_us"],
    }
    socket_errors = sum(
        summary[f"errors_{kind}"] for kind in ("connect", "read", "write", "timeout")
    )
    return WrkResult(
        requests=summary["requests"],
        duration_s=summary["duration_us"] / 1e6,
        non_2xx=summary["errors_status"],
        socket_errors=socket_errors,
        latency_us=latency,
    )


def upstream_stats(upstream_url: str) -> dict[str, Any]:
    """Return the benchmark upstream's counters and the last checkout body it received."""
    status, body = _request(upstream_url, "GET", "/_bench/stats", None, {})
    if status != 200:
        raise RuntimeError(f"upstream stats request failed with status {status}")
    stats: dict[str, Any] = json.loads(body)
    return stats


def spot_check(peer_url: str, upstream_url: str, *, tokenizes: bool) -> list[str]:
    """Send two checkouts with the same email through a peer and return the problems found.

    A tokenizing peer must return 200 and relay a Luhn-valid pan token with the original BIN
    and last four digits, ``tok_`` tokens for cvc, name and email, and the same email token
    both times. Any other peer must relay the body unchanged.
    """
    sent = [
        _spot_check_body("4242424242424242", "123"),
        _spot_check_body("5555555555554444", "456"),
    ]
    received = []
    problems = []
    for body in sent:
        middle = body["card"]["number"][6:-4]
        headers = {"Content-Type": "application/json", "X-Bench-Pan-Middle": middle}
        before = upstream_stats(upstream_url)["requests"]
        status, response = _request(peer_url, "POST", "/api/checkout", json.dumps(body), headers)
        after = upstream_stats(upstream_url)
        if status != 200:
            problems.append(f"status {status} for a valid checkout: {response[:200]!r}")
        if after["requests"] != before + 1:
            problems.append(f"the upstream received {after['requests'] - before} requests, not 1")
        if problems:
            return problems
        received.append(after["last_body"])

    if not tokenizes:
        problems += [
            "the upstream received a changed body"
            for original, relayed in zip(sent, received, strict=True)
            if original != relayed
        ]
        return problems

    for original, relayed in zip(sent, received, strict=True):
        problems += _tokenization_problems(original, relayed)
    if not problems and received[0]["email"] != received[1]["email"]:
        problems.append("the deterministic email field got two different tokens")
    if not problems and received[0]["card"]["cvc"] == received[1]["card"]["cvc"]:
        problems.append("the random cvc field got the same token twice")
    return problems


def _spot_check_body(number: str, cvc: str) -> dict[str, Any]:
    return {
        "order_id": "ord_spot_check",
        "amount": 4999,
        "currency": "EUR",
        "email": "spot.check@example.com",
        "card": {
            "number": number,
            "exp_month": 12,
            "exp_year": 2030,
            "cvc": cvc,
            "name": "Spot Check",
        },
    }


def _tokenization_problems(original: dict[str, Any], relayed: dict[str, Any] | None) -> list[str]:
    if relayed is None:
        return ["the upstream received no checkout body"]
    problems = []
    number, token = original["card"]["number"], relayed["card"]["number"]
    if token == number:
        problems.append("the upstream received the raw card number")
    elif not (
        len(token) == len(number)
        and token[:6] == number[:6]
        and token[-4:] == number[-4:]
        and _is_luhn_valid(token)
    ):
        problems.append(f"the pan token {token!r} does not keep length, BIN and last four")
    for name, value in (
        ("cvc", relayed["card"]["cvc"]),
        ("name", relayed["card"]["name"]),
        ("email", relayed["email"]),
    ):
        if not TOKEN.fullmatch(str(value)):
            problems.append(f"the upstream received a {name} that is not a tok_ token")
    untouched = {key: value for key, value in original.items() if key not in ("card", "email")}
    if any(relayed.get(key) != value for key, value in untouched.items()):
        problems.append("the upstream received changed fields that the route does not name")
    return problems


def _is_luhn_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = int(character)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _request(
    base_url: str, method: str, path: str, body: str | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    address = urlsplit(base_url)
    if address.hostname is None or address.port is None:
        raise ValueError(f"URL {base_url!r} needs a host and a port")
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
