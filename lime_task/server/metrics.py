"""The endpoint's own metrics, served at /metrics in Prometheus's text format.

- `limetask_web_requests_total{route,method,status}`: answers, by the route's template (never an
  application's name or a task's id, so the series stay few)
- `limetask_web_rejected_total{reason}`: 429s of the limits (limits.py): `writes`, `reads`,
  `streams_per_token`, `streams`
- `limetask_web_open_streams`: event streams open now
- `limetask_web_idempotent_replays_total`: POSTs answered with the task an earlier request with
  the same Idempotency-Key started

Each application has a registry of its own, so that two endpoints in one process (tests) do
not mix their figures.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointMetrics:
    """The endpoint's series, in a registry of their own."""

    def __init__(self, open_streams: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("limetask_web_requests", "HTTP answers of the endpoint, by route template, "
                                "method and status", ["route", "method", "status"], registry=self.registry)
        self.rejected = Counter("limetask_web_rejected", "Requests answered 429 by the endpoint's limits, by "
                                "reason: writes, reads, streams_per_token, streams", ["reason"],
                                registry=self.registry)
        self.open_streams = Gauge("limetask_web_open_streams", "Event streams open now", registry=self.registry)
        self.open_streams.set_function(lambda: float(open_streams()))
        self.replays = Counter("limetask_web_idempotent_replays", "POSTs answered with the task an earlier "
                               "request with the same Idempotency-Key started", registry=self.registry)
        for reason in ("writes", "reads", "streams_per_token", "streams"):
            self.rejected.labels(reason)  # every reason from 0, so that rate() sees the first one

    def count(self, route: str, method: str, status: int) -> None:
        self.requests.labels(route, method, str(status)).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def replayed(self) -> None:
        self.replays.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
