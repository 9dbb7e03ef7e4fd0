"""Each way an attempt can end that runs the task again has its own budget: lost workers count
against maxAttempts (late acknowledgement), autoretries against max_retries, attempts whose
worker never started against their own bound. derive()'s answers, and the tally behind them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from limetask_operator.budgets import Tally
from limetask_operator.derivation import MAX_NOT_STARTED_RERUNS
from limetask_operator.manifests import job_name
from limetask_operator.model import PodView

from tests.unit.test_status_derivation import (
    EARLIER_TS,
    NAME,
    POD_FINISHED,
    POD_STARTED,
    ended_pod,
    failed_job,
    pending_status,
    pod_body,
    run,
    started_status,
    task,
)

LATE: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
RETRY_VERDICT = ('{"state":"FAILURE","error":{"type":"ConnectionError","message":"the CRM hung up",'
                 '"reason":"TaskRaised"},"retry":{"maxRetries":5,"backoff":0,"delay":0,"jitter":false}}')


def entry(attempt: int, outcome: str) -> dict[str, Any]:
    return {"attempt": attempt, "jobName": job_name(NAME, attempt), "outcome": outcome, "reason": outcome,
            "message": outcome.lower(), "finishedAt": EARLIER_TS}


def killed(attempt: int) -> PodView:
    return ended_pod(137, None, attempt=attempt)


def evicted_before_start(attempt: int) -> PodView:
    return PodView.from_body(pod_body(attempt, "Failed", None, reason="Evicted", message="The node was low on memory."))


def test_autoretries_do_not_use_up_the_lost_worker_budget() -> None:
    """Two autoretries, then one lost worker: the task runs again (maxAttempts 3 allows three)."""
    status = {**started_status(3, **LATE), "retries": 2, "history": [entry(1, "Retry"), entry(2, "Retry")]}
    plan = run(task(status, **LATE), [failed_job(3)], [killed(3)])
    assert plan.create_attempt == 4
    assert plan.status is not None and plan.status["state"] == "PENDING"
    assert plan.status["workersLost"] == 1 and plan.status["retries"] == 2
    assert [h["outcome"] for h in plan.status["history"]] == ["Retry", "Retry", "WorkerLost"]


def test_reruns_of_workers_that_never_started_do_not_use_up_the_lost_worker_budget() -> None:
    spec = {"acksLate": True, "maxAttempts": 2}
    status = {**started_status(3, **spec), "notStarted": 2,
              "history": [entry(1, "NotStarted"), entry(2, "NotStarted")]}
    plan = run(task(status, **spec), [failed_job(3)], [killed(3)])
    assert plan.create_attempt == 4
    assert plan.status is not None and plan.status["workersLost"] == 1 and plan.status["notStarted"] == 2


def test_lost_workers_do_not_use_up_the_never_started_budget() -> None:
    spec = {"acksLate": True, "maxAttempts": 10}
    status = {**pending_status(4, **spec), "startedAt": POD_STARTED, "workersLost": 3,
              "history": [entry(n, "WorkerLost") for n in (1, 2, 3)]}
    plan = run(task(status, **spec), [failed_job(4)], [evicted_before_start(4)])
    assert plan.create_attempt == 5
    assert plan.status is not None and plan.status["notStarted"] == 1 and plan.status["workersLost"] == 3


def test_the_lost_worker_budget_is_exhausted_by_lost_workers_alone_and_says_of_which_kind() -> None:
    status = {**started_status(5, **LATE), "retries": 2, "workersLost": 2,
              "history": [entry(1, "WorkerLost"), entry(2, "Retry"), entry(3, "Retry"), entry(4, "WorkerLost")]}
    plan = run(task(status, **LATE), [failed_job(5)], [killed(5)])
    st = plan.status
    assert plan.create_attempt is None and st is not None
    assert st["state"] == "FAILURE" and st["error"]["reason"] == "RetriesExhausted"
    assert st["error"]["type"] == "WorkerLost" and st["workersLost"] == 3
    message = st["error"]["message"]
    assert message.startswith("the worker was lost in 3 of 5 attempts (maxAttempts is 3)")
    assert "2 raised an exception autoretry_for names" in message
    assert "SIGKILL" in message and "all" not in message


def test_a_task_whose_every_attempt_lost_its_worker_says_so() -> None:
    status = {**started_status(3, **LATE), "history": [entry(1, "WorkerLost"), entry(2, "WorkerLost")]}
    plan = run(task(status, **LATE), [failed_job(3)], [killed(3)])
    assert plan.status is not None
    assert plan.status["error"]["message"].startswith("the worker was lost in all 3 attempts (maxAttempts is 3); last:")


def test_the_counts_are_kept_beyond_the_history_the_status_keeps() -> None:
    """History keeps the last ten attempts; the counters keep every one."""
    history = [entry(n, "Retry") for n in range(3, 13)]
    status = {**started_status(13, **LATE), "retries": 10, "workersLost": 2, "history": history}
    plan = run(task(status, **LATE), [failed_job(13)], [killed(13)])
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "RetriesExhausted"
    assert len(plan.status["history"]) == 10


def test_a_status_without_counters_is_counted_from_its_history() -> None:
    """Tasks whose status was written before the counters existed."""
    status = {**started_status(3, **LATE), "retries": 1,
              "history": [entry(1, "WorkerLost"), entry(2, "Retry")]}
    plan = run(task(status, **LATE), [failed_job(3)], [killed(3)])
    assert plan.create_attempt == 4 and plan.status is not None and plan.status["workersLost"] == 2


def test_autoretries_exhausted_after_a_lost_worker_say_what_happened() -> None:
    spec = {"acksLate": True, "maxAttempts": 3}
    status = {**started_status(4, **spec), "retries": 2, "workersLost": 1,
              "history": [entry(1, "Retry"), entry(2, "WorkerLost"), entry(3, "Retry")]}
    verdict = RETRY_VERDICT.replace('"maxRetries":5', '"maxRetries":2')
    plan = run(task(status, **spec), [failed_job(4)], [ended_pod(1, verdict, attempt=4)])
    st = plan.status
    assert st is not None and st["error"]["reason"] == "RetriesExhausted" and st["error"]["type"] == "ConnectionError"
    message = st["error"]["message"]
    assert "in 3 of 4 attempts" in message and "max_retries is 2" in message
    assert "1 lost its worker" in message and "all" not in message


def test_early_acknowledgement_says_which_attempt_lost_its_worker() -> None:
    status = {**started_status(3), "retries": 2, "history": [entry(1, "Retry"), entry(2, "Retry")]}
    plan = run(task(status), [failed_job(3)], [killed(3)])
    st = plan.status
    assert st is not None and st["error"]["reason"] == "WorkerLost"
    assert st["error"]["message"] == ("the worker was killed by SIGKILL (exit code 137) (early acknowledgement: "
                                      "not re-run; it was attempt 3; of the other attempts, 2 raised an exception "
                                      "autoretry_for names)")


def test_workers_that_never_started_are_counted_whenever_they_happened() -> None:
    """Not "the last N attempts": the ones that never started need not follow each other."""
    spec = {"acksLate": True, "maxAttempts": 5}
    status = {**pending_status(5, **spec), "startedAt": POD_STARTED, "notStarted": MAX_NOT_STARTED_RERUNS,
              "workersLost": 1,
              "history": [entry(1, "NotStarted"), entry(2, "WorkerLost"), entry(3, "NotStarted"),
                          entry(4, "NotStarted")]}
    plan = run(task(status, **spec), [failed_job(5)], [evicted_before_start(5)])
    st = plan.status
    assert plan.create_attempt is None and st is not None and st["error"]["reason"] == "WorkerLost"
    message = st["error"]["message"]
    assert message.startswith(f"no worker started in {MAX_NOT_STARTED_RERUNS + 1} of 5 attempts")
    assert "1 lost its worker" in message and "low on memory" in message


@pytest.mark.parametrize("status, expect", [
    ({}, Tally(0, 0, 0)),
    ({"history": [entry(1, "WorkerLost"), entry(2, "Retry"), entry(3, "NotStarted"), entry(4, "WorkerLost")],
      "retries": 1}, Tally(lost=2, retries=1, not_started=1)),
    ({"workersLost": 4, "notStarted": 2, "retries": 7, "history": [entry(1, "WorkerLost")]}, Tally(4, 7, 2)),
    ({"workersLost": "x", "notStarted": -1, "retries": None, "history": "junk"}, Tally(0, 0, 0)),
])
def test_tally_reads_the_counters_or_the_history(status: dict[str, Any], expect: Tally) -> None:
    assert Tally.of(status) == expect


def test_tally_describes_each_kind_but_the_one_in_question() -> None:
    tally = Tally(lost=2, retries=1, not_started=3)
    assert tally.others("lost") == ["1 raised an exception autoretry_for names",
                                    "3 never started their worker"]
    assert tally.others("retries") == ["2 lost their worker", "3 never started their worker"]
    assert dataclasses.replace(tally, not_started=0).others("retries") == ["2 lost their worker"]
    assert Tally(1, 1, 1).others("not_started") == ["1 lost its worker",
                                                    "1 raised an exception autoretry_for names"]
    assert Tally(0, 0, 0).others("lost") == []


def test_history_entries_of_other_attempts_are_untouched() -> None:
    status = {**started_status(3, **LATE), "retries": 2, "history": [entry(1, "Retry"), entry(2, "Retry")]}
    plan = run(task(status, **LATE), [failed_job(3)], [killed(3)])
    assert plan.status is not None
    assert plan.status["history"][:2] == status["history"]
    assert plan.status["history"][2]["finishedAt"] == POD_FINISHED


def test_oom_killed_attempts_are_a_kind_of_their_own_the_other_budgets_name() -> None:
    """With memoryOnOOM, an OOMKilled attempt counts on oomKilled (its sizes bound it): never as a
    lost worker, and the other kinds' messages say it happened."""
    late = {**LATE, "memoryOnOOM": ["1Gi"]}
    status = {**started_status(4, **late), "workersLost": 2, "oomKilled": 1,
              "history": [entry(1, "WorkerLost"), entry(2, "OOMKilled"), entry(3, "WorkerLost")]}
    plan = run(task(status, **late), [failed_job(4)], [killed(4)])
    st = plan.status
    assert plan.create_attempt is None and st is not None and st["error"]["reason"] == "RetriesExhausted"
    assert (st["workersLost"], st["oomKilled"]) == (3, 1)
    assert st["error"]["message"].startswith("the worker was lost in 3 of 4 attempts (maxAttempts is 3); of the "
                                             "other attempts, 1 was OOMKilled and ran again with more memory; last:")
    assert Tally.of({"history": [entry(1, "OOMKilled"), entry(2, "WorkerLost")]}) == Tally(lost=1, oom=1)
    assert "oomKilled" not in Tally(lost=1).counters() and Tally(oom=2).counters()["oomKilled"] == 2
