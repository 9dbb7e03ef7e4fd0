"""What one token may take of the endpoint: requests a second, and open streams.

Each token has two token buckets, one for writes (POST: start and cancel tasks) and one for
reads (GET), and may hold a few event streams open; the endpoint holds a bounded number in all.
Past a limit the answer is 429 TooManyRequests with `Retry-After` (whole seconds), so one
tenant's flood never stops another tenant's requests.

The counts are kept in memory, per replica: N replicas of the endpoint let a token do N times as
much (divide the limits by the replicas for a global figure, or put a gateway that counts
globally in front). A token is known by a hash of itself, never kept in clear; the buckets of
tokens that have not been seen for a while are dropped, so a flood of made-up tokens holds a
bounded amount of memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import InvalidTaskError

Clock = Callable[[], float]

# Buckets kept at most: past it, the least recently used are forgotten (they start full again).
MAX_BUCKETS = 10000


@dataclass(frozen=True)
class Limits:
    """The endpoint's limits; a rate of 0 turns that limit off."""

    writes_per_second: float = 20.0
    write_burst: int = 100
    reads_per_second: float = 50.0
    read_burst: int = 200
    streams_per_token: int = 10
    streams: int = 200

    ENV = {
        "writes_per_second": "LIMETASK_WEB_WRITES_PER_SECOND",
        "write_burst": "LIMETASK_WEB_WRITE_BURST",
        "reads_per_second": "LIMETASK_WEB_READS_PER_SECOND",
        "read_burst": "LIMETASK_WEB_READ_BURST",
        "streams_per_token": "LIMETASK_WEB_STREAMS_PER_TOKEN",
        "streams": "LIMETASK_WEB_STREAMS",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        """The limits from LIMETASK_WEB_WRITES_PER_SECOND, ..._WRITE_BURST, ..._READS_PER_SECOND,
        ..._READ_BURST, ..._STREAMS_PER_TOKEN and ..._STREAMS; the defaults for those not set."""
        env = os.environ if env is None else env
        values: dict[str, float | int] = {}
        for name, var in cls.ENV.items():
            text = env.get(var, "").strip()
            if not text:
                continue
            default = getattr(cls, name)
            try:
                value = type(default)(text)
            except ValueError:
                value = -1
            if not 0 <= value <= 1_000_000 or (isinstance(value, float) and math.isnan(value)):
                raise InvalidTaskError(f"{var} must be a number from 0 (off) to 1000000, got {text!r}")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]


def token_key(authorization: str | None) -> str:
    """Who a request is, for its limits: a hash of its bearer token ('' without one)."""
    token = (authorization or "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode()).hexdigest()[:32] if token else ""


class RateLimiter:
    """A token bucket per key: `rate` a second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic, max_keys: int = MAX_BUCKETS) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, max(1, burst), clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """0 when the request may go on (and is counted); else the seconds until it may."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """`Retry-After` in whole seconds, never 0."""
    return str(max(1, math.ceil(seconds)))


class TooManyStreams(Exception):
    """A stream past a cap; `reason` is the cap's name (`streams_per_token` or `streams`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StreamSlots:
    """Open event streams: at most `per_key` for one token and `total` in all (0: no limit)."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key, self.total = per_key, total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> "Slot":
        """A slot for one more stream of `key`, or `TooManyStreams` saying which cap it would pass."""
        with self._lock:
            if self.total and sum(self._open.values()) >= self.total:
                raise TooManyStreams("streams", f"the endpoint has {self.total} event streams open, its limit")
            if self.per_key and self._open.get(key, 0) >= self.per_key:
                raise TooManyStreams("streams_per_token", f"this token has {self.per_key} event streams open, "
                                                          f"its limit: close one first")
            self._open[key] = self._open.get(key, 0) + 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        with self._lock:
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)

    def open(self) -> int:
        with self._lock:
            return sum(self._open.values())


class Slot:
    """One open stream's place. Given back once, by `release`, or when it is dropped: a stream
    whose body never started (the client left before its first byte) gives its place back too."""

    def __init__(self, slots: StreamSlots, key: str) -> None:
        self._slots: StreamSlots | None = slots
        self._key = key

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self._key)

    def __del__(self) -> None:
        self.release()
