"""kueue.py: a Job made suspended waits for Kueue to admit it; one Kueue evicted after it was
admitted waits again (late acknowledgement, or nothing ran) or fails Preempted."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation import EXPIRED, PREEMPTED
from limetask_operator.derivation.kueue import after_eviction, evicted_without_verdict, wait_for_kueue

from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_kueue_derivation import (
    EARLY,
    LATE,
    SUSPENDED_AT,
    kueue_job,
    never_started_deleted,
    ran_and_deleted,
)
from tests.unit.test_status_derivation import NOW, SUCCESS_VERDICT, ended_pod, started_status, task


def test_a_suspended_job_waits_for_kueue_queued_with_reason_kueue() -> None:
    j = kueue_job(True, SUSPENDED_AT)
    plan = wait_for_kueue(facts(task(**LATE), [j]), j, "waiting for Kueue to admit Job x", since=SUSPENDED_AT)
    assert plan.queued and plan.create_attempt is None and plan.stop_jobs == []
    assert plan.status is not None and plan.status["queue"]["name"] == "gpu"
    assert plan.status["queue"]["since"] == SUSPENDED_AT
    assert condition_of(plan.status, "Queued")["reason"] == "Kueue"


def test_an_eviction_is_one_without_a_verdict() -> None:
    j = kueue_job(True, SUSPENDED_AT)
    assert evicted_without_verdict(j, [ran_and_deleted()])
    assert not evicted_without_verdict(j, [ended_pod(message=SUCCESS_VERDICT)])
    assert not evicted_without_verdict(None, [ran_and_deleted()])
    assert not evicted_without_verdict(j, [])


def test_a_started_task_kueue_evicts_fails_preempted_under_early_acknowledgement() -> None:
    j = kueue_job(True, SUSPENDED_AT)
    plan = after_eviction(facts(task(started_status(**EARLY), **EARLY), [j], [ran_and_deleted()]), j,
                          [ran_and_deleted()])
    assert plan is not None and plan.status is not None
    assert plan.status["error"]["reason"] == PREEMPTED and plan.status["history"][-1]["outcome"] == PREEMPTED
    assert plan.stop_jobs == [j.name]  # stopped, or Kueue would resume it and run the task again


def test_under_late_acknowledgement_it_waits_to_be_admitted_again() -> None:
    j = kueue_job(True, SUSPENDED_AT)
    plan = after_eviction(facts(task(started_status(**LATE), **LATE), [j], [ran_and_deleted()]), j,
                          [ran_and_deleted()])
    assert plan is not None and plan.queued and plan.status is not None
    assert "waits in Kueue's queue to be admitted again" in condition_of(plan.status, "Queued")["message"]


def test_a_resumed_job_runs_on_and_only_its_new_pods_count() -> None:
    j = kueue_job(False, SUSPENDED_AT)
    assert after_eviction(facts(task(started_status(**LATE), **LATE), [j]), j, [ran_and_deleted()]) is None


def test_a_task_that_never_ran_expires_while_it_waits_for_kueue() -> None:
    j = kueue_job(True, SUSPENDED_AT)
    spec = {**EARLY, "expires": "2024-05-01T10:04:00Z"}
    f = facts(task(**spec), [j], [never_started_deleted()], now=NOW + dt.timedelta(seconds=1))
    plan = after_eviction(f, j, [never_started_deleted()])
    assert plan is not None and plan.status is not None and plan.status["error"]["reason"] == EXPIRED
