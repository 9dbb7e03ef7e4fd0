"""Starting an attempt: its Job is made, or it waits in its queue, or the API server refused it.
Also the attempt that got its Job but whose worker never started in time (start timeout)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from lime_task.resource import FAILURE, PENDING, STARTED

from ..admission.waiting import Waiting
from ..budgets import Tally
from ..manifests import job_name
from ..model import JobView
from ..resources import step_for
from .final import final
from .outcome import AttemptRunning, Lost
from .plan import HISTORY_MAX, INVALID_SPEC, JOB_REFUSED, QUOTA_EXCEEDED, Facts, Plan, age, condition, unchanged
from .queue import earlier_jobs_running, wait_in_queue

# The API server's answer when creating this attempt's Job failed: (HTTP status, message).
Refusal = tuple[int, str]


def start(facts: Facts, n: int, history: Sequence[dict[str, Any]] | None = None, job_refused: Refusal | None = None,
          queued: Waiting | None = None, stopping: Sequence[str] = ()) -> Plan:
    """Attempt n: its Job is made now, unless the API server refused it or its queue has no
    slot for it yet. `stopping`: Jobs another rule stops already (kept if nothing is made)."""
    if job_refused is not None:
        return refused(facts, n, *job_refused, history=history, stopping=stopping)
    if queued is not None:
        return wait_in_queue(facts, n, history, queued)
    new = facts.new_status()
    new.pop("retryAt", None)
    new.update(state=PENDING, attempts=n, jobName=job_name(facts.task.name, n), specHash=facts.spec_hash)
    if history is not None:
        new["history"] = list(history)[-HISTORY_MAX:]
    # After OOMKilled attempts of a task with memoryOnOOM, its size for them (oom.py): the count
    # is the one this status stores, with the attempt that just ended in it.
    ooms = Tally.of(new).oom
    memory = step_for(facts.task.spec, ooms)
    msg = "waiting for the worker to start" if n == 1 else f"attempt {n}: waiting for the worker to start"
    if memory is not None:
        msg += f" (with {memory} of memory, after {ooms} OOMKilled attempt{'s' if ooms != 1 else ''})"
    new["conditions"] = condition(facts.conditions(), "Unknown", "Pending", msg, facts.task.generation, facts.stamp)
    return Plan(status=new, create_attempt=n, stop_jobs=earlier_jobs_running(facts.jobs, n), memory=memory)



def refused(facts: Facts, n: int, code: int, message: str, history: Sequence[dict[str, Any]] | None = None,
            stopping: Sequence[str] = ()) -> Plan:
    """The API server refused this attempt's Job: a bad spec fails, a quota or a
    permission waits (the status keeps the attempt unstarted, so it is tried again; one
    that waited in its queue stays in line, its place and history as they were)."""
    text = f"the Kubernetes API refused the Job of attempt {n}: {message}"
    if code in (400, 422):
        return final(facts, FAILURE, INVALID_SPEC, text, error_type=INVALID_SPEC,
                     history=list(history) if history is not None else None, stopping=stopping)
    st = facts.status
    new = facts.new_status()
    new["state"] = st.get("state") or PENDING
    reason = QUOTA_EXCEEDED if "exceeded quota" in message else JOB_REFUSED
    new["conditions"] = condition(facts.conditions(), "Unknown", reason, text, facts.task.generation, facts.stamp)
    return Plan(status=None if unchanged(new, st) else new, queued=facts.waits_for == n, recheck_after=15.0,
                stop_jobs=list(stopping))


def stuck_before_start(facts: Facts, outcome: AttemptRunning, job: JobView | None, start_timeout: float | None,
                       now: dt.datetime) -> bool:
    """Whether the attempt's worker has not started `start_timeout` seconds (the queue's
    startTimeoutSeconds) after its Job was made: an image that cannot be pulled, a pod that
    cannot be scheduled. Its slot goes back, and the task waits in line again."""
    return (outcome.started is None and start_timeout is not None and job is not None
            and not job.suspended and not job.deleting and facts.status.get("state") != STARTED
            and age(job.created, now) >= start_timeout)


def not_started_in_time(outcome: AttemptRunning, start_timeout: float) -> Lost:
    """The stuck attempt as a worker that never started (nothing of the task ran)."""
    why = f": {outcome.waiting[0]}: {outcome.waiting[1]}" if outcome.waiting else ""
    return Lost(f"the worker had not started {int(start_timeout)}s after its Job was made (the queue's "
                f"startTimeoutSeconds){why}".rstrip(": "), started=False)
