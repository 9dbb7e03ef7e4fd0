"""An attempt that has not ended: STARTED once its worker runs, PENDING (and why) before.

A pending attempt's Job with no pod may have been refused by the job controller (a
LimitRange, a quota, admission): only the controller's events say so, and they are read once
the pod is later than a grace period allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lime_task.resource import FAILURE, PENDING, STARTED

from ..manifests import job_name
from ..model import JobView, PodView
from .expiry import expired_before_worker_started, until_expiry
from .final import final
from .kueue import wait_for_kueue
from .outcome import AttemptRunning
from .plan import EXPIRED, INVALID_SPEC, POD_REFUSED, QUOTA_EXCEEDED, Facts, Plan, age, condition, sooner, unchanged

# A Job with no pod this long after it was made: ask why (the job controller's events). Long
# enough that a busy node or a burst of tasks, where pods come late, asks nothing.
ADMISSION_GRACE_SECONDS = 10.0
# While the job controller cannot make the pod (a quota, say): look again this often.
POD_REFUSED_RECHECK_SECONDS = 10.0


def admission_is_permanent(message: str) -> bool:
    """Whether the job controller's failure to create a pod will never pass by itself.

    A LimitRange or Pod Security refusal, or an invalid pod, stays; a full quota, or a
    namespace whose service account is not made yet, passes.
    """
    text = message.lower()
    if "exceeded quota" in text or "serviceaccount" in text or "service account" in text:
        return False
    return "is forbidden" in text or "is invalid" in text


def in_progress(facts: Facts, outcome: AttemptRunning, job: JobView | None, pods: list[PodView],
                admission: str | None, start_timeout: float | None, kueue_note: str,
                stopping: Sequence[str] = ()) -> Plan:
    """The status of an attempt still running or still to start. `admission`: the job
    controller's last complaint about this attempt's pod ("" when there was none, None when
    not read yet). `stopping`: Jobs another rule stops already."""
    st, ts, now, attempt, task = facts.status, facts.stamp, facts.now, facts.attempt, facts.task
    unchanged_plan = Plan(stop_jobs=list(stopping))
    if outcome.started is None and st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt:
        return unchanged_plan  # a pod not (yet) in the cache never takes a started attempt back to PENDING
    if outcome.started is None and st.get("state") != STARTED:
        expired = expired_before_worker_started(facts.expires, facts.never_started, now)
        if expired:
            return final(facts, FAILURE, EXPIRED, expired, error_type=EXPIRED, stopping=stopping)
    recheck: float | None = None
    new = facts.new_status()
    new.update(attempts=attempt, jobName=job_name(task.name, attempt), specHash=facts.spec_hash)
    if outcome.started is not None:
        new["state"] = STARTED
        new.setdefault("startedAt", outcome.started or ts)
        cond = condition(facts.conditions(), "Unknown", "Running", f"attempt {attempt} is running",
                         task.generation, ts)
    else:
        new["state"] = PENDING
        reason, message = "Pending", "waiting for the worker to start"
        if outcome.waiting is not None:
            reason, message = outcome.waiting[0], f"{message}: {outcome.waiting[0]}: {outcome.waiting[1]}"
        elif job is not None and job.suspended and not pods:
            # Made suspended for Kueue: it waits for Kueue to admit (resume) it.
            return wait_for_kueue(facts, job, f"waiting for Kueue to admit Job {job.name}{kueue_note}",
                                  since=job.created)
        elif job is not None and not pods and age(job.created, now) <= ADMISSION_GRACE_SECONDS:
            # No watch event will come if the pod is refused: look again after the grace.
            recheck = ADMISSION_GRACE_SECONDS - age(job.created, now) + 0.5
        elif job is not None and not pods:
            # The job controller has made no pod: it may have been refused (LimitRange,
            # quota, admission). Only the controller's events say so.
            if admission is None:
                return Plan(check_admission=attempt, stop_jobs=list(stopping))
            recheck = POD_REFUSED_RECHECK_SECONDS
            if admission:
                text = f"the pod of attempt {attempt} was refused: {admission}"
                if admission_is_permanent(admission):
                    return dataclasses.replace(
                        final(facts, FAILURE, INVALID_SPEC, text, error_type=INVALID_SPEC, stopping=stopping),
                        recheck_after=recheck)
                reason = QUOTA_EXCEEDED if "exceeded quota" in admission else POD_REFUSED
                message = text
        cond = condition(facts.conditions(), "Unknown", reason.rstrip(".") or "Pending",
                         message.rstrip(": "), task.generation, ts)
        if start_timeout is not None and job is not None and job.created:
            # The start timeout is due then.
            recheck = sooner(recheck, max(start_timeout - age(job.created, now), 0.0) + 0.5)
        recheck = sooner(recheck, until_expiry(facts.expires, facts.never_started, now))
    new["conditions"] = cond
    return Plan(status=None if unchanged(new, st) else new, stop_jobs=list(stopping), recheck_after=recheck)
