"""A task that waits in its queue for a slot, and the status of one that leaves it.

The queues (admission/) decide whether an attempt gets its slot, where it stands in line and
when its place is shown again; these rules only write what they answered into the status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from lime_task.resource import CONDITION_QUEUED, FINAL_STATES, PENDING
from lime_task.validation import parse_time

from ..admission.waiting import Waiting, queued_now
from ..manifests import job_name
from ..model import JobView
from .expiry import until_expiry
from .plan import HISTORY_MAX, Facts, Plan, condition, now_iso, unchanged


def earlier_jobs_running(jobs: Mapping[int, JobView], attempt: int) -> list[str]:
    """An earlier attempt's Job that still runs (a replacement pod) must not run the task too."""
    return sorted(j.name for a, j in jobs.items() if a < attempt and not j.finished and not j.deleting)


def wait_in_queue(facts: Facts, n: int, history: Sequence[dict[str, Any]] | None, where: Waiting) -> Plan:
    """No slot for attempt n yet: PENDING, with a Queued condition and the place in line (no
    Job, no pod). The queue block names attempt n, so that the next reconcile asks for its
    slot again; `attempts` counts the n - 1 that made a Job. What place to show, and when to
    show another, the queues decide: the same place and words are not written again."""
    st, ts = facts.status, facts.stamp
    new = facts.new_status()
    new.pop("retryAt", None)
    new.update(state=PENDING, attempts=n - 1, specHash=facts.spec_hash)
    if n > 1:
        new["jobName"] = job_name(facts.task.name, n - 1)
    else:
        new.pop("jobName", None)
    if history is not None:
        new["history"] = list(history)[-HISTORY_MAX:]
    block: dict[str, Any] = {"name": where.queue, "attempt": n, "waiting": where.waiting, "since": where.since}
    if where.position is not None:
        block["position"] = where.position
    message = where.message
    old_cond = queued_now(st)
    old_block = st.get("queue") if isinstance(st.get("queue"), dict) else None
    same = old_cond is not None and old_block is not None and old_cond.get("reason") == where.reason \
        and old_cond.get("message") == message and {k: v for k, v in old_block.items() if k != "updatedAt"} == block
    block["updatedAt"] = old_block.get("updatedAt") or ts if same and old_block is not None else ts
    new["queue"] = block
    generation = facts.task.generation
    conds = condition(facts.conditions(), "Unknown", "Queued", message, generation, ts)
    new["conditions"] = condition(conds, "True", where.reason, message, generation, ts, kind=CONDITION_QUEUED)
    return Plan(status=None if unchanged(new, st) else new, queued=True,
                stop_jobs=earlier_jobs_running(facts.jobs, n),
                recheck_after=until_expiry(facts.expires, facts.never_started, facts.now))


def leave_queue(status: dict[str, Any], generation: int, now: dt.datetime) -> dict[str, Any]:
    """A status that no longer waits in a queue: Queued is False (Admitted, or the final reason
    of a task that ended while it waited), and the position goes."""
    if queued_now(status) is None:
        return status
    new = dict(status)
    block = new.pop("queue", None) or {}
    since = parse_time(block.get("since")) if isinstance(block, dict) else None
    waited = f" after waiting {max(0, int((now - since).total_seconds()))}s" if since is not None else ""
    name = f"queue {block['name']}" if block.get("name") else "its queue"
    if new.get("state") in FINAL_STATES:
        reason = str((new.get("error") or {}).get("reason") or "Finished")
        message = f"left {name}{waited}: the task ended before it got a slot"
    else:
        reason, message = "Admitted", f"admitted to {name}{waited}"
    new["conditions"] = condition(new.get("conditions") or [], "False", reason, message, generation,
                                  now_iso(now), kind=CONDITION_QUEUED)
    return new
