"""Prometheus metrics of one gateway: requests, latencies, token operations, store errors.

Labels carry only names from the configuration (listener, connection, route, class) and fixed
words (status codes, outcomes), never a value or a token, so their number is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.audit.events import AuditEvent

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metrics of one gateway process; each worker of ``listen.workers`` has its own."""

    def __init__(self) -> None:
        # A registry per gateway, so that several gateways in one process (tests) do not mix.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vaultgate_requests",
            "Requests answered, by listener, connection, route and status code.",
            ["listener", "connection", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "vaultgate_request_duration_seconds",
            "Time from a request's arrival to its response, by listener.",
            ["listener"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.token_operations = Counter(
            "vaultgate_token_operations",
            "Tokenize, detokenize, delete and erase operations, by class and outcome.",
            ["operation", "class_name", "outcome"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "vaultgate_store_errors",
            "Requests that failed because the token store was unavailable, by listener.",
            ["listener"],
            registry=self.registry,
        )

    def observe_request(
        self, listener: str, connection: str, route: str, status: int, seconds: float
    ) -> None:
        self.requests.labels(listener, connection, route, str(status)).inc()
        self.duration.labels(listener).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsAuditSink:
    """An audit sink that counts events instead of keeping them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def record(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._metrics.token_operations.labels(
                event.action, event.class_name or "-", event.outcome.value
            ).inc()
