"""An attempt OOMKilled, of a task with memoryOnOOM: the next attempt with more memory, or
FAILURE OOMKilled once the last size ran out of memory too.

With spec.memoryOnOOM an attempt that ran out of memory is not a lost worker: the attempt after
j OOMKilled ones has the j-th size as its container's memory request and limit, under either
acknowledgement (the kernel stopped the task for its memory, and running it with more is what
the task asked for). The sizes bound it: it never runs again for ever. These attempts count on
a budget of their own (`oomKilled`, budgets.py), never against maxAttempts (lost workers),
max_retries (autoretry) or the bound of attempts that never started, which keep counting
theirs whatever memory their attempts had. Without memoryOnOOM, an OOMKilled attempt is a lost
worker as before (rerun.py).

A size over the installation's cap is refused before the first attempt (spec.py); one found
over it later (the cap lowered since) ends the task here, never making an over-cap Job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from lime_task.resource import FAILURE

from ..admission.waiting import Waiting
from ..budgets import OOM_KILLED, and_list
from ..manifests import job_name
from ..resources import attempt_memory, memory_steps, quantity
from .final import final
from .outcome import Lost
from .plan import Facts, Plan
from .start import Refusal, start

# (the most memory a size may have here, the setting that says so); (None, "") when uncapped.
MemoryCap = tuple[str | None, str]


def with_memory_in_history(plan: Plan, facts: Facts, runner_resources: Mapping[str, Any]) -> Plan:
    """A task with memoryOnOOM: the history entry of the attempt that ended now says its memory.

    That attempt ran with the size for the OOMKilled attempts before it (the stored count), so
    whichever rule wrote its entry, the memory is the same one its Job was made with. Earlier
    entries have theirs already."""
    spec = facts.task.spec
    history = (plan.status or {}).get("history")
    if not memory_steps(spec) or not isinstance(history, list):
        return plan
    if not any(isinstance(h, dict) and h.get("attempt") == facts.attempt and "memory" not in h for h in history):
        return plan
    memory = attempt_memory(spec, facts.tally.oom, runner_resources)
    if memory is None:
        return plan
    assert plan.status is not None
    plan.status = {**plan.status, "history": [
        {**h, "memory": memory} if isinstance(h, dict) and h.get("attempt") == facts.attempt and "memory" not in h
        else h for h in history]}
    return plan


def after_oom(facts: Facts, lost: Lost, ended_at: str, cap: MemoryCap, runner_resources: Mapping[str, Any],
              job_refused: Refusal | None = None, queued: Waiting | None = None,
              stopping: Sequence[str] = ()) -> Plan:
    """The next attempt with the next size of memoryOnOOM as its memory, or FAILURE OOMKilled:
    after the last size, or when the next is over the installation's cap (`cap`)."""
    st, attempt, tally, task = facts.status, facts.attempt, facts.tally, facts.task
    steps = memory_steps(task.spec)
    memory = attempt_memory(task.spec, tally.oom, runner_resources)
    counts = dataclasses.replace(tally, oom=tally.oom + 1)
    counted = dataclasses.replace(facts, base={**facts.base, **counts.counters()})
    history: list[dict[str, Any]] = list(st.get("history") or [])
    entry = {"attempt": attempt, "jobName": job_name(task.name, attempt), "outcome": OOM_KILLED,
             "reason": OOM_KILLED, "message": lost.message, "finishedAt": ended_at,
             **({"memory": memory} if memory is not None else {})}
    had = f" with {memory}" if memory is not None else ""
    if counts.oom <= len(steps):
        following = steps[counts.oom - 1]
        limit, setting = cap
        if limit is not None and quantity(following) > quantity(limit):
            history.append({**entry, "outcome": FAILURE})
            return final(counted, FAILURE, OOM_KILLED,
                         f"attempt {attempt} was OOMKilled{had}; the next size of memoryOnOOM, {following}, is over "
                         f"this cluster's cap of {limit} ({setting}), so no attempt is made with it: lower "
                         f"memoryOnOOM, or ask the platform team to raise the cap",
                         error_type=OOM_KILLED, history=history, stopping=stopping)
        history.append({**entry, "message": f"{lost.message}; attempt {attempt + 1} has {following}"})
        return start(counted, attempt + 1, history, job_refused, queued, stopping)
    history.append({**entry, "outcome": FAILURE})
    each = memories(history, task.spec, runner_resources)
    return final(counted, FAILURE, OOM_KILLED,
                 f"the container was OOMKilled with each memory it was given ({each}): the task needs more "
                 f"memory than the last size of memoryOnOOM",
                 error_type=OOM_KILLED, history=history, stopping=stopping)


def memories(history: Sequence[dict[str, Any]], spec: Mapping[str, Any], runner_resources: Mapping[str, Any]) -> str:
    """Which memory each OOMKilled attempt had, in words ("attempt 1 had 256Mi, attempt 2 had 1Gi
    and attempt 3 had 2Gi"). The i-th of them had the i-th memory (the task's own, then each
    size): those the history no longer holds (it keeps the last ten attempts) are named by their
    memory alone."""
    sizes = [attempt_memory(spec, j, runner_resources) or "no memory limit" for j in range(len(memory_steps(spec)) + 1)]
    named = [f"attempt {h.get('attempt')} had {h['memory']}" for h in history
             if h.get("reason") == OOM_KILLED and h.get("memory")][-len(sizes):]
    return and_list([*sizes[:len(sizes) - len(named)], *named])
