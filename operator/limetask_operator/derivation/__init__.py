"""What a task's status should be, derived from the current LimeTask, Jobs and Pods.

Pure and level-based: the answer depends only on what exists now, never on which events
were seen, so batched or missed events cannot lead it astray.

`derive()` below is the specification: it asks each rule in turn, and the first that decides
gives the plan. Each rule is a pure function in a module of its own, with its inputs in its
signature and its own tests (tests/unit/derivation/test_<rule>.py):

    spec.py      a spec that cannot run here, or that changed
    cancel.py    the cancel annotation
    expiry.py    `expires` passed, wherever the task was waiting
    delay.py     a delayed start (eta)
    start.py     starting an attempt (its Job, or its Job refused), or one that never started in time
    queue.py     waiting in the queue for a slot, and leaving it
    kueue.py     a Job waiting for Kueue, or evicted by it
    outcome.py   what became of an attempt (read from its Job and pods)
    progress.py  an attempt still running or still to start
    finished.py  an attempt that ended with a verdict or passed its deadline
    retry.py     autoretry (autoretry_for, max_retries, backoff)
    oom.py       an attempt OOMKilled with memoryOnOOM: the next with more memory, or fail
    rerun.py     a lost worker: run again (late ack, or never started) or fail
    final.py     the final status, its event, and the task's Jobs cleaned up
    plan.py      the Plan, the Facts every rule reads, the words of a status
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from lime_task import verdict as verdicts
from lime_task.resource import FAILURE, FINAL_STATES
from lime_task.validation import parse_time

from ..admission.waiting import Waiting, waiting_attempt
from ..budgets import NOT_STARTED, Tally
from ..manifests import job_name, spec_hash
from ..model import JobView, PodView, TaskView
from ..resources import memory_steps
from .cancel import cancel, cancel_requested
from .delay import wait_for_eta
from .expiry import expired_before_start, expired_in_queue
from .final import already_final, final
from .finished import after_timeout, after_verdict
from .kueue import after_eviction, evicted_without_verdict
from .oom import after_oom, with_memory_in_history
from .outcome import (
    AttemptRunning,
    Lost,
    Outcome,
    TimedOut,
    admitted_before,
    attempt_outcome,
    describe_lost,
    lost_past_deadline,
    past_deadline,
    replaced_pod_jobs,
)
from .plan import (
    CANCELLED,
    EXPIRED,
    HISTORY_MAX,
    INVALID_SPEC,
    JOB_REFUSED,
    POD_REFUSED,
    PREEMPTED,
    QUOTA_EXCEEDED,
    RETRIES_EXHAUSTED,
    RETRY_SCHEDULED,
    SCHEDULED,
    SPEC_CHANGED,
    TIMED_OUT,
    Facts,
    Plan,
    condition,
    now_iso,
)
from .progress import ADMISSION_GRACE_SECONDS, admission_is_permanent, in_progress
from .queue import leave_queue
from .rerun import MAX_NOT_STARTED_RERUNS, after_lost
from .retry import retry_delay, retry_not_due, retry_recorded
from .spec import CLOCK_SKEW_SECONDS, NAME_MAX, SpecPolicy, check_spec, spec_changed, spec_problem
from .start import Refusal, not_started_in_time, start, stuck_before_start

__all__ = [
    "ADMISSION_GRACE_SECONDS", "CANCELLED", "CLOCK_SKEW_SECONDS", "EXPIRED", "HISTORY_MAX", "INVALID_SPEC",
    "JOB_REFUSED", "MAX_NOT_STARTED_RERUNS", "NAME_MAX", "POD_REFUSED", "PREEMPTED", "QUOTA_EXCEEDED",
    "RETRIES_EXHAUSTED", "RETRY_SCHEDULED", "SCHEDULED", "SPEC_CHANGED", "TIMED_OUT",
    "AttemptRunning", "Facts", "Lost", "Outcome", "Plan", "SpecPolicy", "TimedOut",
    "admission_is_permanent", "admitted_before", "attempt_outcome", "check_spec", "condition", "derive",
    "describe_lost", "facts_of", "leave_queue", "now_iso", "retry_delay",
]


def derive(task: TaskView, jobs: dict[int, JobView], pods: dict[int, list[PodView]], now: dt.datetime,
           max_attempts_ceiling: int, pods_fresh: bool = False, jobs_gone: frozenset[int] = frozenset(),
           allow_image_override: bool = True, resource_caps: dict[str, Any] | None = None,
           allow_placement_override: bool = True, runner_resources: dict[str, Any] | None = None,
           deny_unlisted_resources: bool = False, job_refused: Refusal | None = None,
           admission: str | None = None, queued: Waiting | None = None,
           start_timeout: float | None = None, kueue_note: str = "", max_memory_on_oom: str = "") -> Plan:
    """The plan for one task, from what exists now.

    `job_refused`: the API server's answer (status, message) when creating this attempt's Job
    failed. `admission`: the message of the job controller's last failure to create the
    attempt's pod ("" when the reconciler looked and found none). `queued`: the attempt to
    start has no slot in its queue yet (admission/): it waits, and its status says where.
    `start_timeout`: the queue's startTimeoutSeconds: an attempt whose worker has not started
    this long after its Job was made gives its slot back (a NotStarted attempt: it waits in
    line again). `kueue_note`: what a task whose Job waits for Kueue must also be told (that the
    cluster does not serve Kueue's API, say). `max_memory_on_oom`: the installation's cap of
    the sizes of memoryOnOOM (else the memory cap of `resource_caps`).
    """
    if task.status.get("state") in FINAL_STATES:
        return already_final(jobs, pods)
    policy = SpecPolicy(max_attempts_ceiling, allow_image_override, resource_caps or {}, allow_placement_override,
                        runner_resources or {}, deny_unlisted_resources, max_memory_on_oom)
    facts = facts_of(task, jobs, pods, now, jobs_gone)
    plan = _decide(facts, policy, pods_fresh, jobs_gone, job_refused,
                   admission, queued, start_timeout, kueue_note)
    if plan.status is not None and not plan.queued:
        plan.status = leave_queue(plan.status, task.generation, now)
    return with_memory_in_history(plan, facts, policy.runner_resources)


def facts_of(task: TaskView, jobs: dict[int, JobView], pods: dict[int, list[PodView]], now: dt.datetime,
             jobs_gone: frozenset[int] = frozenset()) -> Facts:
    """What every rule reads, read once."""
    st = task.status
    waits_for = waiting_attempt(st)
    attempt = max([int(st.get("attempts") or 0), waits_for or 0, *jobs.keys(), *pods.keys()])
    made_one = bool({attempt} & (jobs.keys() | pods.keys() | jobs_gone))
    return Facts(
        task=task, jobs=jobs, pods=pods, now=now,
        base={**st, "observedGeneration": task.generation},
        attempt=attempt,
        attempts_made=attempt - 1 if waits_for == attempt and not made_one else attempt,
        waits_for=waits_for,
        spec_hash=spec_hash(task.spec),
        eta=parse_time(task.spec.get("eta")),
        expires=parse_time(task.spec.get("expires")),
        tally=Tally.of(st),
        never_started=not st.get("startedAt") and not any(h.get("outcome") not in (NOT_STARTED, None)
                                                          for h in st.get("history") or []),
    )


def _decide(facts: Facts, policy: SpecPolicy, pods_fresh: bool, jobs_gone: frozenset[int],
            job_refused: Refusal | None, admission: str | None, queued: Waiting | None,
            start_timeout: float | None, kueue_note: str) -> Plan:
    task, st, now, attempt = facts.task, facts.status, facts.now, facts.attempt

    def begin(n: int, history: list[dict[str, Any]] | None = None) -> Plan:
        return start(facts, n, history, job_refused, queued)

    # A task asked to cancel, or whose spec changed, or that cannot run here: it fails.
    if cancel_requested(task.annotations):
        cancelled = cancel(facts, pods_fresh, jobs_gone)
        if cancelled is not None:
            return cancelled
    changed = spec_changed(st, facts.spec_hash)
    if changed:
        return final(facts, FAILURE, SPEC_CHANGED, changed, error_type=SPEC_CHANGED)
    if attempt == 0:
        problem = spec_problem(task.spec, task.name, parse_time(task.created) or now, policy)
        if problem:
            return final(facts, FAILURE, INVALID_SPEC, problem, error_type=INVALID_SPEC)

    # Before the first attempt: expired, waiting for its eta, or its first attempt starts.
    if attempt == 0:
        expired = expired_before_start(facts.expires, now)
        if expired:
            return final(facts, FAILURE, EXPIRED, expired, error_type=EXPIRED)
        return wait_for_eta(facts, facts.eta, facts.expires) or begin(1)

    # An attempt that raised an exception its task retries: the next one at the retry's time.
    if retry_recorded(st, attempt):
        return retry_not_due(st, now) or begin(attempt + 1, list(st.get("history") or []))

    # No Job made for this attempt yet: it waits in its queue, or is checked, or starts.
    job = facts.jobs.get(attempt)
    attempt_pods = facts.pods.get(attempt, [])
    no_job = job is None and not attempt_pods and attempt not in jobs_gone
    if no_job and facts.waits_for == attempt:
        expired = expired_in_queue(facts.expires, facts.never_started, now)
        if expired:
            return final(facts, FAILURE, EXPIRED, expired, error_type=EXPIRED)
        return begin(attempt, list(st["history"]) if st.get("history") else None)
    if no_job:
        if st.get("jobName") == job_name(task.name, attempt) and int(st.get("attempts") or 0) == attempt:
            return Plan(verify_job=attempt)  # the status says its Job was made: check the API
        return begin(attempt)

    # Kueue evicted the Job after it was admitted: it fails, or waits to be admitted again.
    evicted, admitted_now = admitted_before(job, attempt_pods)
    if job is not None and evicted_without_verdict(job, evicted):
        decided = after_eviction(facts, job, evicted)
        if decided is not None:
            return decided
        attempt_pods = admitted_now

    # What became of the attempt.
    # The task's timeout, else the installation's default, which the operator put on the Job.
    limit = task.spec.get("timeoutSeconds") or (job.deadline if job is not None else None)
    deadline_passed = past_deadline(limit, job, attempt_pods, now)
    outcome: Outcome | None = lost_past_deadline(
        attempt_outcome(job, attempt_pods, job_gone=attempt in jobs_gone), limit, deadline_passed)
    stopping = replaced_pod_jobs(job, attempt_pods, deadline_passed)
    if outcome is None:
        if not pods_fresh:
            return Plan(need_fresh_pods=attempt, stop_jobs=stopping)  # the caches cannot tell: read the API
        outcome = Lost("the pod of this attempt was removed before its verdict was read")
    if isinstance(outcome, AttemptRunning) and stuck_before_start(facts, outcome, job, start_timeout, now):
        # Only on the pods as the API has them now: a container that started just before the
        # timeout may not be in the cache yet, and stopping it would run the task twice.
        if not pods_fresh:
            return Plan(need_fresh_pods=attempt, stop_jobs=stopping)
        outcome = not_started_in_time(outcome, start_timeout or 0.0)

    # Still running or still to start; or ended: a verdict, a timeout, or a lost worker.
    if isinstance(outcome, AttemptRunning):
        return in_progress(facts, outcome, job, attempt_pods, admission, start_timeout, kueue_note, stopping)
    # When the attempt ended: its pod's finish time, not the time this was noticed.
    ended_at = max(((p.terminated or {}).get("finishedAt") or "" for p in attempt_pods), default="") or facts.stamp
    if isinstance(outcome, verdicts.Verdict):
        return after_verdict(facts, outcome, ended_at, stopping)
    if isinstance(outcome, TimedOut):
        return after_timeout(facts, outcome, stopping)
    if outcome.oom and memory_steps(task.spec):
        return after_oom(facts, outcome, ended_at, policy.memory_cap(), policy.runner_resources, job_refused, queued,
                         stopping)
    return after_lost(facts, outcome, ended_at, policy.max_attempts_ceiling, job_refused, queued, stopping)
