"""The per-connection rate limit's arithmetic, on a hand-driven clock."""

from __future__ import annotations

import pytest

from gateway.ratelimit import Strikes, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(0.05)  # half a token so far
    assert bucket.take(0.1)  # one token per 0.1 s
    assert not bucket.take(0.1)
    # An idle client refills up to the burst, never beyond.
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_sustains_exactly_its_rate() -> None:
    bucket = TokenBucket(rate=20, burst=1, now=0.0)
    # 40 frames/s for 10 s: half of them get through.
    allowed = sum(bucket.take(i / 40) for i in range(400))
    assert 199 <= allowed <= 201


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0)


def test_strikes_close_a_flood_but_not_a_client_slightly_over() -> None:
    flood = Strikes(limit=40, decay=2.0, now=0.0)
    # 1,000 refused frames per second: over the limit within a twentieth of a second.
    closed_at = next(i for i in range(1000) if flood.add(i / 1000))
    assert closed_at == 40
    # Two refused frames a second against a decay of two a second never add up.
    slightly = Strikes(limit=40, decay=2.0, now=0.0)
    assert not any(slightly.add(i / 2) for i in range(2000))
