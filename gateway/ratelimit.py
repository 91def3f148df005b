"""Per-connection frame rate limit: a token bucket, and a tally of frames it refused.

Pure and clock-injected (``now`` in seconds, monotonic), so the rules are unit-tested
without sleeping.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` frames per second on average, bursts of up to ``burst`` frames."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means the frame is over the limit."""
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        # The epsilon absorbs float rounding: two half-refills make a whole token.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class Strikes:
    """Refused frames, leaking away at ``decay`` per second: a client that stays slightly
    over the limit only loses the extra frames, one that keeps flooding piles strikes up
    past ``limit`` and is disconnected."""

    def __init__(self, limit: int, decay: float, now: float) -> None:
        self.limit = limit
        self.decay = decay
        self.level = 0.0
        self._at = now

    def add(self, now: float) -> bool:
        """Record one refused frame; True once the level exceeds the limit."""
        elapsed = max(0.0, now - self._at)
        self._at = now
        self.level = max(0.0, self.level - elapsed * self.decay) + 1.0
        return self.level > self.limit
