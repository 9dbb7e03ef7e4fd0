"""A Job made suspended for Kueue: it waits to be admitted, and may be evicted after it was.

Kueue admits a Job by resuming it, and evicts one (preempted, or its pods not ready in time)
by suspending it again, after which the job controller deletes its pod. The same Job then
waits in Kueue's queue and runs when resumed; the pods of its earlier admission do not count.
"""

from __future__ import annotations

from typing import Any

from lime_task import verdict as verdicts
from lime_task.resource import CONDITION_QUEUED, FAILURE, PENDING, STARTED

from ..manifests import job_name
from ..model import JobView, PodView
from .expiry import expired_waiting_for_kueue, until_expiry
from .final import final
from .outcome import container_ran
from .plan import EXPIRED, PREEMPTED, Facts, Plan, condition, unchanged


def wait_for_kueue(facts: Facts, job: JobView, text: str, since: str) -> Plan:
    """The attempt's Job is suspended for Kueue to admit (resume): PENDING, Queued with reason
    Kueue. No Job is made or stopped: Kueue resumes this one."""
    st, ts, task = facts.status, facts.stamp, facts.task
    new = facts.new_status()
    new.update(state=PENDING, attempts=facts.attempt, jobName=job_name(task.name, facts.attempt),
               specHash=facts.spec_hash)
    queue_block: dict[str, Any] = st["queue"] if isinstance(st.get("queue"), dict) else {}
    new["queue"] = {"name": str(task.spec.get("queue") or "default"),
                    "since": queue_block.get("since") or since or ts,
                    "updatedAt": queue_block.get("updatedAt") or ts}
    new["conditions"] = condition(condition(facts.conditions(), "Unknown", "Queued", text, task.generation, ts),
                                  "True", "Kueue", text, task.generation, ts, kind=CONDITION_QUEUED)
    return Plan(status=None if unchanged(new, st) else new, queued=True,
                recheck_after=until_expiry(facts.expires, facts.never_started, facts.now))


def evicted_without_verdict(job: JobView | None, evicted: list[PodView]) -> bool:
    """Kueue evicted the Job after it was admitted, and no pod of that admission left a verdict."""
    return job is not None and bool(evicted) and not any(
        verdicts.parse((p.terminated or {}).get("message")) for p in evicted)


def after_eviction(facts: Facts, job: JobView, evicted: list[PodView]) -> Plan | None:
    """A Job Kueue evicted: under early acknowledgement a task that had started fails
    (Preempted: Kueue would run all of it again); otherwise the suspended Job waits to be
    admitted again (or expires meanwhile). None: the Job runs again, and only the pods of its
    new admission count."""
    st, attempt = facts.status, facts.attempt
    ran = container_ran(evicted) or (st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt)
    what = (f"Job {job.name} was suspended after {'its worker started' if ran else 'it was admitted'} (Kueue "
            f"preempted or evicted it), and its pod deleted")
    if ran and not facts.task.spec.get("acksLate"):
        history = [*(st.get("history") or []), {
            "attempt": attempt, "jobName": job.name, "outcome": PREEMPTED, "reason": PREEMPTED,
            "message": what, "finishedAt": job.suspend_changed or facts.stamp}]
        return final(facts, FAILURE, PREEMPTED, f"{what}; early acknowledgement: not re-run, since Kueue would run "
                     f"the whole task again (with acks_late=True it waits to be admitted again)",
                     error_type=PREEMPTED, history=history)
    if job.suspended:
        expired = expired_waiting_for_kueue(facts.expires, facts.never_started, facts.now)
        if expired:
            return final(facts, FAILURE, EXPIRED, expired, error_type=EXPIRED)
        return wait_for_kueue(facts, job, f"{what}; it waits in Kueue's queue to be admitted again",
                              since=job.suspend_changed)
    return None
