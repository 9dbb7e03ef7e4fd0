"""An attempt that ended with a verdict, or passed its deadline: the task's final status, or
(an exception its autoretry_for names) a retry."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lime_task import verdict as verdicts
from lime_task.resource import FAILURE, SUCCESS

from ..manifests import job_name
from .final import final
from .outcome import TimedOut
from .plan import TIMED_OUT, Facts, Plan
from .retry import retry


def after_verdict(facts: Facts, verdict: verdicts.Verdict, ended_at: str, stopping: Sequence[str] = ()) -> Plan:
    """SUCCESS with its result, FAILURE with its error, or the retry the verdict asks for."""
    task, attempt = facts.task, facts.attempt
    history: list[dict[str, Any]] = list(facts.status.get("history") or [])
    entry = {"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": verdict.state,
             "reason": "Succeeded" if verdict.state == SUCCESS else verdict.error.get("reason", ""),
             "message": "" if verdict.state == SUCCESS else verdict.error.get("message", ""),
             "finishedAt": ended_at}
    if "startedAt" not in facts.base:
        facts = dataclasses.replace(facts, base={**facts.base, "startedAt": facts.stamp})
    if verdict.state == FAILURE and verdict.retry is not None:
        return retry(facts, verdict, entry, history, ended_at, stopping)
    history.append(entry)
    if verdict.state == SUCCESS:
        return final(facts, SUCCESS, "Succeeded", "", result=verdict.result, history=history, completed_at=ended_at,
                     stopping=stopping)
    err = verdict.error
    return final(facts, FAILURE, err.get("reason") or verdicts.TASK_RAISED, err.get("message", ""),
                 error_type=err.get("type"), history=history, completed_at=ended_at, stopping=stopping)


def after_timeout(facts: Facts, timed_out: TimedOut, stopping: Sequence[str] = ()) -> Plan:
    """FAILURE TimedOut, never re-run."""
    job = facts.jobs.get(facts.attempt)
    limit = facts.task.spec.get("timeoutSeconds") or (job.deadline if job is not None else None)  # None: default
    history = [*(facts.status.get("history") or []),
               {"attempt": facts.attempt, "jobName": job_name(facts.task.name, facts.attempt), "outcome": FAILURE,
                "reason": TIMED_OUT, "message": timed_out.message, "finishedAt": facts.stamp}]
    return final(facts, FAILURE, TIMED_OUT, f"the task did not finish within its timeout of {limit} seconds"
                 if limit else f"the task passed its deadline: {timed_out.message}",
                 error_type=TIMED_OUT, history=history, stopping=stopping)
