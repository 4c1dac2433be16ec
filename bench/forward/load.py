"""The forward benchmark's load client: HTTPS through a proxy, one CONNECT tunnel per worker.

Each worker opens a CONNECT tunnel to api.stripe.com:443 through the proxy, starts TLS in it
(trusting the proxy's CA), and sends ``POST /v1/payment_methods`` requests one after another
on that one connection (HTTP/1.1 keep-alive) until the deadline. No tool such as wrk speaks
HTTPS through a CONNECT proxy, hence this client.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "api.stripe.com"
READ_TIMEOUT = 10.0


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000

    @property
    def mean_latency_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else 0.0


def payment_method_request(number: str, cvc: str) -> bytes:
    body = (
        f"type=card&card%5Bnumber%5D={number}&card%5Bexp_month%5D=12"
        f"&card%5Bexp_year%5D=2030&card%5Bcvc%5D={cvc}"
    ).encode()
    head = (
        "POST /v1/payment_methods HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Authorization: Bearer sk_test_bench\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
    return status


async def _open_tunnel(
    proxy_port: int, credentials: tuple[str, str] | None, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    lines = [f"CONNECT {HOST}:443 HTTP/1.1", f"Host: {HOST}:443"]
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise ConnectionError(f"CONNECT failed with {status_line}")
    await writer.start_tls(context, server_hostname=HOST)
    return reader, writer


async def _worker(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    requests: list[bytes],
    deadline: float,
    offset: int,
    result: LoadResult,
) -> None:
    index = offset
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(requests[index % len(requests)])
            index += 1
            try:
                status = await _read_response(reader)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                return
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.requests += 1
            else:
                result.errors += 1
    finally:
        writer.close()


async def run_load(
    proxy_port: int,
    ca_file: Path,
    requests: list[bytes],
    *,
    connections: int,
    seconds: float,
    credentials: tuple[str, str] | None = None,
) -> LoadResult:
    """Open ``connections`` tunnels, then drive them for ``seconds``; return what completed.

    The clock starts once every tunnel is open, so CONNECT and the TLS handshakes are not
    counted.
    """
    context = ssl.create_default_context(cafile=str(ca_file))
    tunnels = await asyncio.gather(
        *(_open_tunnel(proxy_port, credentials, context) for _ in range(connections))
    )
    result = LoadResult()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _worker(reader, writer, requests, deadline, offset, result)
            for offset, (reader, writer) in enumerate(tunnels)
        )
    )
    result.seconds = time.monotonic() - started
    return result
