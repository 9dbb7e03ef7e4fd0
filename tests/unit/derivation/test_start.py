"""start.py: an attempt's Job is made, or the queue or the API server holds it back; and an
attempt whose worker never started in time gives its slot back."""

from __future__ import annotations

import datetime as dt

from limetask_operator.admission import WAITING, Waiting
from limetask_operator.derivation import INVALID_SPEC, JOB_REFUSED, QUOTA_EXCEEDED
from limetask_operator.derivation.outcome import AttemptRunning
from limetask_operator.derivation.start import not_started_in_time, refused, start, stuck_before_start

from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import NOW, job, pending_status, started_status, task

PLACE = Waiting("reports", WAITING, "waiting in queue reports: position 1 of 1", 1, 1, "2024-05-01T10:00:00Z")


def test_starting_an_attempt_makes_its_job_and_stops_earlier_ones_still_running() -> None:
    plan = start(facts(task(), [job(1)]), 2, [{"attempt": 1}])
    assert plan.create_attempt == 2 and plan.stop_jobs == [job(1).name]
    assert plan.status is not None
    assert (plan.status["state"], plan.status["attempts"]) == ("PENDING", 2)
    assert condition_of(plan.status)["message"] == "attempt 2: waiting for the worker to start"


def test_no_slot_means_no_job() -> None:
    plan = start(facts(task()), 1, queued=PLACE)
    assert plan.create_attempt is None and plan.queued


def test_a_job_the_api_server_refuses_as_invalid_fails_the_task() -> None:
    plan = start(facts(task()), 1, job_refused=(422, "spec.template is invalid"))
    assert plan.create_attempt is None and plan.status is not None
    assert plan.status["state"] == "FAILURE" and plan.status["error"]["reason"] == INVALID_SPEC


def test_a_quota_or_a_permission_waits_and_looks_again() -> None:
    quota = refused(facts(task(pending_status())), 1, 403, "exceeded quota: compute")
    assert quota.status is not None and condition_of(quota.status)["reason"] == QUOTA_EXCEEDED
    assert quota.recheck_after == 15.0 and not quota.queued
    forbidden = refused(facts(task(pending_status())), 1, 403, "jobs.batch is forbidden", stopping=["x-1"])
    assert forbidden.status is not None and condition_of(forbidden.status)["reason"] == JOB_REFUSED
    assert forbidden.stop_jobs == ["x-1"]


def test_an_attempt_stuck_before_its_worker_started_is_a_worker_that_never_started() -> None:
    later = NOW + dt.timedelta(minutes=10)
    pending = AttemptRunning(None, ("ErrImagePull", "no such image"))
    f = facts(task(pending_status()), [job()], now=later)
    assert stuck_before_start(f, pending, job(), 60.0, later)
    assert not stuck_before_start(f, pending, job(), None, later)  # no start timeout
    assert not stuck_before_start(f, AttemptRunning("2024-05-01T10:00:42Z"), job(), 60.0, later)  # it started
    assert not stuck_before_start(facts(task(started_status()), [job()], now=later), pending, job(), 60.0, later)
    lost = not_started_in_time(pending, 60.0)
    assert not lost.started
    assert lost.message == ("the worker had not started 60s after its Job was made (the queue's "
                            "startTimeoutSeconds): ErrImagePull: no such image")
