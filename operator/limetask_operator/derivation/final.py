"""The end of a task: its final status, the completion event it owes, and its Jobs cleaned up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lime_task.events import message_id, routing_key
from lime_task.resource import SUCCESS

from ..model import JobView, PodView
from .plan import HISTORY_MAX, Facts, Plan, condition


def clean_up(jobs: Mapping[int, JobView], pods: Mapping[int, list[PodView]],
             stopping: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """A finished task's Jobs: (to stop, to delete). What still runs is stopped (after
    `stopping`, the Jobs another rule stops already), what has finished is deleted."""
    stop: list[str] = list(stopping)
    delete: list[str] = []
    for j in jobs.values():
        if j.deleting:
            continue
        # A suspended Job is stopped too: Kueue would resume it, and it would run the task again.
        running = not j.finished and (j.suspended or not pods.get(j.attempt)
                                      or any(not p.ended for p in pods[j.attempt]))
        (stop if running else delete).append(j.name)
    return sorted(stop), sorted(delete)


def already_final(jobs: Mapping[int, JobView], pods: Mapping[int, list[PodView]]) -> Plan:
    """A task whose status is final already: nothing is written, its Jobs are cleaned up."""
    stop, delete = clean_up(jobs, pods)
    return Plan(stop_jobs=stop, delete_jobs=delete)


def final(facts: Facts, state: str, reason: str, message: str, result: Any = None, error_type: str | None = None,
          history: list[dict[str, Any]] | None = None, completed_at: str | None = None,
          stopping: Sequence[str] = ()) -> Plan:
    """SUCCESS or FAILURE: the Succeeded condition, the result or the error, and the outbox
    entry of the completion event (owed until the broker confirms it)."""
    ts = facts.stamp
    new = facts.new_status()
    new.pop("retryAt", None)
    new.update(state=state, completedAt=completed_at or ts, attempts=facts.attempts_made)
    if history is not None:
        new["history"] = history[-HISTORY_MAX:]
    generation = facts.task.generation
    if state == SUCCESS:
        new.pop("result", None)
        if result is not None:  # null is not stored; a missing result reads as None
            new["result"] = result
        new.pop("error", None)
        cond = condition(facts.conditions(), "True", "Succeeded", "the task returned", generation, ts)
    else:
        new.pop("result", None)
        new["error"] = {"type": error_type or reason, "message": message, "reason": reason}
        cond = condition(facts.conditions(), "False", reason, message, generation, ts)
    new["conditions"] = cond
    # The outbox: the completion event is owed until the broker confirms it.
    new["event"] = {"messageId": message_id(facts.task.uid, state),
                    "routingKey": routing_key(str(facts.task.spec.get("task")), state), "confirmed": False}
    stop, delete = clean_up(facts.jobs, facts.pods, stopping)
    return Plan(status=new, stop_jobs=stop, delete_jobs=delete)
