"""Cancelling a task (its cancel annotation): FAILURE Cancelled, unless a verdict is in already.

A verdict already written wins: a task that has finished cannot be cancelled, even when its
pod finished just before the cancel and its status does not say so yet. A verdict that will
be retried is not the last word, so a cancel then wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from lime_task import verdict as verdicts
from lime_task.resource import ANNOTATION_CANCEL, FAILURE

from .final import final
from .outcome import attempt_outcome
from .plan import CANCELLED, Facts, Plan
from .retry import will_retry


def cancel_requested(annotations: Mapping[str, str]) -> bool:
    return annotations.get(ANNOTATION_CANCEL, "").lower() in ("true", "yes", "1")


def cancel(facts: Facts, pods_fresh: bool, jobs_gone: frozenset[int]) -> Plan | None:
    """The plan of a task asked to cancel: FAILURE Cancelled, or a fresh read of the pods first
    (its verdict may be in a pod the cache has not seen). None: the verdict stands."""
    attempt, jobs, pods = facts.attempt, facts.jobs, facts.pods
    current = attempt_outcome(jobs.get(attempt), pods.get(attempt, []), job_gone=attempt in jobs_gone) \
        if attempt and (attempt in jobs or attempt in pods) else None
    if current is None and attempt in jobs and jobs[attempt].finished and not pods_fresh:
        return Plan(need_fresh_pods=attempt)
    if not isinstance(current, verdicts.Verdict) or will_retry(current, facts.status, attempt):
        return final(facts, FAILURE, CANCELLED, "the task was cancelled", error_type=CANCELLED)
    return None
