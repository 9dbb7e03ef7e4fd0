"""expiry.py: a task whose `expires` has passed fails Expired, wherever it waited, and only while
nothing of it has run. "A task that expires while it waits in a queue" is decided here."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation import EXPIRED, derive
from limetask_operator.derivation.expiry import (
    expired_before_start,
    expired_before_worker_started,
    expired_in_queue,
    expired_waiting_for_kueue,
    until_expiry,
)

from lime_task.resource import CONDITION_QUEUED
from tests.unit.test_queue_derivation import queued_of
from tests.unit.test_status_derivation import CEILING, NOW, task

PAST = NOW - dt.timedelta(seconds=1)
AHEAD = NOW + dt.timedelta(seconds=90)


def test_a_task_expires_while_it_waits_in_its_queue_only_if_it_never_ran() -> None:
    message = expired_in_queue(PAST, never_started=True, now=NOW)
    assert message == "the task expired at 2024-05-01T10:04:59Z while it waited in its queue; it never ran"
    assert expired_in_queue(AHEAD, never_started=True, now=NOW) is None  # not yet
    assert expired_in_queue(PAST, never_started=False, now=NOW) is None  # an earlier attempt ran: it goes on
    assert expired_in_queue(None, never_started=True, now=NOW) is None  # no expiry at all


def test_expiry_is_reached_at_the_instant_itself() -> None:
    assert expired_in_queue(NOW, never_started=True, now=NOW) is not None
    assert expired_before_start(NOW, NOW) is not None


def test_each_place_of_waiting_has_its_own_words() -> None:
    assert "before it started" in (expired_before_start(PAST, NOW) or "")
    assert "waited for Kueue to admit it again" in (expired_waiting_for_kueue(PAST, True, NOW) or "")
    assert "before its worker started; it was stopped" in (expired_before_worker_started(PAST, True, NOW) or "")
    assert expired_before_start(AHEAD, NOW) is None
    assert expired_waiting_for_kueue(PAST, False, NOW) is None
    assert expired_before_worker_started(PAST, False, NOW) is None


def test_a_reconcile_is_due_just_after_the_expiry_while_it_can_still_expire() -> None:
    assert until_expiry(AHEAD, True, NOW) == 90.05
    assert until_expiry(PAST, True, NOW) == 0.05  # overdue: at once
    assert until_expiry(AHEAD, False, NOW) is None  # it ran: it never expires any more
    assert until_expiry(None, True, NOW) is None


def test_derive_fails_a_task_that_expired_in_its_queue_and_it_leaves_the_queue() -> None:
    waiting = {
        "state": "PENDING", "attempts": 0, "observedGeneration": 1,
        "queue": {"name": "reports", "attempt": 1, "waiting": 4, "since": "2024-05-01T10:00:00Z",
                  "updatedAt": "2024-05-01T10:00:00Z"},
        "conditions": [{"type": CONDITION_QUEUED, "status": "True", "reason": "Waiting", "message": "waiting",
                        "lastTransitionTime": "2024-05-01T10:00:00Z", "observedGeneration": 1}],
    }
    t = task(waiting, queue="reports", expires="2024-05-01T10:04:00Z")
    plan = derive(t, {}, {}, NOW, CEILING)
    assert plan.status is not None and plan.create_attempt is None
    assert plan.status["state"] == "FAILURE"
    assert plan.status["error"] == {"type": EXPIRED, "reason": EXPIRED, "message": expired_in_queue(
        dt.datetime(2024, 5, 1, 10, 4, tzinfo=dt.UTC), True, NOW)}
    queued = queued_of(plan.status)
    assert queued is not None and queued["status"] == "False" and queued["reason"] == EXPIRED
