"""How many archived tasks match the dashboard's filters, by state: a count over a month of
history takes a while, so pages asking the same at once share one query, and later pages may
take an answer up to `ARCHIVE_COUNTS_TTL` seconds old."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

ARCHIVE_COUNTS_TTL = 10.0
# Keys kept before the cache starts afresh (each is one set of filters).
MAX_KEYS = 256


class ArchiveCounts:
    """The counts last read for each set of filters, and one lock per set."""

    def __init__(self) -> None:
        self._counts: dict[Hashable, tuple[float, dict[str, int]]] = {}
        self._counting: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, count: Callable[[], dict[str, int]], fresh: bool = True) -> dict[str, int]:
        """The counts for `key`: read now by `count()`, unless a request that came in meanwhile
        read them, or (`fresh=False`) they were read less than the TTL ago."""
        started = time.monotonic()
        with self._lock:
            lock = self._counting.setdefault(key, threading.Lock())
        with lock:
            cached = self._counts.get(key)
            if cached is not None and (cached[0] >= started or (
                    not fresh and time.monotonic() - cached[0] < ARCHIVE_COUNTS_TTL)):
                return cached[1]
            counts = count()
            with self._lock:
                if len(self._counts) > MAX_KEYS:
                    self._counts.clear()
                    self._counting.clear()
                self._counts[key] = (time.monotonic(), counts)
        return counts
