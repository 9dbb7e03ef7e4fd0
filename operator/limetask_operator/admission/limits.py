"""A queue's limits (its LimeTaskQueue), and what holds a slot in it now.

`maxRunning` (the whole queue), `maxRunningPerNamespace` and `maxRunningPerApp`; its pace,
`maxStartsPerSecond`; and `maxPriority`, the highest priority its tasks count with. A queue with
`admission: Kueue` is limited by Kueue, not here. What runs is counted from the cluster as the
caches mirror it (`holds_slot`), never from memory of past decisions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lime_task.resource import DEFAULT_QUEUE, FINAL_STATES, GROUP, PRIORITY_MAX, PRIORITY_MIN, QUEUE_PLURAL, VERSION

from ..model import JobView, PodView, TaskView

# Who admits a queue's Jobs (its spec.admission).
OPERATOR = "Operator"
KUEUE = "Kueue"
KUEUE_GROUP = "kueue.x-k8s.io"


def queue_path(name: str = "", sub: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/{QUEUE_PLURAL}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def queue_name(task: TaskView, default: str = DEFAULT_QUEUE) -> str:
    """The task's queue: its own, else the installation's default queue."""
    return str(task.spec.get("queue") or default)


def _limit(spec: dict[str, Any], name: str, low: int) -> int | None:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        return None
    return value


def _rate(spec: dict[str, Any], name: str) -> float | None:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    return float(value)


def _priority(spec: dict[str, Any], name: str) -> int | None:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        return None
    return value


@dataclass(frozen=True)
class QueueSpec:
    name: str
    max_running: int | None = None
    per_namespace: int | None = None
    per_app: int | None = None
    aging_seconds: float = 60.0
    start_timeout: float | None = None  # startTimeoutSeconds: a worker not started by then gives its slot back
    admission: str = OPERATOR
    kueue_queue: str = ""
    # maxStartsPerSecond: tasks started a second at most (a token bucket of one; not with Kueue).
    starts_per_second: float | None = None
    # maxPriority: a task's priority counts as this at most in the queue's line.
    max_priority: int | None = None
    exists: bool = True
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "QueueSpec":
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        aging = spec.get("agingSeconds")
        return cls(
            name=str(meta.get("name", "")), max_running=_limit(spec, "maxRunning", 0),
            per_namespace=_limit(spec, "maxRunningPerNamespace", 1), per_app=_limit(spec, "maxRunningPerApp", 1),
            aging_seconds=float(aging) if isinstance(aging, (int, float)) and not isinstance(aging, bool)
            and aging >= 1 else 60.0,
            # Kueue's own waitForPodsReady is the start timeout of the Jobs it admits.
            start_timeout=(float(_limit(spec, "startTimeoutSeconds", 1) or 0) or None)
            if spec.get("admission") != KUEUE else None,
            admission=KUEUE if spec.get("admission") == KUEUE else OPERATOR,
            kueue_queue=str(spec.get("kueueQueueName") or meta.get("name", "")),
            starts_per_second=_rate(spec, "maxStartsPerSecond") if spec.get("admission") != KUEUE else None,
            max_priority=_priority(spec, "maxPriority"),
            metadata={k: meta[k] for k in ("name", "resourceVersion", "uid") if k in meta},
        )

    @property
    def limited(self) -> bool:
        """Whether the operator counts slots for this queue (it has a limit, and no Kueue)."""
        return self.admission != KUEUE and (self.max_running is not None or self.per_namespace is not None
                                            or self.per_app is not None)

    def limits_text(self) -> str:
        parts = [f"{n} {v}" for n, v in (("maxRunning", self.max_running),
                                          ("maxRunningPerNamespace", self.per_namespace),
                                          ("maxRunningPerApp", self.per_app)) if v is not None]
        if self.starts_per_second is not None:
            parts.append(f"maxStartsPerSecond {self.starts_per_second:g}")
        return ", ".join(parts) or "no limit"


@dataclass
class SlotCounts:
    """Tasks holding a slot, per queue, per (queue, namespace) and per (queue, namespace, app);
    and per queue, the Jobs made suspended that wait for Kueue."""

    queue: Counter[str] = field(default_factory=Counter)
    namespace: Counter[tuple[str, str]] = field(default_factory=Counter)
    app: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    kueue: Counter[str] = field(default_factory=Counter)

    def add(self, queue: str, namespace: str, app: str) -> None:
        self.queue[queue] += 1
        self.namespace[(queue, namespace)] += 1
        self.app[(queue, namespace, app)] += 1

    def full(self, q: QueueSpec, namespace: str, app: str) -> str | None:
        """Which limit a task of (namespace, app) would pass in queue q, or None."""
        if q.max_running is not None and self.queue[q.name] >= q.max_running:
            return f"the queue runs {self.queue[q.name]} of its maxRunning {q.max_running}"
        if q.per_namespace is not None and self.namespace[(q.name, namespace)] >= q.per_namespace:
            return f"namespace {namespace} runs {q.per_namespace} (maxRunningPerNamespace)"
        if q.per_app is not None and self.app[(q.name, namespace, app)] >= q.per_app:
            return f"application {app} runs {q.per_app} (maxRunningPerApp)"
        return None


def _mine(task: TaskView, child: JobView | PodView) -> bool:
    return child.task_uid in (task.uid, "")


def holds_slot(task: TaskView, jobs: dict[str, JobView], pods: dict[str, PodView]) -> bool:
    """Whether a task holds a slot: unfinished, with a pod that has not ended and is not being
    deleted (the pod is what runs: also one whose Job went first), or a Job that has not
    finished, is not being deleted, and whose pods have not all ended (its pod is yet to come).
    A Job made suspended for Kueue holds none until Kueue lets its pod be made. Stuck work never
    holds one past its end: a cancelled, timed-out or lost attempt's Job is finished or being
    deleted, and its pod follows."""
    if task.status.get("state") in FINAL_STATES:
        return False
    for pod in pods.values():
        if _mine(task, pod) and not (pod.ended or pod.deleting or pod.gone):
            return True
    for job in jobs.values():
        if not _mine(task, job) or job.finished or job.deleting or job.gone:
            continue
        mine = [p for p in pods.values() if p.attempt == job.attempt and _mine(task, p)]
        if (mine and all(p.ended or p.deleting for p in mine)) or (job.suspended and not mine):
            continue
        return True
    return False


def waits_for_kueue(task: TaskView, jobs: dict[str, JobView], pods: dict[str, PodView]) -> bool:
    """Whether the task's Job is made, suspended, and waits for Kueue to admit it (no pod yet)."""
    if task.status.get("state") in FINAL_STATES:
        return False
    return any(_mine(task, job) and job.suspended and not (job.finished or job.deleting or job.gone)
               and not any(p.attempt == job.attempt and _mine(task, p) for p in pods.values())
               for job in jobs.values())
