from __future__ import annotations

from gateway.policy.model import RateLimit
from gateway.policy.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(count=3, period=60.0)
    assert [limiter.try_take("c", "card.pan", limit) for _ in range(4)] == [True, True, True, False]
    clock.now += 20.0  # one token back at 3 per minute
    assert limiter.try_take("c", "card.pan", limit)
    assert not limiter.try_take("c", "card.pan", limit)


def test_buckets_are_per_client_and_class() -> None:
    limiter = RateLimiter(Clock())
    limit = RateLimit(count=1, period=60.0)
    assert limiter.try_take("a", "card.pan", limit)
    assert limiter.try_take("b", "card.pan", limit)
    assert limiter.try_take("a", "pii.email", limit)
    assert not limiter.try_take("a", "card.pan", limit)


def test_refusal_takes_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(count=2, period=2.0)
    assert limiter.try_take("c", "x", limit, count=2)
    assert not limiter.try_take("c", "x", limit, count=2)
    clock.now += 2.0
    assert limiter.try_take("c", "x", limit, count=2)
