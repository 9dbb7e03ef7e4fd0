"""A task's wait in its queue, as its status says it: what the derivation reads and writes.

The queues answer an attempt that asks for a slot with `Waiting` (why and where it waits);
the derivation writes that into the task's status (a Queued condition and a queue block), and
reads it back with `queued_now` and `waiting_attempt`. Nothing here reaches the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lime_task.resource import CONDITION_QUEUED

# Reasons of the Queued condition.
WAITING = "Waiting"
QUEUE_NOT_FOUND = "QueueNotFound"
QUEUE_PAUSED = "QueuePaused"
QUEUE_RATE_LIMITED = "QueueRateLimited"  # the queue's pace (maxStartsPerSecond) holds its tasks back
QUEUE_FORBIDDEN = "QueueForbidden"  # its namespace may not use the queue (namespaceSelector)
KUEUE_WAITING = "Kueue"
ADMITTED = "Admitted"


@dataclass(frozen=True)
class Waiting:
    """Why and where a task waits: what its status says while it is queued. `position` is None
    while the task is not among the first POSITIONS_COUNTED of its queue (or not counted yet);
    `waiting` is how many waited in the queue when the place was counted."""

    queue: str
    reason: str
    message: str
    position: int | None
    waiting: int
    since: str



def queued_now(status: dict[str, Any]) -> dict[str, Any] | None:
    """The task's Queued condition while it is True (the task waits in line), else None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION_QUEUED
                 and c.get("status") == "True"), None)


def waiting_attempt(status: dict[str, Any]) -> int | None:
    """The attempt a task waits in line for, or None when it does not wait: its status's queue
    block names it (`attempts` counts only the attempts that made a Job). Without that (a status
    written before it did, or a CRD that does not keep the field), it is the attempt after the
    last one that ended: every attempt that made a Job ends in the history before the next."""
    if queued_now(status) is None:
        return None
    block = status.get("queue")
    attempt = block.get("attempt") if isinstance(block, dict) else None
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    ended = [h.get("attempt") for h in status.get("history") or [] if isinstance(h, dict)]
    return max((a for a in ended if isinstance(a, int) and not isinstance(a, bool)), default=0) + 1
