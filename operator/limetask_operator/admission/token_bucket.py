"""Token buckets: the pace of Job creations over every queue, and a queue's own pace of starts.

A burst of tasks becomes pods at the installation's pace (`job_creates_per_second`); a queue
with `maxStartsPerSecond` starts its tasks no faster than that, whatever the other queues do.
"""

from __future__ import annotations

from collections.abc import Callable

HORIZON = 1.0  # a grant may reserve its Job-creation token this far ahead


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; a reservation may take a token not yet due.

    `full`: the bucket starts with `burst` tokens, else with none (a queue's pace: a new leader
    or a restarted operator starts nothing of that queue before 1/rate seconds have passed,
    so that the starts of the process before it and its own are never closer than the pace)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], full: bool = True) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst) if full else 0.0
        self.at = clock()  # the time `tokens` is counted at (a reservation may put it ahead of now)

    def reserve(self, horizon: float, after: float = 0.0) -> float | None:
        """Take a token: the seconds until it is due (0: now), or None when that is past `horizon`.
        `after`: the token is used no sooner than this many seconds from now (its Job waits for
        another bucket's token too), so the token is counted as taken then: two tokens are
        never used closer than the pace, however the other bucket delays them."""
        if self.rate <= 0:
            return max(0.0, after)
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        due = max(after, (1.0 - tokens) / self.rate, 0.0)
        if due > horizon:
            return None
        self.tokens = min(self.burst, tokens + due * self.rate) - 1.0
        self.at = now + due
        return due

    def next_due(self) -> float:
        """Seconds until a reservation within the horizon can be made again (0: now)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate - HORIZON)
