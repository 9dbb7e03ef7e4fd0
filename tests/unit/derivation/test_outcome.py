"""outcome.py: what became of one attempt, read from its Job and pods (nothing decided here)."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation.outcome import (
    AttemptRunning,
    Lost,
    TimedOut,
    attempt_outcome,
    describe_lost,
    lost_past_deadline,
    past_deadline,
    replaced_pod_jobs,
)

from lime_task import verdict as verdicts
from tests.unit.test_status_derivation import (
    NOW,
    SUCCESS_VERDICT,
    complete_job,
    ended_pod,
    failed_job,
    job,
    pending_pod,
    running_pod,
)


def test_a_verdict_in_the_termination_message_is_the_outcome() -> None:
    found = attempt_outcome(complete_job(), [ended_pod(message=SUCCESS_VERDICT)])
    assert isinstance(found, verdicts.Verdict) and found.state == "SUCCESS" and found.result == {"updated": 50}


def test_a_pod_that_ended_without_a_verdict_lost_its_worker() -> None:
    found = attempt_outcome(failed_job(), [ended_pod(137, reason="OOMKilled")])
    assert isinstance(found, Lost) and found.started
    assert "OOMKilled" in found.message


def test_the_jobs_deadline_is_a_timeout() -> None:
    found = attempt_outcome(failed_job(reason="DeadlineExceeded", message="past its deadline"), [])
    assert found == TimedOut("past its deadline")


def test_a_running_or_pending_pod_is_still_running() -> None:
    assert attempt_outcome(job(), [running_pod()]) == AttemptRunning("2024-05-01T10:00:42Z")
    pending = attempt_outcome(job(), [pending_pod()])
    assert isinstance(pending, AttemptRunning) and pending.started is None
    assert attempt_outcome(job(), []) == AttemptRunning(None)  # its pod is yet to come


def test_a_finished_job_whose_pod_the_cache_lacks_cannot_tell() -> None:
    assert attempt_outcome(complete_job(), []) is None


def test_a_job_deleted_before_the_task_finished_lost_its_worker() -> None:
    found = attempt_outcome(None, [], job_gone=True)
    assert isinstance(found, Lost) and "deleted before the task finished" in found.message


def test_the_words_for_a_lost_worker_name_what_happened() -> None:
    assert describe_lost(ended_pod(137, reason="OOMKilled")).startswith("the container was OOMKilled")
    assert describe_lost(ended_pod(143)) == "the worker was killed by SIGTERM (exit code 143)"
    assert describe_lost(ended_pod(2)) == "the worker exited with code 2 without a verdict (Error)"


def test_a_worker_lost_past_the_deadline_timed_out() -> None:
    lost = Lost("the pod was deleted while the task ran")
    assert lost_past_deadline(lost, 60, True) == TimedOut("the attempt passed its deadline of 60 seconds")
    assert lost_past_deadline(lost, 60, False) is lost
    assert past_deadline(60, job(), [], NOW)  # started at 10:00:30, now 10:05
    assert not past_deadline(3600, job(), [], NOW)
    assert not past_deadline(None, job(), [], NOW)
    assert past_deadline(60, None, [running_pod()], NOW + dt.timedelta(seconds=1))


def test_the_job_of_a_deleted_pod_is_stopped_before_a_replacement_runs_the_task_again() -> None:
    assert replaced_pod_jobs(job(), [running_pod(deleting=True)], False) == [job().name]
    assert replaced_pod_jobs(job(), [running_pod()], False) == []
    assert replaced_pod_jobs(job(), [running_pod(deleting=True)], True) == []  # the deadline stops it anyway
