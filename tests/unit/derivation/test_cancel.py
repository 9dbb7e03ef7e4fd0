"""cancel.py: a cancel fails the task (Cancelled) unless a verdict is in already; a verdict that
will be retried is not the last word."""

from __future__ import annotations

from limetask_operator.derivation import CANCELLED
from limetask_operator.derivation.cancel import cancel, cancel_requested

from lime_task.resource import ANNOTATION_CANCEL
from tests.unit.derivation.facts import facts
from tests.unit.test_status_derivation import (
    SUCCESS_VERDICT,
    complete_job,
    ended_pod,
    job,
    running_pod,
    started_status,
    task,
)

CANCEL = {ANNOTATION_CANCEL: "true"}
RETRIED = ('{"state":"FAILURE","error":{"type":"IOError","message":"down","reason":"TaskRaised"},'
           '"retry":{"maxRetries":3,"delay":10}}')


def test_the_annotation_asks_for_a_cancel() -> None:
    assert cancel_requested({ANNOTATION_CANCEL: "True"}) and cancel_requested({ANNOTATION_CANCEL: "1"})
    assert not cancel_requested({}) and not cancel_requested({ANNOTATION_CANCEL: "no"})


def test_a_running_task_is_cancelled_and_its_job_stopped() -> None:
    plan = cancel(facts(task(started_status(), CANCEL), [job()], [running_pod()]), False, frozenset())
    assert plan is not None and plan.status is not None
    assert plan.status["state"] == "FAILURE" and plan.status["error"]["reason"] == CANCELLED
    assert plan.stop_jobs == [job().name]


def test_a_verdict_already_written_wins_over_the_cancel() -> None:
    f = facts(task(started_status(), CANCEL), [complete_job()], [ended_pod(message=SUCCESS_VERDICT)])
    assert cancel(f, False, frozenset()) is None


def test_a_verdict_that_will_be_retried_is_cancelled() -> None:
    f = facts(task(started_status(), CANCEL), [complete_job()], [ended_pod(1, message=RETRIED)])
    plan = cancel(f, False, frozenset())
    assert plan is not None and plan.status is not None and plan.status["error"]["reason"] == CANCELLED


def test_a_finished_job_whose_pod_the_cache_lacks_is_read_fresh_first() -> None:
    f = facts(task(started_status(), CANCEL), [complete_job()], [])
    plan = cancel(f, False, frozenset())
    assert plan is not None and plan.need_fresh_pods == 1 and plan.status is None
    fresh = cancel(f, True, frozenset())  # read fresh and still none: cancelled
    assert fresh is not None and fresh.status is not None and fresh.status["error"]["reason"] == CANCELLED
