"""Pacing for the sync side: a token bucket for backlog drains.

It takes the time from a function, so tests drive it without sleeping. The reconnect backoff
is the one in `gateway.runtime.aio`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TokenBucket:
    """At most `rate` tokens a second on average, with bursts of up to `burst`.

    A backlog of days must not flood the broker when the link comes back; the
    bucket spaces it out while live events bypass it.
    """

    def __init__(self, rate: float, burst: int, now: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._at = now()

    def _refill(self) -> None:
        t = self._now()
        self._tokens = min(float(self.burst), self._tokens + (t - self._at) * self.rate)
        self._at = t

    def delay(self, n: int) -> float:
        """Seconds until `n` tokens (at most `burst`) are available; 0 when they are now."""
        self._refill()
        n = min(n, self.burst)
        return max(0.0, (n - self._tokens) / self.rate)

    def take(self, n: int) -> int:
        """Take up to `n` tokens that are available now; return how many were taken."""
        self._refill()
        got = min(n, int(self._tokens))
        self._tokens -= got
        return got

    async def acquire(self, n: int) -> int:
        """Wait until some tokens are there, take up to `n` (at most `burst`), return the count."""
        want = min(n, self.burst)
        while True:
            wait = self.delay(want)
            if wait <= 0:
                return self.take(want)
            await asyncio.sleep(wait)
