"""What every rule returns (the Plan), what every rule reads (the Facts), and the words of a status.

The Facts are read once from the LimeTask, its Jobs and pods, and never change; a rule that
needs a status with more in it (its counters, say) is handed Facts made anew with
`dataclasses.replace`, never a dict another rule may still write into.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..budgets import Kind, Tally, and_list
from ..model import JobView, PodView, TaskView

TIMED_OUT = "TimedOut"
CANCELLED = "Cancelled"
RETRIES_EXHAUSTED = "RetriesExhausted"
SPEC_CHANGED = "SpecChanged"
INVALID_SPEC = "InvalidSpec"
QUOTA_EXCEEDED = "QuotaExceeded"
JOB_REFUSED = "JobRefused"
POD_REFUSED = "PodRefused"
EXPIRED = "Expired"
PREEMPTED = "Preempted"  # Kueue evicted a Job whose task had started, under early acknowledgement
SCHEDULED = "Scheduled"  # waiting for its eta: no Job, no pod
RETRY_SCHEDULED = "RetryScheduled"
HISTORY_MAX = 10


@dataclass
class Plan:
    """What the reconciler must do: at most one Job to create, a status, Jobs to stop or delete."""

    status: dict[str, Any] | None = None
    create_attempt: int | None = None
    # Jobs that have finished: deleted once the status is stored (unless the platform keeps them).
    delete_jobs: list[str] = field(default_factory=list)
    # Jobs whose pod still runs although the task is over (cancelled, spec changed): always stopped.
    stop_jobs: list[str] = field(default_factory=list)
    # The caches cannot tell: read the pods of this attempt from the API, then decide again.
    need_fresh_pods: int | None = None
    # The status says this attempt's Job was made, the cache does not have it: check the API.
    verify_job: int | None = None
    # This attempt's Job has no pod yet: read the job controller's events to learn why.
    check_admission: int | None = None
    # Nothing will change by itself that a watch would see: reconcile again after this long.
    recheck_after: float | None = None
    # The task waits in its queue (its status says so; no Job is made).
    queued: bool = False
    # The attempt's Job is made suspended, for Kueue to admit (the LocalQueue's name).
    kueue_queue: str | None = None
    # The memory request and limit of the attempt's Job (create_attempt): the size of the task's
    # memoryOnOOM for the attempts OOMKilled before it; None: the task's own resources.
    memory: str | None = None


@dataclass(frozen=True)
class Facts:
    """What the rules read: the task, its Jobs and pods by attempt, the time, and what follows."""

    task: TaskView
    jobs: Mapping[int, JobView]
    pods: Mapping[int, list[PodView]]
    now: dt.datetime
    # The stored status with this generation observed: every new status starts from a copy of it.
    base: Mapping[str, Any]
    # The attempt the task is at: the latest one with a Job, a pod, a status or a place in line.
    attempt: int
    # status.attempts counts the attempts that made a Job: not one that still waits in line.
    attempts_made: int
    # The attempt that waits in its queue (no Job made), or None.
    waits_for: int | None
    spec_hash: str
    eta: dt.datetime | None
    expires: dt.datetime | None
    # The attempts that ended in each way that runs the task again (budgets.py).
    tally: Tally
    # Nothing of the task has ever run (no attempt got past its start).
    never_started: bool

    @property
    def status(self) -> dict[str, Any]:
        return self.task.status

    @property
    def stamp(self) -> str:
        return now_iso(self.now)

    def new_status(self) -> dict[str, Any]:
        """A copy of the stored status to write changes into."""
        return dict(self.base)

    def conditions(self) -> list[dict[str, Any]]:
        return self.task.status.get("conditions") or []


def now_iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(previous: list[dict[str, Any]], status: str, reason: str, message: str, generation: int,
              now: str, kind: str = "Succeeded") -> list[dict[str, Any]]:
    """The conditions with the one of type `kind` set (Succeeded first; the others kept)."""
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    new = {
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
        "observedGeneration": generation,
    }
    others = [c for c in previous if c.get("type") != kind]
    return [new, *others] if kind == "Succeeded" else [*others, new]


def unchanged(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Equal but for times that only move when something else changed."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in d.get("conditions") or []]
        return out
    return strip(new) == strip(old)


def age(stamp: str, now: dt.datetime) -> float:
    """Seconds since an RFC 3339 time (0 when it cannot be read)."""
    try:
        made = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (now - made).total_seconds()


def sooner(current: float | None, other: float | None) -> float | None:
    """The earlier of two recheck delays (None: no recheck)."""
    if other is None:
        return current
    return other if current is None else min(current, other)


def n_of(n: int, attempts: int) -> str:
    """"all 3 attempts", or "2 of 5 attempts"."""
    return f"all {n} attempts" if n >= attempts else f"{n} of {attempts} attempts"


def others(tally: Tally, kind: Kind) -> str:
    """What became of the other attempts, for a message ("" when they all ended this way)."""
    rest = tally.others(kind)
    return f"; of the other attempts, {and_list(rest)}" if rest else ""
