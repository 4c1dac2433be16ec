"""Forward-mode benchmark: plain mitmproxy against vaultgate's forward proxy on the Stripe route.

Usage, from the repository root::

    .venv/bin/python -m bench.forward.run            # 3 rounds of 10 s per proxy, about 90 s
    .venv/bin/python -m bench.forward.run --quick    # 1 round of 4 s per proxy

Both proxies run as their own processes on loopback, in front of one HTTPS stand-in for
api.stripe.com (``bench/forward/upstream.py``) whose certificate comes from a CA made for the
run. The load client (``bench/forward/load.py``) sends ``POST /v1/payment_methods`` with a
tokenized card number and CVC over keep-alive HTTPS tunnels:

- plain mitmproxy (``mitmdump -q``) relays the tokens unchanged. Its script only sends
  api.stripe.com to the stand-in, keeping the Host header and the TLS server name.
- vaultgate (``vaultgate run`` with the shipped configuration and route files, the stand-in
  named by ``STRIPE_API_BASE`` and trusted through ``upstream_ca``) checks the proxy
  credentials, detokenizes both fields from its SQLite store under the policy, and sends the
  card number to the stand-in.

The rounds alternate which proxy goes first. The table goes to stdout; ``results.json`` and
``results.md`` go to ``bench/results/forward-<time>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

from bench.forward.load import HOST, LoadResult, payment_method_request, run_load

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parents[1]
START_TIMEOUT = 30.0
BACKEND_KEY = "dev-backend-key"
"""The development key of the client backend in config.example.yaml."""
CARD_NUMBERS = ("4242424242424242", "5555555555554444", "378282246310005", "6011111111111117")
RESERVED_PORTS = frozenset({6379})
"""A shared Redis server may listen on 6379, so ``free_port`` never returns it."""


def free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_file: Path

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_process(
    name: str, arguments: list[str], work: Path, port: int, environ: dict[str, str]
) -> Process:
    log_file = work / f"{name}.log"
    with log_file.open("ab") as log:
        popen = subprocess.Popen(
            arguments, cwd=REPO_DIR, env=environ, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    process = Process(name, popen, log_file)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}; see {log_file}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"{name} did not listen on port {port} within {START_TIMEOUT} s")


def make_standin_certificate(work: Path) -> tuple[Path, Path, Path]:
    """Return the CA file, and a certificate and key for api.stripe.com signed by that CA."""
    key, ca = certs.create_ca(
        organization="vaultgate bench", cn="vaultgate bench CA", key_size=2048
    )
    leaf = certs.dummy_cert(key, ca, HOST, [x509.DNSName(HOST)])
    ca_file, cert_file, key_file = work / "ca.pem", work / "standin.pem", work / "standin-key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.to_pem())
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


def base_environ() -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    environ.pop("VAULTGATE_CONFIG", None)
    return environ


@dataclass
class Peer:
    name: str
    process: Process
    port: int
    ca_file: Path
    credentials: tuple[str, str] | None
    rounds: list[dict[str, Any]] = field(default_factory=list)


def start_vaultgate(work: Path, standin_url: str, standin_ca: Path) -> tuple[Peer, int]:
    config_dir = work / "vaultgate"
    config_dir.mkdir()
    shutil.copy(REPO_DIR / "config.example.yaml", config_dir / "config.yaml")
    shutil.copytree(REPO_DIR / "routes", config_dir / "routes")
    with (config_dir / "routes" / "stripe.yaml").open("a") as route_file:
        route_file.write(f"upstream_ca: {standin_ca}\n")
    port, admin_port = free_port(), free_port()
    environ = base_environ() | {
        "VAULTGATE_LISTEN": f"127.0.0.1:{free_port()}",
        "VAULTGATE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "VAULTGATE_FORWARD_LISTEN": f"127.0.0.1:{port}",
        "VAULTGATE_CA_DIR": str(config_dir / "ca"),
        "VAULTGATE_STORE": f"sqlite:///{config_dir / 'tokens.db'}",
        "VAULTGATE_KEY_FILE": str(config_dir / "keys.yaml"),
        "APP_UPSTREAM": "http://127.0.0.1:9",
        "STRIPE_API_BASE": standin_url,
    }
    arguments = [sys.executable, "-m", "gateway", "run", "-c", str(config_dir / "config.yaml")]
    process = start_process("vaultgate", arguments, work, port, environ)
    peer = Peer(
        "vaultgate",
        process,
        port,
        config_dir / "ca" / "vaultgate-ca-cert.pem",
        ("backend", BACKEND_KEY),
    )
    return peer, admin_port


def start_mitmproxy(work: Path, standin_port: int, standin_ca: Path) -> Peer:
    port = free_port()
    confdir = work / "mitmproxy"
    mitmdump = Path(sys.executable).with_name("mitmdump")
    arguments = [
        str(mitmdump), "-q",
        "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", f"confdir={confdir}",
        "--set", f"ssl_verify_upstream_trusted_ca={standin_ca}",
        "-s", str(BENCH_DIR / "mitm_addon.py"),
    ]  # fmt: skip
    environ = base_environ() | {"BENCH_UPSTREAM": f"127.0.0.1:{standin_port}"}
    process = start_process("mitmproxy", arguments, work, port, environ)
    return Peer("mitmproxy", process, port, confdir / "mitmproxy-ca-cert.pem", None)


def tokenize_cards(admin_port: int) -> list[tuple[str, str]]:
    """Return (number token, CVC token) pairs made through vaultgate's vault API."""
    items = []
    for number in CARD_NUMBERS:
        items.append({"value": number, "class": "card.pan"})
        items.append({"value": "123", "class": "card.cvc"})
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/v1/tokenize",
        data=json.dumps({"items": items}).encode(),
        headers={"Authorization": f"Bearer {BACKEND_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        tokens = [item["token"] for item in json.load(response)["items"]]
    return list(zip(tokens[0::2], tokens[1::2], strict=True))


def standin_stats(port: int, ca_file: Path) -> dict[str, Any]:

    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    url = f"https://127.0.0.1:{port}/_bench/stats"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def measure(peer: Peer, requests: list[bytes], seconds: float, connections: int) -> dict[str, Any]:
    cpu_before = peer.process.cpu_seconds()
    result: LoadResult = asyncio.run(
        run_load(
            peer.port,
            peer.ca_file,
            requests,
            connections=connections,
            seconds=seconds,
            credentials=peer.credentials,
        )
    )
    cpu = peer.process.cpu_seconds() - cpu_before
    return {
        "requests": result.requests,
        "errors": result.errors,
        "statuses": {str(status): count for status, count in result.statuses.items()},
        "seconds": round(result.seconds, 3),
        "throughput": round(result.throughput, 1),
        "latency_ms": {
            "mean": round(result.mean_latency_ms, 2),
            "p50": round(result.latency_ms(0.5), 2),
            "p99": round(result.latency_ms(0.99), 2),
        },
        "proxy_cpu_ms_per_request": round(cpu * 1000 / result.requests, 3)
        if result.requests
        else None,
    }


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    description = {
        "cpu": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for package in ("mitmproxy", "aiohttp", "cryptography"):
        description[package] = metadata.version(package)
    return description


def summarize(peers: list[Peer]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for peer in peers:
        rounds = peer.rounds
        summary[peer.name] = {
            "throughput": round(sum(r["throughput"] for r in rounds) / len(rounds), 1),
            "p50_ms": round(sum(r["latency_ms"]["p50"] for r in rounds) / len(rounds), 2),
            "p99_ms": round(sum(r["latency_ms"]["p99"] for r in rounds) / len(rounds), 2),
            "errors": sum(r["errors"] for r in rounds),
            "cpu_ms_per_request": round(
                sum(r["proxy_cpu_ms_per_request"] or 0 for r in rounds) / len(rounds), 3
            ),
        }
    baseline = summary["mitmproxy"]["throughput"]
    summary["ratio"] = round(summary["vaultgate"]["throughput"] / baseline, 3) if baseline else None
    return summary


def render(summary: dict[str, Any], settings: dict[str, Any], description: dict[str, str]) -> str:
    lines = [
        "| proxy | requests/s | p50 ms | p99 ms | proxy CPU ms/request | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("mitmproxy", "vaultgate"):
        row = summary[name]
        lines.append(
            f"| {name} | {row['throughput']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['cpu_ms_per_request']:.3f} | {row['errors']} |"
        )
    lines.append("")
    lines.append(f"vaultgate / mitmproxy throughput: {summary['ratio']:.3f} (target 0.9 or more)")
    lines.append("")
    lines.append(
        f"{settings['rounds']} round(s) of {settings['seconds']:g} s per proxy after "
        f"{settings['warmup']:g} s of warm-up, {settings['connections']} keep-alive HTTPS "
        "connections, one client process."
    )
    lines.append("Machine: " + ", ".join(f"{key} {value}" for key, value in description.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="vaultgate forward proxy against mitmproxy")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per proxy")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--quick", action="store_true", help="1 round of 4 s, 1 s of warm-up")
    parser.add_argument("--output", type=Path, help="results directory")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.seconds, arguments.warmup = 1, 4.0, 1.0
    settings = {
        "rounds": arguments.rounds,
        "seconds": arguments.seconds,
        "warmup": arguments.warmup,
        "connections": arguments.connections,
    }

    work = Path(tempfile.mkdtemp(prefix="vaultgate-forward-bench-"))
    processes: list[Process] = []
    try:
        standin_ca, standin_cert, standin_key = make_standin_certificate(work)
        standin_port = free_port()
        standin = start_process(
            "standin",
            [sys.executable, "-m", "bench.forward.upstream", "--port", str(standin_port),
             "--cert", str(standin_cert), "--key", str(standin_key)],
            work, standin_port, base_environ(),
        )  # fmt: skip
        processes.append(standin)
        vaultgate, admin_port = start_vaultgate(
            work, f"https://127.0.0.1:{standin_port}", standin_ca
        )
        processes.append(vaultgate.process)
        mitmproxy = start_mitmproxy(work, standin_port, standin_ca)
        processes.append(mitmproxy.process)
        requests = [payment_method_request(*pair) for pair in tokenize_cards(admin_port)]

        # Spot check: one request each; vaultgate must deliver a card number, mitmproxy a token.
        for peer, kind in ((vaultgate, "plain"), (mitmproxy, "token")):
            before = standin_stats(standin_port, standin_ca)[kind]
            spot = asyncio.run(
                run_load(peer.port, peer.ca_file, requests[:1], connections=1, seconds=0.2,
                         credentials=peer.credentials)
            )  # fmt: skip
            after = standin_stats(standin_port, standin_ca)[kind]
            if spot.errors or after <= before:
                raise RuntimeError(
                    f"spot check of {peer.name} failed: {spot.statuses}, "
                    f"{standin_stats(standin_port, standin_ca)}"
                )

        peers = [mitmproxy, vaultgate]
        for round_number in range(arguments.rounds):
            order = peers if round_number % 2 == 0 else list(reversed(peers))
            for peer in order:
                measure(peer, requests, arguments.warmup, arguments.connections)
                peer.rounds.append(
                    measure(peer, requests, arguments.seconds, arguments.connections)
                )
                print(
                    f"round {round_number + 1} {peer.name}: {peer.rounds[-1]['throughput']} req/s"
                )
        stats = standin_stats(standin_port, standin_ca)
    finally:
        for process in reversed(processes):
            process.stop()

    summary = summarize(peers)
    description = machine()
    table = render(summary, settings, description)
    print(table)
    output = arguments.output or (
        REPO_DIR / "bench" / "results" / datetime.now(UTC).strftime("forward-%Y%m%d-%H%M%S")
    )
    output.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": settings,
        "machine": description,
        "summary": summary,
        "rounds": {peer.name: peer.rounds for peer in peers},
        "standin": {key: value for key, value in stats.items() if key != "last_body"},
    }
    (output / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (output / "results.md").write_text(table + "\n")
    print(f"results in {output}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
