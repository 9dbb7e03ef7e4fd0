"""queue.py: an attempt with no slot waits in its queue (no Job), and a status leaves the queue
when the task is admitted or ends."""

from __future__ import annotations

import datetime as dt

from limetask_operator.admission import WAITING, Waiting
from limetask_operator.derivation.queue import earlier_jobs_running, leave_queue, wait_in_queue

from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import NOW, job, task

SINCE = "2024-05-01T10:00:00Z"
PLACE = Waiting("reports", WAITING, "waiting in queue reports: position 2 of 5", 2, 5, SINCE)


def test_a_waiting_attempt_has_no_job_and_its_status_says_where_it_stands() -> None:
    plan = wait_in_queue(facts(task()), 1, None, PLACE)
    assert plan.queued and plan.create_attempt is None and plan.status is not None
    st = plan.status
    assert st["attempts"] == 0 and "jobName" not in st  # no attempt has made a Job yet
    assert st["queue"] == {"name": "reports", "attempt": 1, "waiting": 5, "since": SINCE, "position": 2,
                           "updatedAt": "2024-05-01T10:05:00Z"}
    queued = condition_of(st, "Queued")
    assert (queued["status"], queued["reason"], queued["message"]) == ("True", WAITING, PLACE.message)
    assert condition_of(st)["reason"] == "Queued"
    assert plan.recheck_after is None  # nothing expires


def test_a_later_attempt_waits_with_the_previous_attempts_job_name() -> None:
    plan = wait_in_queue(facts(task({"state": "PENDING", "attempts": 1})), 2, [{"attempt": 1}], PLACE)
    assert plan.status is not None
    assert plan.status["attempts"] == 1 and plan.status["jobName"].endswith("-1")
    assert plan.status["history"] == [{"attempt": 1}]


def test_the_same_place_is_not_written_twice() -> None:
    first = wait_in_queue(facts(task()), 1, None, PLACE).status
    assert first is not None
    later = facts(task(first), now=NOW + dt.timedelta(seconds=40))
    assert wait_in_queue(later, 1, None, PLACE).status is None


def test_a_waiting_task_that_may_expire_looks_again_at_its_expiry() -> None:
    plan = wait_in_queue(facts(task(expires="2024-05-01T10:06:00Z")), 1, None, PLACE)
    assert plan.recheck_after == 60.05


def test_an_earlier_attempts_job_that_still_runs_is_stopped() -> None:
    jobs = {1: job(1), 2: job(2, condition=("Complete", None, None), active=0), 3: job(3)}
    assert earlier_jobs_running(jobs, 3) == [job(1).name]


def test_leaving_the_queue_says_admitted_or_why_it_left() -> None:
    waiting = wait_in_queue(facts(task()), 1, None, PLACE).status
    assert waiting is not None
    admitted = leave_queue({**waiting, "state": "PENDING"}, 1, NOW + dt.timedelta(seconds=30))
    assert "queue" not in admitted
    cond = condition_of(admitted, "Queued")
    assert (cond["status"], cond["reason"]) == ("False", "Admitted")
    assert cond["message"] == "admitted to queue reports after waiting 330s"
    ended = leave_queue({**waiting, "state": "FAILURE", "error": {"reason": "Cancelled"}}, 1, NOW)
    assert condition_of(ended, "Queued")["reason"] == "Cancelled"
    assert leave_queue({"state": "PENDING"}, 1, NOW) == {"state": "PENDING"}  # never queued: untouched
