"""The place a waiting task's status shows, and when it is written again.

A waiting task's status shows its exact place while it is among the first POSITIONS_COUNTED
of its queue, counted every COUNT_PERIOD seconds; further back it says how many wait. A place
is rewritten when it moved by a quarter (any move near the head) or the count of waiting tasks
did, at most every `refresh_seconds` per task and POSITION_WRITES_PER_SECOND in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lime_task.validation import parse_time

from .waiting import queued_now, waiting_attempt

POSITION_WRITES_PER_SECOND = 10.0  # rewrites of waiting tasks' positions, at most
POSITIONS_COUNTED = 100  # a queue's first this many have their exact place in their status
POSITION_NEAR = 10  # within this many of the head, any move of a place is written
POSITION_DRIFT = 0.25  # further back, a move by this share of the place (or of the count waiting)
COUNT_PERIOD = 5.0  # positions are counted this often (and within a second of a task joining)


@dataclass(frozen=True)
class Shown:
    """The place a waiting task's status shows (see `shown_place`)."""

    position: int | None
    waiting: int
    updated: float  # epoch seconds


def place_to_show(shown: Shown | None, counted: tuple[int, int] | None, waiting_now: int, now: float,
                  refresh_seconds: float) -> tuple[int | None, int] | None:
    """What a waiting task's status is to show now, (position or None, how many wait), or None
    to keep what it shows. `counted`: its place and the queue's count as last counted, when it
    is among the first ones; `shown`: what its status says, None when it says nothing yet of
    this wait.

    Written at once: the first word of a wait, a first position, a place or a count that moved
    by a quarter (POSITION_DRIFT; near the head that is a move by one). Smaller moves near the
    head wait until the last write is `refresh_seconds` old (so that two tasks trading places
    do not write at every count), and so does a place left for the back of the line. So a
    task's rewrites are few, a handful per halving of its place or of the queue, however long
    it waits."""
    if shown is None:
        return counted if counted is not None else (None, waiting_now)
    stale = now - shown.updated >= refresh_seconds
    if counted is None:
        if shown.position is None:
            return None  # "its position is written once it is among the first ones": still true
        return (None, waiting_now) if stale else None
    if shown.position is None:
        return counted
    position, waiting = counted
    if abs(waiting - shown.waiting) >= max(1.0, POSITION_DRIFT * shown.waiting):
        return counted
    if abs(position - shown.position) >= max(1.0, POSITION_DRIFT * shown.position):
        return counted
    if position != shown.position and position <= POSITION_NEAR and stale:
        return counted
    return None


def shown_place(status: dict[str, Any], queue: str, attempt: int, reason: str) -> Shown | None:
    """The place a task's status shows for this wait (same queue, attempt and reason), or None."""
    cond = queued_now(status)
    block = status.get("queue")
    if cond is None or cond.get("reason") != reason or not isinstance(block, dict) or block.get("name") != queue \
            or waiting_attempt(status) != attempt:
        return None
    updated = parse_time(block.get("updatedAt"))
    position, waiting = block.get("position"), block.get("waiting")
    if updated is None or not isinstance(waiting, int) or (position is not None and not isinstance(position, int)):
        return None
    return Shown(position, waiting, updated.timestamp())
