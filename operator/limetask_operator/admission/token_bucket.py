"""The pace of Job creations over every queue: a burst of tasks becomes pods at that pace."""

from __future__ import annotations

from collections.abc import Callable

HORIZON = 1.0  # a grant may reserve its Job-creation token this far ahead


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; a reservation may take a token not yet due."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()

    def reserve(self, horizon: float) -> float | None:
        """Take a token: the seconds until it is due (0: now), or None when that is past `horizon`."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        due = max(0.0, (1.0 - self.tokens) / self.rate)
        if due > horizon:
            return None
        self.tokens -= 1.0
        return due

    def next_due(self) -> float:
        """Seconds until a reservation within the horizon can be made again (0: now)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate - HORIZON)
