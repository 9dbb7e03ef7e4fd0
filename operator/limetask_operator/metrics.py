"""Prometheus metrics of the operator (prometheus_client), served on LIMETASK_METRICS_PORT."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .model import TaskView

QUEUE_LATENCY = Histogram(
    "limetask_queue_latency_seconds", "Time from a task's creation to its worker starting",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
RUN_TIME = Histogram(
    "limetask_run_seconds", "Time from a task's start to its final state",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600))
ATTEMPTS = Histogram("limetask_attempts", "Attempts a finished task took", buckets=(1, 2, 3, 5, 10))
FINISHED = Counter("limetask_tasks_finished_total", "Tasks that reached a final state", ["state", "reason"])
API_ERRORS = Counter("limetask_api_errors_total", "Kubernetes API calls that failed", ["method", "code"])
RECONCILES = Counter("limetask_reconciles_total", "Reconciles of one task", ["outcome"])
JOBS_CREATED = Counter("limetask_jobs_created_total", "Jobs the operator created (one per attempt)")
EVENTS = Counter("limetask_events_total", "Completion event deliveries", ["sink", "outcome"])
STATUS_OVERWRITES = Counter("limetask_status_overwrites_total",
                            "Task statuses found written by someone other than the operator")
RETENTION_DELETES = Counter("limetask_retention_deleted_total", "Finished LimeTasks deleted by retention")

QUEUE_ADMITTED = Counter("limetask_queue_admitted_total", "Attempts given a slot in their queue", ["queue"])
QUEUE_WAIT = Histogram(
    "limetask_queue_wait_seconds", "Time an attempt waited in its queue for a slot",
    ["queue"], buckets=(0, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600))
QUEUE_WAITING = Gauge("limetask_queue_waiting", "Tasks waiting in the queue for a slot (its depth)", ["queue"])
QUEUE_RUNNING = Gauge("limetask_queue_running", "Tasks of the queue holding a slot", ["queue"])
QUEUE_OLDEST = Gauge("limetask_queue_oldest_wait_seconds", "How long the queue's longest-waiting task has waited",
                     ["queue"])
NAMESPACE_UNLISTED = Gauge("limetask_namespace_unlisted",
                           "1 while a watched namespace cannot be listed (forbidden): its tasks wait, and what it "
                           "runs is counted against maxRunning only as last seen", ["namespace"])
EVENT_LOOP_LAG = Histogram(
    "limetask_event_loop_lag_seconds",
    "How late the operator's event loop ran a timer (sampled every LOOP_LAG_PERIOD): while it is late, no watch "
    "is read, no task reconciled and no lease renewed",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LOOP_LAG_PERIOD = 0.5
LEADER = Gauge("limetask_leader",
               "1 while this replica leads (holds the Lease, or runs without leader election) and reconciles; 0 while "
               "it stands by")
LEASE_LOST = Counter("limetask_lease_lost_total",
                     "Times this replica lost the Lease while leading (it could not renew in time) and stepped down")
_queues_seen: set[str] = set()


def leading() -> None:
    LEADER.set(1)


def stepped_down(lost: bool = True) -> None:
    """What only the leader knows is no longer reported by this replica: its queue and namespace
    gauges go (the next leader reports them), rather than stay at their last values."""
    LEADER.set(0)
    if lost:
        LEASE_LOST.inc()
    for gauge in (QUEUE_WAITING, QUEUE_RUNNING, QUEUE_OLDEST, NAMESPACE_UNLISTED):
        gauge.clear()
    _queues_seen.clear()
    if _archive_metrics is not None:
        _archive_metrics.pending.set(0)


def set_queue(name: str, waiting: int, running: int, oldest_wait: float) -> None:
    _queues_seen.add(name)
    QUEUE_WAITING.labels(name).set(waiting)
    QUEUE_RUNNING.labels(name).set(running)
    QUEUE_OLDEST.labels(name).set(oldest_wait)


async def watch_loop_lag(period: float = LOOP_LAG_PERIOD) -> None:
    """Sample the event loop's lag for ever: how much later than asked a sleep of `period` ends."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(period)
        EVENT_LOOP_LAG.observe(max(0.0, loop.time() - asked - period))


def queue_names() -> set[str]:
    """The queues reported so far (a queue gone is reported as empty, not left at its last value)."""
    return set(_queues_seen)


class ArchiveMetrics:
    """The archive's metrics, registered only by an operator that has an archive (so that none
    without one ever reports `limetask_archive_up 0`)."""

    def __init__(self) -> None:
        self.up = Gauge("limetask_archive_up", "1 while the archive takes writes, 0 while it cannot be written")
        self.pending = Gauge("limetask_archive_pending",
                             "Finished tasks waiting in the cluster to be written to the archive")
        self.written = Counter("limetask_archive_written_total", "Finished tasks written to the archive")
        self.failures = Counter("limetask_archive_failures_total", "Archive writes that failed (retried)")
        self.deleted = Counter("limetask_archive_deleted_total", "Archived LimeTasks deleted from the cluster")
        self.refused = Counter("limetask_archive_refused_total",
                               "Finished tasks whose row the archive refused (they stay in the cluster, not archived)")
        self.partitions_created = Counter("limetask_archive_partitions_created_total",
                                          "Daily archive partitions made (ahead of their day, or by a write)")
        self.partitions_dropped = Counter("limetask_archive_partitions_dropped_total",
                                          "Daily archive partitions dropped by retention")
        self.batch = Histogram("limetask_archive_batch_seconds", "Time to write one batch to the archive",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


_archive_metrics: ArchiveMetrics | None = None


def archive_metrics() -> ArchiveMetrics:
    global _archive_metrics
    if _archive_metrics is None:
        _archive_metrics = ArchiveMetrics()
    return _archive_metrics


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max((b - a).total_seconds(), 0.0)


def observe_final(task: TaskView) -> None:
    st = task.status
    reason = (st.get("error") or {}).get("reason", "") if st.get("state") == "FAILURE" else ""
    FINISHED.labels(st.get("state", ""), reason).inc()
    ATTEMPTS.observe(int(st.get("attempts") or 0))
    run = seconds_between(st.get("startedAt"), st.get("completedAt"))
    if run is not None:
        RUN_TIME.observe(run)


def observe_started(task: TaskView) -> None:
    latency = seconds_between(task.created, task.status.get("startedAt"))
    if latency is not None:
        QUEUE_LATENCY.observe(latency)


class StateCollector(Collector):
    """Tasks by state and reason, events awaiting confirmation, and queue depth, read at scrape time."""

    def __init__(self, tasks: Callable[[], dict[Any, TaskView]], queue_depth: Callable[[], int]) -> None:
        self.tasks = tasks
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state: Tally[tuple[str, str]] = Tally()
        unconfirmed = 0
        for t in list(self.tasks().values()):
            st = t.status
            state = st.get("state") or "PENDING"
            reason = (st.get("error") or {}).get("reason", "") if state == "FAILURE" else ""
            by_state[(state, reason)] += 1
            if state in ("SUCCESS", "FAILURE") and not (st.get("event") or {}).get("confirmed"):
                unconfirmed += 1
        g = GaugeMetricFamily("limetask_tasks", "LimeTasks the operator sees, by state and reason",
                              labels=["state", "reason"])
        for (state, reason), n in sorted(by_state.items()):
            g.add_metric([state, reason], n)
        yield g
        yield GaugeMetricFamily("limetask_events_unconfirmed", "Completion events not yet confirmed",
                                value=unconfirmed)
        yield GaugeMetricFamily("limetask_workqueue_depth", "Tasks waiting for a reconcile worker",
                                value=self.queue_depth())


_started = False


def serve(port: int, tasks: Callable[[], dict[Any, TaskView]], queue_depth: Callable[[], int],
          addr: str = "0.0.0.0") -> None:
    global _started
    if _started:
        return
    REGISTRY.register(StateCollector(tasks, queue_depth))
    start_http_server(port, addr=addr)
    _started = True
