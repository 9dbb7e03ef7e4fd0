"""A lost worker: whether the task runs again, and on which budget (budgets.py).

An attempt whose worker never started ran nothing of the task: it runs again under any
acknowledgement, at most MAX_NOT_STARTED_RERUNS times. A worker lost after it started runs
again only under late acknowledgement, up to maxAttempts (bounded by the cluster's ceiling);
under early acknowledgement the task fails at once (WorkerLost).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lime_task.resource import DEFAULT_MAX_ATTEMPTS, FAILURE, STARTED

from ..admission.waiting import Waiting
from ..budgets import NOT_STARTED, WORKER_LOST
from ..manifests import job_name
from .final import final
from .outcome import Lost
from .plan import RETRIES_EXHAUSTED, Facts, Plan, n_of, others
from .start import Refusal, start

# How many attempts whose worker never started are run again, whatever the acknowledgement.
MAX_NOT_STARTED_RERUNS = 3


def after_lost(facts: Facts, lost: Lost, ended_at: str, max_attempts_ceiling: int,
               job_refused: Refusal | None = None, queued: Waiting | None = None,
               stopping: Sequence[str] = ()) -> Plan:
    """The next attempt, or FAILURE (WorkerLost, RetriesExhausted). `ended_at`: when the
    attempt ended; `job_refused`, `queued`: what starting the next attempt met already."""
    st, attempt, tally, task = facts.status, facts.attempt, facts.tally, facts.task
    history: list[dict[str, Any]] = list(st.get("history") or [])

    def entry(outcome: str) -> dict[str, Any]:
        return {"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": outcome, "reason": outcome,
                "message": lost.message, "finishedAt": ended_at}

    seen_running = st.get("state") == STARTED and int(st.get("attempts") or 0) == attempt
    if not lost.started and not seen_running:
        # Nothing of the task ran: safe to run again, even under early acknowledgement.
        history.append(entry(NOT_STARTED))
        counts = dataclasses.replace(tally, not_started=tally.not_started + 1)
        counted = dataclasses.replace(facts, base={**facts.base, **counts.counters()})
        if tally.not_started < MAX_NOT_STARTED_RERUNS:
            return start(counted, attempt + 1, history, job_refused, queued, stopping)
        return final(counted, FAILURE, WORKER_LOST, f"no worker started in {n_of(counts.not_started, attempt)} (an "
                     f"attempt whose worker never started runs again at most {MAX_NOT_STARTED_RERUNS} times"
                     f"{others(counts, 'not_started')}); last: {lost.message}",
                     error_type=WORKER_LOST, history=history, stopping=stopping)
    history.append(entry(WORKER_LOST))
    counts = dataclasses.replace(tally, lost=tally.lost + 1)
    counted = dataclasses.replace(facts, base={**facts.base, **counts.counters()})
    if not task.spec.get("acksLate"):
        which = f"; it was attempt {attempt}{others(counts, 'lost')}" if attempt > 1 else ""
        return final(counted, FAILURE, WORKER_LOST, f"{lost.message} (early acknowledgement: not re-run{which})",
                     error_type=WORKER_LOST, history=history, stopping=stopping)
    limit = min(int(task.spec.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS), max_attempts_ceiling)
    if counts.lost < limit:
        return start(counted, attempt + 1, history, job_refused, queued, stopping)
    return final(counted, FAILURE, RETRIES_EXHAUSTED,
                 f"the worker was lost in {n_of(counts.lost, attempt)} (maxAttempts is {limit})"
                 f"{others(counts, 'lost')}; last: {lost.message}",
                 error_type=WORKER_LOST, history=history, stopping=stopping)
