"""rerun.py: a lost worker runs the task again only when that is safe (late acknowledgement, or
nothing of it ran), each way on its own budget."""

from __future__ import annotations

from limetask_operator.derivation import RETRIES_EXHAUSTED
from limetask_operator.derivation.outcome import Lost
from limetask_operator.derivation.rerun import MAX_NOT_STARTED_RERUNS, after_lost

from tests.unit.derivation.facts import facts
from tests.unit.test_status_derivation import job, pending_status, started_status, task

ENDED = "2024-05-01T10:04:59Z"
LOST = Lost("the worker was killed by SIGKILL (exit code 137)")
NEVER_RAN = Lost("the pod was evicted before it started", started=False)


def test_early_acknowledgement_never_runs_a_lost_worker_again() -> None:
    plan = after_lost(facts(task(started_status()), [job()]), LOST, ENDED, 10)
    assert plan.create_attempt is None and plan.status is not None
    assert plan.status["error"]["reason"] == "WorkerLost" and plan.status["workersLost"] == 1
    assert "early acknowledgement: not re-run" in plan.status["error"]["message"]


def test_late_acknowledgement_runs_the_next_attempt_until_max_attempts() -> None:
    late = {"acksLate": True, "maxAttempts": 2}
    plan = after_lost(facts(task(started_status(**late), **late), [job()]), LOST, ENDED, 10)
    assert plan.create_attempt == 2 and plan.status is not None and plan.status["workersLost"] == 1
    assert plan.status["history"][-1]["outcome"] == "WorkerLost"
    spent = {**started_status(2, **late), "workersLost": 1}
    last = after_lost(facts(task(spent, **late), [job(2)]), LOST, ENDED, 10)
    assert last.create_attempt is None and last.status is not None
    assert last.status["error"]["reason"] == RETRIES_EXHAUSTED


def test_the_clusters_ceiling_bounds_max_attempts() -> None:
    late = {"acksLate": True, "maxAttempts": 5}
    plan = after_lost(facts(task(started_status(**late), **late), [job()]), LOST, ENDED, 1)
    assert plan.status is not None and plan.status["error"]["reason"] == RETRIES_EXHAUSTED


def test_a_worker_that_never_started_runs_again_even_under_early_acknowledgement() -> None:
    plan = after_lost(facts(task(pending_status()), [job()]), NEVER_RAN, ENDED, 10)
    assert plan.create_attempt == 2 and plan.status is not None
    assert plan.status["notStarted"] == 1 and plan.status["history"][-1]["outcome"] == "NotStarted"


def test_never_started_reruns_are_bounded() -> None:
    spent = {**pending_status(4), "notStarted": MAX_NOT_STARTED_RERUNS}
    plan = after_lost(facts(task(spent), [job(4)]), NEVER_RAN, ENDED, 10)
    assert plan.create_attempt is None and plan.status is not None
    assert plan.status["error"]["reason"] == "WorkerLost" and "no worker started" in plan.status["error"]["message"]


def test_a_worker_the_status_saw_running_did_run() -> None:
    plan = after_lost(facts(task(started_status()), [job()]), NEVER_RAN, ENDED, 10)
    assert plan.status is not None and plan.status["error"]["reason"] == "WorkerLost"
