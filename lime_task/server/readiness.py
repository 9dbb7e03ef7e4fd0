"""What the endpoint's /readyz says about the archive, known without waiting for it.

The probe runs in a thread of its own, never in the request workers (which a slow archive may
all hold), at most every `every` seconds and only while someone asks: /readyz answers with what
was last seen, at once, and a stale answer starts the next look.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger("limetask.web")
PROBE_EVERY_SECONDS = 15.0


class ArchiveProbe:
    """The archive's state: "ok", "unavailable", "unknown" (not looked at yet) or "none"."""

    def __init__(self, ping: Callable[[], None] | None, every: float = PROBE_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`ping`: returns when the archive answers, raises when it does not (None: no archive)."""
        self.ping, self.every, self.clock = ping, every, clock
        self._state = "unknown" if ping is not None else "none"
        self._checked: float | None = None
        self._running = False
        self._lock = threading.Lock()

    def state(self) -> str:
        """The state last seen; looks again (in the background) when that is older than `every`."""
        with self._lock:
            stale = self._checked is None or self.clock() - self._checked >= self.every
            if self.ping is not None and stale and not self._running:
                self._running = True
                threading.Thread(target=self._probe, name="archive-probe", daemon=True).start()
            return self._state

    def _probe(self) -> None:
        assert self.ping is not None
        try:
            self.ping()
            state = "ok"
        except Exception as exc:  # noqa: BLE001 - whatever the reason, the archive does not answer
            state = "unavailable"
            if self._state != "unavailable":
                LOG.warning("the archive does not answer: %s", exc)
        with self._lock:
            if state == "ok" and self._state == "unavailable":
                LOG.warning("the archive answers again")
            self._state, self._checked, self._running = state, self.clock(), False
