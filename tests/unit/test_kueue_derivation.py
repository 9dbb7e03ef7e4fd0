"""A Job that Kueue preempts or evicts after it started: Kueue suspends it, the job controller
deletes its pod (and marks the Job Suspended), and Kueue resumes the same Job when it admits it
again. derive() reads that from the Job and its pods, as Kueue leaves them: the task waits in
Kueue's queue again, and the attempt is not a lost worker."""

from __future__ import annotations

import dataclasses
from typing import Any

from limetask_operator.derivation import derive
from limetask_operator.model import JobView, PodView

from lime_task.resource import KUEUE_QUEUE_LABEL
from tests.unit.test_status_derivation import (
    CEILING,
    EARLIER_TS,
    NOW,
    POD_FINISHED,
    SUCCESS_VERDICT,
    job_body,
    pod_body,
    started_status,
    task,
)

SUSPENDED_AT = "2024-05-01T10:03:00Z"  # Kueue preempted the workload: the Job was suspended
RESUMED_AT = "2024-05-01T10:04:00Z"  # admitted again: resumed
LATE: dict[str, Any] = {"acksLate": True, "maxAttempts": 3, "queue": "gpu"}
EARLY: dict[str, Any] = {"queue": "gpu"}


def kueue_job(suspended: bool, since: str, attempt: int = 1) -> JobView:
    """The Job as the job controller leaves it: spec.suspend, and a Suspended condition whose status
    follows it (True: suspended at `since`; False: resumed at `since`)."""
    body = job_body(attempt, active=0 if suspended else 1)
    body["metadata"]["labels"][KUEUE_QUEUE_LABEL] = "gpu"
    body["spec"]["suspend"] = suspended
    body["status"]["conditions"] = [{
        "type": "Suspended", "status": "True" if suspended else "False",
        "reason": "JobSuspended" if suspended else "JobResumed",
        "message": "Job suspended" if suspended else "Job resumed",
        "lastProbeTime": since, "lastTransitionTime": since}]
    if not suspended:
        body["status"]["startTime"] = since
    return JobView.from_body(body)


def pod(state: dict[str, Any], phase: str, created: str = EARLIER_TS, name: str = "x7k2p",
        deleting: bool = False, gone: bool = False) -> PodView:
    body = pod_body(1, phase, state, deleting=deleting)
    body["metadata"]["creationTimestamp"] = created
    body["metadata"]["name"] = f"{body['metadata']['name'][:-6]}-{name}"
    return dataclasses.replace(PodView.from_body(body), gone=gone)


def ran_and_deleted(**kw: Any) -> PodView:
    """The pod the job controller deletes: its container ran, and ends by SIGTERM (no verdict)."""
    return pod({"terminated": {"exitCode": 143, "reason": "Error", "startedAt": "2024-05-01T10:00:42Z",
                               "finishedAt": SUSPENDED_AT}}, "Failed", deleting=True, **kw)


def still_running_deleting() -> PodView:
    return pod({"running": {"startedAt": "2024-05-01T10:00:42Z"}}, "Running", deleting=True)


def never_started_deleted() -> PodView:
    return pod({"waiting": {"reason": "ContainerCreating"}}, "Pending", deleting=True, gone=True)


def queued_condition(status: dict[str, Any]) -> dict[str, Any]:
    cond: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "Queued")
    return cond


def test_a_running_job_kueue_suspends_waits_in_kueues_queue_again_under_late_ack() -> None:
    for evicted in (still_running_deleting(), ran_and_deleted(), ran_and_deleted(gone=True)):
        plan = derive(task(started_status(**LATE), **LATE), {1: kueue_job(True, SUSPENDED_AT)}, {1: [evicted]},
                      NOW, CEILING)
        st = plan.status
        assert st is not None and st["state"] == "PENDING", st
        assert plan.queued and plan.create_attempt is None
        assert plan.stop_jobs == [] and plan.delete_jobs == []  # Kueue resumes this very Job
        assert st["attempts"] == 1 and "history" not in st and "workersLost" not in st
        queued = queued_condition(st)
        assert queued["status"] == "True" and queued["reason"] == "Kueue"
        assert "evicted" in queued["message"] and "waits in Kueue's queue" in queued["message"]
        assert st["queue"]["since"] == SUSPENDED_AT


def test_a_worker_that_had_not_started_waits_again_even_under_early_ack() -> None:
    status = {**started_status(**EARLY), "state": "PENDING"}
    status.pop("startedAt")
    plan = derive(task(status, **EARLY), {1: kueue_job(True, SUSPENDED_AT)}, {1: [never_started_deleted()]},
                  NOW, CEILING)
    assert plan.status is not None and plan.status["state"] == "PENDING" and plan.queued
    assert plan.stop_jobs == []


def test_under_early_ack_a_preempted_task_that_ran_is_not_run_again() -> None:
    """At most once: Kueue would run the whole task again. It ends, and its Job is stopped, so that
    Kueue cannot resume it."""
    plan = derive(task(started_status(**EARLY), **EARLY), {1: kueue_job(True, SUSPENDED_AT)},
                  {1: [ran_and_deleted()]}, NOW, CEILING)
    st = plan.status
    assert st is not None and st["state"] == "FAILURE"
    assert st["error"]["reason"] == "Preempted" and st["error"]["type"] == "Preempted"
    assert "early acknowledgement" in st["error"]["message"] and "acks_late" in st["error"]["message"]
    assert plan.stop_jobs == [kueue_job(True, SUSPENDED_AT).name]
    assert st["history"][-1]["outcome"] == "Preempted"


def test_once_resumed_the_new_pod_is_the_attempts_and_the_evicted_one_does_not_count() -> None:
    old = ran_and_deleted(gone=True)
    new = pod({"running": {"startedAt": "2024-05-01T10:04:20Z"}}, "Running", created=RESUMED_AT, name="b2c3d")
    status = {**started_status(**LATE), "state": "PENDING"}
    plan = derive(task(status, **LATE), {1: kueue_job(False, RESUMED_AT)}, {1: [old, new]}, NOW, CEILING)
    assert plan.status is not None and plan.status["state"] == "STARTED"
    assert plan.stop_jobs == [] and plan.create_attempt is None
    done = dataclasses.replace(new, phase="Succeeded", running_since=None, terminated={
        "exitCode": 0, "reason": "Completed", "message": SUCCESS_VERDICT, "startedAt": "2024-05-01T10:04:20Z",
        "finishedAt": POD_FINISHED})
    final = derive(task(status, **LATE), {1: kueue_job(False, RESUMED_AT)}, {1: [old, done]}, NOW, CEILING)
    assert final.status is not None and final.status["state"] == "SUCCESS"
    assert final.status["result"] == {"updated": 50} and final.status["attempts"] == 1


def test_a_verdict_written_before_the_eviction_is_the_tasks() -> None:
    finished = pod({"terminated": {"exitCode": 0, "reason": "Completed", "message": SUCCESS_VERDICT,
                                   "startedAt": "2024-05-01T10:00:42Z", "finishedAt": SUSPENDED_AT}}, "Succeeded")
    plan = derive(task(started_status(**EARLY), **EARLY), {1: kueue_job(True, SUSPENDED_AT)}, {1: [finished]},
                  NOW, CEILING)
    assert plan.status is not None and plan.status["state"] == "SUCCESS"
    assert plan.stop_jobs == [kueue_job(True, SUSPENDED_AT).name]  # Kueue must not run it again


def test_a_job_made_suspended_and_not_admitted_yet_still_just_waits() -> None:
    plan = derive(task({**started_status(**LATE), "state": "PENDING"}, **LATE), {1: kueue_job(True, EARLIER_TS)},
                  {}, NOW, CEILING)
    assert plan.status is not None and plan.queued
    assert queued_condition(plan.status)["message"] == f"waiting for Kueue to admit Job {kueue_job(True, '').name}"
