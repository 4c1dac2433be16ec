"""Token buckets that slow bulk detokenization, one per client and class."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.policy.model import RateLimit


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets kept in this process.

    NOTE: each gateway process keeps its own buckets, and so does each worker of
    ``listen.workers``, so N gateways or N workers allow up to N times a grant's rate. A
    shared limit would need the buckets in Redis.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def try_take(self, client: str, class_name: str, limit: RateLimit, count: int = 1) -> bool:
        """Take ``count`` tokens from the bucket of the client and class; False when empty.

        A refused call takes nothing, so a client that backs off regains its full rate.
        """
        now = self._clock()
        bucket = self._buckets.get((client, class_name))
        if bucket is None:
            bucket = _Bucket(float(limit.count), now)
            self._buckets[(client, class_name)] = bucket
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(limit.count), bucket.tokens + elapsed * limit.per_second)
        bucket.updated = now
        if bucket.tokens < count:
            return False
        bucket.tokens -= count
        return True
