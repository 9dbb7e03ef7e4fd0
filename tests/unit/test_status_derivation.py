"""derive(): the status a task should have, from the LimeTask, its Jobs and Pods as they are now."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

import pytest
from limetask_operator.derivation import Plan, derive
from limetask_operator.manifests import job_name, spec_hash
from limetask_operator.model import JobView, PodView, TaskView

from lime_task.resource import ANNOTATION_CANCEL

NAME = "sync-deals-7c1e"
NOW = dt.datetime(2024, 5, 1, 10, 5, 0, tzinfo=dt.UTC)
NOW_TS = "2024-05-01T10:05:00Z"
EARLIER_TS = "2024-05-01T10:00:30Z"
POD_STARTED = "2024-05-01T10:00:42Z"
POD_FINISHED = "2024-05-01T10:04:59Z"
CEILING = 10

BASE_SPEC: dict[str, Any] = {
    "task": "acme_solution.tasks.lime.sync_deals", "app": "acme-crm",
    "args": ["2024-01-01"], "kwargs": {}, "acksLate": False,
}


# --- realistic API objects --------------------------------------------------------------------

def task_body(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
              generation: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
        "metadata": {"name": NAME, "namespace": "default", "uid": "uid-1", "generation": generation,
                     "resourceVersion": "100", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {**copy.deepcopy(BASE_SPEC), **spec},
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    if status is not None:
        body["status"] = status
    return body


def task(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
         **spec: Any) -> TaskView:
    return TaskView.from_body(task_body(status, annotations, **spec))


def job_body(attempt: int, condition: tuple[str, str | None, str | None] | None = None, active: int = 1,
             deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": job_name(NAME, attempt), "namespace": "default", "uid": f"job-uid-{attempt}",
        "labels": {"limetask.io/task-id": NAME, "limetask.io/attempt": str(attempt),
                   "limetask.io/app": "acme-crm", "app.kubernetes.io/managed-by": "limetask-operator"},
        "creationTimestamp": EARLIER_TS,
    }
    if deleting:
        meta["deletionTimestamp"] = NOW_TS
    status: dict[str, Any] = {"startTime": EARLIER_TS}
    if condition is None:
        if active:
            status["active"] = active
    else:
        ctype, reason, message = condition
        status["conditions"] = [{"type": ctype, "status": "True", "reason": reason, "message": message,
                                 "lastProbeTime": POD_FINISHED, "lastTransitionTime": POD_FINISHED}]
        status["completionTime" if ctype == "Complete" else "failed"] = POD_FINISHED if ctype == "Complete" else 1
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"backoffLimit": 0},
            "status": status}


def job(attempt: int = 1, **kw: Any) -> JobView:
    return JobView.from_body(job_body(attempt, **kw))


def complete_job(attempt: int = 1) -> JobView:
    return job(attempt, condition=("Complete", None, None), active=0)


def failed_job(attempt: int = 1, reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> JobView:
    return job(attempt, condition=("Failed", reason, message), active=0)


def pod_body(attempt: int = 1, phase: str = "Running", state: dict[str, Any] | None = None,
             reason: str | None = None, message: str | None = None,
             conditions: list[dict[str, Any]] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"{job_name(NAME, attempt)}-x7k2p", "namespace": "default",
        "labels": {"limetask.io/task-id": NAME, "limetask.io/attempt": str(attempt),
                   "job-name": job_name(NAME, attempt), "controller-uid": f"job-uid-{attempt}"},
        "creationTimestamp": EARLIER_TS,
    }
    if deleting:
        meta["deletionTimestamp"] = NOW_TS
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or [
        {"type": "PodScheduled", "status": "True"}]}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if state is not None:
        status["containerStatuses"] = [{
            "name": "task", "image": "runner:1", "imageID": "", "ready": "running" in state,
            "restartCount": 0, "started": "running" in state, "state": state, "lastState": {},
        }]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"restartPolicy": "Never"},
            "status": status}


def pending_pod(attempt: int = 1) -> PodView:
    return PodView.from_body(pod_body(attempt, "Pending", {"waiting": {"reason": "ContainerCreating"}}))


def running_pod(attempt: int = 1, deleting: bool = False) -> PodView:
    return PodView.from_body(pod_body(attempt, "Running", {"running": {"startedAt": POD_STARTED}},
                                      deleting=deleting))


def ended_pod(exit_code: int = 0, message: str | None = None, reason: str | None = None,
              phase: str | None = None, attempt: int = 1, **kw: Any) -> PodView:
    term: dict[str, Any] = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                            "startedAt": POD_STARTED, "finishedAt": POD_FINISHED,
                            "containerID": "containerd://abc"}
    if message is not None:
        term["message"] = message
    return PodView.from_body(pod_body(attempt, phase or ("Succeeded" if exit_code == 0 else "Failed"),
                                      {"terminated": term}, **kw))


SUCCESS_VERDICT = '{"state":"SUCCESS","result":{"updated":50}}'
FAILURE_VERDICT = '{"state":"FAILURE","error":{"type":"ValueError","message":"the CRM said no","reason":"TaskRaised"}}'


def started_status(attempt: int = 1, **spec: Any) -> dict[str, Any]:
    """The status the operator writes while attempt `attempt` runs."""
    return {
        "state": "STARTED", "attempts": attempt, "jobName": job_name(NAME, attempt),
        "specHash": spec_hash({**BASE_SPEC, **spec}), "startedAt": POD_STARTED, "observedGeneration": 1,
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running",
                        "message": f"attempt {attempt} is running", "lastTransitionTime": EARLIER_TS,
                        "observedGeneration": 1}],
    }


def pending_status(attempt: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "state": "PENDING", "attempts": attempt, "jobName": job_name(NAME, attempt),
        "specHash": spec_hash({**BASE_SPEC, **spec}), "observedGeneration": 1,
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Pending",
                        "message": "waiting for the worker to start", "lastTransitionTime": EARLIER_TS,
                        "observedGeneration": 1}],
    }


def run(t: TaskView, jobs: list[JobView] = (), pods: list[PodView] = (), **kw: Any) -> Plan:  # type: ignore[assignment]
    by_attempt: dict[int, list[PodView]] = {}
    for p in pods:
        by_attempt.setdefault(p.attempt, []).append(p)
    return derive(t, {j.attempt: j for j in jobs}, by_attempt, NOW, CEILING, **kw)


def succeeded(status: dict[str, Any]) -> dict[str, Any]:
    cond: dict[str, Any]
    [cond] = [c for c in status["conditions"] if c["type"] == "Succeeded"]
    return cond


def applied(t: TaskView, plan: Plan) -> TaskView:
    """The task after the plan's status was written."""
    body = task_body(plan.status if plan.status is not None else t.status, t.annotations or None,
                     **{k: v for k, v in t.spec.items() if k not in BASE_SPEC or BASE_SPEC[k] != v})
    return TaskView.from_body(body)


# --- start ------------------------------------------------------------------------------------

def test_new_task_creates_attempt_1_and_is_pending() -> None:
    plan = run(task())
    assert plan.create_attempt == 1
    assert plan.delete_jobs == [] and plan.need_fresh_pods is None and plan.verify_job is None
    st = plan.status
    assert st is not None
    assert st["state"] == "PENDING"
    assert st["attempts"] == 1
    assert st["jobName"] == job_name(NAME, 1) == f"{NAME}-1"
    assert st["specHash"] == spec_hash(BASE_SPEC)
    assert st["observedGeneration"] == 1
    assert "completedAt" not in st and "startedAt" not in st and "result" not in st
    assert succeeded(st) == {"type": "Succeeded", "status": "Unknown", "reason": "Pending",
                             "message": "waiting for the worker to start", "lastTransitionTime": NOW_TS,
                             "observedGeneration": 1}


def test_pending_pod_keeps_pending_without_a_write() -> None:
    t = task(pending_status())
    plan = run(t, [job()], [pending_pod()])
    assert plan.create_attempt is None
    assert plan.status is None  # nothing changed: no write


def test_job_without_pod_yet_is_pending() -> None:
    plan = run(task(pending_status()), [job()], [])
    assert plan.status is None and plan.create_attempt is None


def test_pod_running_is_started() -> None:
    plan = run(task(pending_status()), [job()], [running_pod()])
    st = plan.status
    assert st is not None
    assert st["state"] == "STARTED"
    assert st["startedAt"] == POD_STARTED
    assert st["attempts"] == 1
    cond = succeeded(st)
    assert (cond["status"], cond["reason"]) == ("Unknown", "Running")
    # Unknown -> Unknown: not a transition.
    assert cond["lastTransitionTime"] == EARLIER_TS
    assert plan.create_attempt is None and plan.delete_jobs == []


def test_started_and_still_running_writes_nothing() -> None:
    assert run(task(started_status()), [job()], [running_pod()]).status is None


def test_a_terminating_pod_does_not_move_a_started_task_back_to_pending() -> None:
    # `kubectl delete pod` or an eviction's grace period: the pod still runs, with a deletionTimestamp.
    plan = run(task(started_status()), [job()], [running_pod(deleting=True)])
    assert plan.status is None or plan.status["state"] == "STARTED"


# --- verdicts ---------------------------------------------------------------------------------

def test_success_verdict() -> None:
    plan = run(task(started_status()), [complete_job()], [ended_pod(0, SUCCESS_VERDICT)])
    st = plan.status
    assert st is not None
    assert st["state"] == "SUCCESS"
    assert st["result"] == {"updated": 50}
    assert "error" not in st
    assert st["completedAt"] == POD_FINISHED  # when the pod finished, not when it was noticed
    assert st["startedAt"] == POD_STARTED
    assert st["attempts"] == 1
    cond = succeeded(st)
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == ("True", "Succeeded", NOW_TS)
    assert plan.delete_jobs == [job_name(NAME, 1)]
    assert plan.create_attempt is None
    assert st["history"] == [{"attempt": 1, "jobName": job_name(NAME, 1), "outcome": "SUCCESS",
                              "reason": "Succeeded", "message": "", "finishedAt": POD_FINISHED}]


def test_success_with_null_result_stores_no_result() -> None:
    plan = run(task(started_status()), [complete_job()], [ended_pod(0, '{"state":"SUCCESS","result":null}')])
    assert plan.status is not None and plan.status["state"] == "SUCCESS"
    assert "result" not in plan.status


def test_success_with_falsy_results_is_stored() -> None:
    for result in ("0", "false", '""', "[]"):
        plan = run(task(started_status()), [complete_job()],
                   [ended_pod(0, f'{{"state":"SUCCESS","result":{result}}}')])
        assert plan.status is not None and "result" in plan.status, result


def test_failure_verdict() -> None:
    plan = run(task(started_status()), [failed_job()], [ended_pod(1, FAILURE_VERDICT)])
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE"
    assert st["error"] == {"type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}
    assert "result" not in st
    cond = succeeded(st)
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "TaskRaised", "the CRM said no")
    assert plan.delete_jobs == [job_name(NAME, 1)]


def test_task_that_raised_under_late_ack_is_not_rerun() -> None:
    plan = run(task(started_status(acksLate=True, maxAttempts=3), acksLate=True, maxAttempts=3),
               [failed_job()], [ended_pod(1, FAILURE_VERDICT)])
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == "TaskRaised"


@pytest.mark.parametrize("reason", ["ResultTooLarge", "ResultNotJSON", "UnknownTask", "InvalidArguments"])
def test_runner_reasons_are_kept(reason: str) -> None:
    verdict = f'{{"state":"FAILURE","error":{{"type":"X","message":"m","reason":"{reason}"}}}}'
    plan = run(task(started_status()), [failed_job()], [ended_pod(1, verdict)])
    assert plan.status is not None
    assert plan.status["error"]["reason"] == reason
    assert succeeded(plan.status)["reason"] == reason


def test_verdict_wins_over_a_job_deadline() -> None:
    plan = run(task(started_status(timeoutSeconds=60), timeoutSeconds=60),
               [failed_job(reason="DeadlineExceeded", message="Job was active longer than specified deadline")],
               [ended_pod(0, SUCCESS_VERDICT)])
    assert plan.status is not None and plan.status["state"] == "SUCCESS"


# --- lost workers -----------------------------------------------------------------------------

def lost(plan: Plan, deleted: tuple[int, ...] = (1,)) -> str:
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE", st
    assert st["error"]["reason"] == "WorkerLost"
    assert st["error"]["type"] == "WorkerLost"
    assert succeeded(st)["status"] == "False" and succeeded(st)["reason"] == "WorkerLost"
    assert plan.create_attempt is None
    assert plan.delete_jobs == [job_name(NAME, n) for n in deleted]
    return str(st["error"]["message"])


def test_exit_0_without_a_verdict_is_never_success() -> None:
    message = lost(run(task(started_status()), [complete_job()], [ended_pod(0, None)]))
    assert "exited with code 0 without a verdict" in message
    assert "not re-run" in message


@pytest.mark.parametrize("garbage", ["", "hello", '{"state":"SUCC', '{"state":"SUCCESS"}'])
def test_exit_0_with_an_unreadable_verdict_is_never_success(garbage: str) -> None:
    lost(run(task(started_status()), [complete_job()], [ended_pod(0, garbage)]))


def test_sigkill() -> None:
    message = lost(run(task(started_status()), [failed_job()], [ended_pod(137, None)]))
    assert "SIGKILL" in message
    assert "137" in message


def test_sigterm_signal_field() -> None:
    pod = PodView.from_body(pod_body(1, "Failed", {"terminated": {"exitCode": 143, "signal": 15,
                                                                  "reason": "Error", "finishedAt": POD_FINISHED}}))
    assert "SIGTERM" in lost(run(task(started_status()), [failed_job()], [pod]))


def test_oom_killed() -> None:
    message = lost(run(task(started_status()), [failed_job()], [ended_pod(137, None, reason="OOMKilled")]))
    assert "OOMKilled" in message
    assert "memory" in message


def test_evicted_with_disruption_target() -> None:
    pod = ended_pod(137, None, reason="Error", phase="Failed",
                    conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                                 "message": "The node was low on resource: memory."}])
    message = lost(run(task(started_status()), [failed_job()], [pod]))
    assert "evicted" in message


def test_evicted_by_pod_reason() -> None:
    pod = PodView.from_body(pod_body(1, "Failed", None, reason="Evicted",
                                     message="The node was low on resource: ephemeral-storage."))
    message = lost(run(task(started_status()), [failed_job()], [pod]))
    assert "evicted" in message and "ephemeral-storage" in message


def test_early_ack_lost_is_failure_worker_lost_with_history() -> None:
    plan = run(task(started_status()), [failed_job()], [ended_pod(137, None)])
    lost(plan)
    assert plan.status is not None
    assert plan.status["history"] == [{
        "attempt": 1, "jobName": job_name(NAME, 1), "outcome": "WorkerLost", "reason": "WorkerLost",
        "message": "the worker was killed by SIGKILL (exit code 137)", "finishedAt": POD_FINISHED}]


def test_late_ack_lost_at_attempt_1_of_3_starts_attempt_2() -> None:
    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
    plan = run(task(started_status(**spec), **spec), [failed_job()], [ended_pod(137, None)])
    assert plan.create_attempt == 2
    assert plan.delete_jobs == []
    st = plan.status
    assert st is not None
    assert st["state"] == "PENDING"
    assert st["attempts"] == 2
    assert st["jobName"] == job_name(NAME, 2)
    assert "error" not in st and "completedAt" not in st
    assert st["startedAt"] == POD_STARTED  # when the task first started
    assert succeeded(st)["status"] == "Unknown"
    assert succeeded(st)["lastTransitionTime"] == EARLIER_TS
    assert "attempt 2" in succeeded(st)["message"]
    assert len(st["history"]) == 1
    entry = st["history"][0]
    assert entry["attempt"] == 1 and entry["outcome"] == "WorkerLost" and "SIGKILL" in entry["message"]


def test_late_ack_attempt_2_running_after_a_lost_attempt_1() -> None:
    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
    status = {**pending_status(2, **spec), "startedAt": POD_STARTED,
              "history": [{"attempt": 1, "outcome": "WorkerLost"}]}
    plan = run(task(status, **spec), [failed_job(1), job(2)], [ended_pod(137, None), running_pod(2)])
    assert plan.status is not None
    assert plan.status["state"] == "STARTED"
    assert plan.status["attempts"] == 2
    assert plan.status["history"] == [{"attempt": 1, "outcome": "WorkerLost"}]
    assert plan.create_attempt is None


def test_late_ack_lost_at_the_last_attempt_is_retries_exhausted() -> None:
    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
    status = {**started_status(3, **spec), "history": [
        {"attempt": 1, "outcome": "WorkerLost"}, {"attempt": 2, "outcome": "WorkerLost"}]}
    plan = run(task(status, **spec), [failed_job(1), failed_job(2), failed_job(3)],
               [ended_pod(137, None, attempt=3)])
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE"
    assert st["error"]["reason"] == "RetriesExhausted"
    assert st["error"]["type"] == "WorkerLost"
    assert "3 attempts" in st["error"]["message"]
    assert st["attempts"] == 3
    assert plan.create_attempt is None
    assert [h["attempt"] for h in st["history"]] == [1, 2, 3]
    assert plan.delete_jobs == sorted(job_name(NAME, n) for n in (1, 2, 3))


def test_max_attempts_is_capped_by_the_ceiling() -> None:
    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 5}
    t = task({**started_status(2, **spec), "history": [{"attempt": 1, "outcome": "WorkerLost"}]}, **spec)
    plan = derive(t, {2: failed_job(2)}, {2: [ended_pod(137, None, attempt=2)]}, NOW, 2)
    assert plan.status is not None and plan.status["error"]["reason"] == "RetriesExhausted"


def test_max_attempts_over_the_ceiling_is_an_invalid_spec() -> None:
    plan = derive(task(acksLate=True, maxAttempts=5), {}, {}, NOW, 3)
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"
    assert "ceiling" in plan.status["error"]["message"]


def test_arguments_over_the_limit_are_an_invalid_spec() -> None:
    plan = run(task(args=["x" * 40_000]))
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"


# --- timeout, cancel, spec change -------------------------------------------------------------

def test_job_deadline_exceeded_is_timed_out() -> None:
    spec: dict[str, Any] = {"timeoutSeconds": 600, "acksLate": True, "maxAttempts": 3}
    plan = run(task(started_status(**spec), **spec),
               [failed_job(reason="DeadlineExceeded", message="Job was active longer than specified deadline")],
               [ended_pod(137, None)])
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE"
    assert st["error"]["reason"] == "TimedOut"
    assert "600 seconds" in st["error"]["message"]
    assert plan.create_attempt is None  # never re-run, even with late ack
    assert plan.delete_jobs == [job_name(NAME, 1)]


def test_the_installations_default_time_limit_counts_as_the_tasks_timeout() -> None:
    """A task that set no timeout has the default the operator put on its Job: it times out with
    that limit, and a worker lost past it timed out (never run again under late ack)."""
    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
    limited = dataclasses.replace(failed_job(reason="DeadlineExceeded", message="deadline"), deadline=900)
    plan = run(task(started_status(**spec), **spec), [limited], [ended_pod(137, None)])
    assert plan.status is not None and plan.status["error"]["reason"] == "TimedOut"
    assert "900 seconds" in plan.status["error"]["message"] and plan.create_attempt is None
    lost = run(task(started_status(**spec), **spec), [dataclasses.replace(job(), deadline=2)],
               [dataclasses.replace(running_pod(), deleting=True, gone=True, created=EARLIER_TS)])
    assert lost.status is not None and lost.status["error"]["reason"] == "TimedOut" and lost.create_attempt is None
    # The same lost worker on a Job with no deadline is a lost worker: run again.
    again = run(task(started_status(**spec), **spec), [job()],
                [dataclasses.replace(running_pod(), deleting=True, gone=True, created=EARLIER_TS)])
    assert again.create_attempt == 2


def test_a_jobs_deadline_is_read_from_its_spec() -> None:
    body = job_body(1)
    assert JobView.from_body(body).deadline is None
    body["spec"] = {**(body.get("spec") or {}), "activeDeadlineSeconds": 900}
    assert JobView.from_body(body).deadline == 900


def test_job_deadline_exceeded_with_the_pod_already_gone_is_timed_out() -> None:
    plan = run(task(started_status(timeoutSeconds=5), timeoutSeconds=5),
               [failed_job(reason="DeadlineExceeded", message="deadline")], [])
    assert plan.status is not None and plan.status["error"]["reason"] == "TimedOut"


def test_pod_deadline_exceeded_is_timed_out() -> None:
    pod = PodView.from_body(pod_body(1, "Failed", None, reason="DeadlineExceeded",
                                     message="Pod was active on the node longer than the specified deadline"))
    plan = run(task(started_status(timeoutSeconds=5), timeoutSeconds=5), [failed_job()], [pod])
    assert plan.status is not None and plan.status["error"]["reason"] == "TimedOut"


@pytest.mark.parametrize("value", ["true", "True", "yes", "1"])
def test_cancel_annotation(value: str) -> None:
    plan = run(task(started_status(), annotations={ANNOTATION_CANCEL: value}), [job()], [running_pod()])
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE"
    assert st["error"] == {"type": "Cancelled", "message": "the task was cancelled", "reason": "Cancelled"}
    # The running pod is stopped, whether or not finished Jobs are kept.
    assert plan.stop_jobs == [job_name(NAME, 1)] and plan.delete_jobs == []
    assert plan.create_attempt is None


def test_cancel_annotation_false_is_ignored() -> None:
    plan = run(task(started_status(), annotations={ANNOTATION_CANCEL: "false"}), [job()], [running_pod()])
    assert plan.status is None


def test_cancel_before_any_job() -> None:
    plan = run(task(annotations={ANNOTATION_CANCEL: "true"}))
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "Cancelled"


def test_spec_changed_after_it_was_accepted() -> None:
    status = started_status()  # hash of BASE_SPEC
    plan = run(task(status, args=["2030-01-01"]), [job()], [running_pod()])
    st = plan.status
    assert st is not None
    assert st["state"] == "FAILURE"
    assert st["error"]["reason"] == "SpecChanged"
    assert plan.create_attempt is None
    assert plan.stop_jobs == [job_name(NAME, 1)] and plan.delete_jobs == []


# --- final, caches ----------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["SUCCESS", "FAILURE"])
def test_already_final_only_deletes_jobs(state: str) -> None:
    status = {**started_status(), "state": state, "completedAt": EARLIER_TS}
    plan = run(task(status, annotations={ANNOTATION_CANCEL: "true"}, args=["changed"]),
               [complete_job(1), job(2, deleting=True)], [ended_pod(0, SUCCESS_VERDICT)])
    assert plan.status is None
    assert plan.create_attempt is None
    assert plan.delete_jobs == [job_name(NAME, 1)]  # the one being deleted already is left alone


def test_job_finished_but_pod_not_in_cache_asks_for_fresh_pods() -> None:
    plan = run(task(started_status()), [complete_job()], [])
    assert plan.need_fresh_pods == 1
    assert plan.status is None and plan.create_attempt is None and plan.delete_jobs == []


def test_job_finished_and_fresh_pods_have_none_is_worker_lost() -> None:
    message = lost(run(task(started_status()), [complete_job()], [], pods_fresh=True))
    assert "removed before its verdict was read" in message


def test_status_says_job_was_made_but_cache_has_none_verifies() -> None:
    plan = run(task(pending_status()), [], [])
    assert plan.verify_job == 1
    assert plan.status is None and plan.create_attempt is None


def test_status_without_a_matching_job_name_starts_again() -> None:
    status = {**pending_status(), "jobName": "something-else"}
    plan = run(task(status), [], [])
    assert plan.create_attempt == 1


def test_jobs_gone_is_worker_lost() -> None:
    message = lost(run(task(started_status()), [], [], jobs_gone=frozenset({1})), deleted=())
    assert "deleted" in message


def test_job_being_deleted_without_pods_is_worker_lost() -> None:
    plan = run(task(started_status()), [job(deleting=True)], [])
    assert plan.status is not None and plan.status["error"]["reason"] == "WorkerLost"


# --- conditions and level-based behaviour -----------------------------------------------------

def test_condition_transition_time_kept_when_status_unchanged() -> None:
    status = {**started_status(), "conditions": [{
        "type": "Succeeded", "status": "Unknown", "reason": "Pending", "message": "old",
        "lastTransitionTime": "2024-05-01T09:00:00Z", "observedGeneration": 1}]}
    plan = run(task(status), [job()], [running_pod()])
    assert plan.status is not None
    cond = succeeded(plan.status)
    assert cond["lastTransitionTime"] == "2024-05-01T09:00:00Z"
    assert cond["reason"] == "Running"


def test_condition_transition_time_moves_when_status_changes() -> None:
    plan = run(task(started_status()), [failed_job()], [ended_pod(1, FAILURE_VERDICT)])
    assert plan.status is not None
    assert succeeded(plan.status)["lastTransitionTime"] == NOW_TS


def test_unrelated_conditions_are_replaced_by_one_succeeded_condition() -> None:
    plan = run(task(started_status()), [complete_job()], [ended_pod(0, SUCCESS_VERDICT)])
    assert plan.status is not None
    assert [c["type"] for c in plan.status["conditions"]] == ["Succeeded"]


def test_observed_generation_follows_the_task() -> None:
    body = task_body(started_status(), generation=4)
    plan = derive(TaskView.from_body(body), {1: complete_job()}, {1: [ended_pod(0, SUCCESS_VERDICT)]}, NOW, 10)
    assert plan.status is not None
    assert plan.status["observedGeneration"] == 4
    assert succeeded(plan.status)["observedGeneration"] == 4


def essentials(status: dict[str, Any]) -> dict[str, Any]:
    cond = succeeded(status)
    return {"state": status["state"], "result": status.get("result"), "error": status.get("error"),
            "attempts": status["attempts"], "completedAt": status.get("completedAt"),
            "condition": (cond["status"], cond["reason"], cond["message"])}


@pytest.mark.parametrize("pod, expect", [
    (lambda: ended_pod(0, SUCCESS_VERDICT), "SUCCESS"),
    (lambda: ended_pod(1, FAILURE_VERDICT), "TaskRaised"),
    (lambda: ended_pod(137, None), "WorkerLost"),
])
def test_level_based_same_inputs_same_outcome(pod: Any, expect: str) -> None:
    """A task seen first when its pod has already finished ends exactly as one watched throughout."""
    jobs, pods = [complete_job() if expect == "SUCCESS" else failed_job()], [pod()]
    outcomes = []
    for status in (None, {}, pending_status(), started_status()):
        plan = run(task(status), jobs, pods)
        assert plan.status is not None, status
        assert plan.create_attempt is None
        assert plan.delete_jobs == [job_name(NAME, 1)]
        outcomes.append(essentials(plan.status))
    assert all(o == outcomes[0] for o in outcomes), outcomes
    assert expect in (outcomes[0]["state"], (outcomes[0]["error"] or {}).get("reason"))


def test_walking_through_every_step_ends_where_jumping_ends() -> None:
    steps: list[tuple[list[JobView], list[PodView]]] = [
        ([], []), ([job()], []), ([job()], [pending_pod()]), ([job()], [running_pod()]),
        ([complete_job()], [ended_pod(0, SUCCESS_VERDICT)]),
    ]
    t = task()
    for jobs, pods in steps:
        t = applied(t, run(t, jobs, pods))
    walked = t.status
    jumped = run(task(), *steps[-1]).status
    assert jumped is not None
    assert essentials(walked) == essentials(jumped)
    assert walked["startedAt"] == POD_STARTED


@pytest.mark.parametrize("jobs, pods", [
    ([job()], [pending_pod()]),
    ([job()], [running_pod()]),
    ([complete_job()], [ended_pod(0, SUCCESS_VERDICT)]),
    ([failed_job()], [ended_pod(137, None)]),
])
def test_deriving_again_after_writing_is_a_fixed_point(jobs: list[JobView], pods: list[PodView]) -> None:
    t = applied(task(), run(task(), [], []))       # attempt 1 requested
    t = applied(t, run(t, jobs, pods))              # the current state written
    again = run(t, jobs, pods)
    assert again.status is None
    assert again.create_attempt is None


def test_derive_does_not_mutate_its_inputs() -> None:
    status = started_status()
    t = task(status)
    before = copy.deepcopy(t.status)
    run(t, [complete_job()], [ended_pod(0, SUCCESS_VERDICT)])
    assert t.status == before


def test_image_override_refused_when_the_platform_does_not_allow_it() -> None:
    import datetime as _dt

    from limetask_operator.derivation import derive as _derive
    from limetask_operator.model import TaskView as _TV

    body = {"metadata": {"name": "t1", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1"},
            "spec": {"task": "pkg.mod.fn", "app": "my-app", "image": "evil.example/miner:latest"}}
    plan = _derive(_TV.from_body(body), {}, {}, _dt.datetime.now(_dt.timezone.utc), 10, allow_image_override=False)
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == "InvalidSpec" and "image" in plan.status["error"]["message"]
    allowed = _derive(_TV.from_body(body), {}, {}, _dt.datetime.now(_dt.timezone.utc), 10, allow_image_override=True)
    assert allowed.create_attempt == 1


def test_resource_caps_and_placement_are_checked_before_any_job() -> None:
    import datetime as _dt

    from limetask_operator.derivation import derive as _derive
    from limetask_operator.model import TaskView as _TV

    def plan(spec: dict[str, object], **kw: object) -> object:
        body = {"metadata": {"name": "t1", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1"},
                "spec": {"task": "pkg.mod.fn", "app": "my-app", **spec}}
        return _derive(_TV.from_body(body), {}, {}, _dt.datetime.now(_dt.timezone.utc), 10, **kw)  # type: ignore[arg-type]

    big = plan({"resources": {"limits": {"memory": "16Gi"}}}, resource_caps={"memory": "4Gi"})
    assert big.create_attempt is None and big.status["error"]["reason"] == "InvalidSpec"  # type: ignore[attr-defined]
    assert "over the cap of 4Gi" in big.status["error"]["message"]  # type: ignore[attr-defined]
    assert plan({"resources": {"limits": {"memory": "1Gi"}}}, resource_caps={"memory": "4Gi"}).create_attempt == 1  # type: ignore[attr-defined]
    placed = plan({"nodeSelector": {"pool": "x"}}, allow_placement_override=False)
    assert placed.status["error"]["reason"] == "InvalidSpec"  # type: ignore[attr-defined]
    assert "spec.nodeSelector" in placed.status["error"]["message"]  # type: ignore[attr-defined]
    assert plan({"nodeSelector": {"pool": "x"}}, allow_placement_override=True).create_attempt == 1  # type: ignore[attr-defined]


# --- hostile input: what the API server would refuse ------------------------------------------

def test_a_job_the_api_refuses_as_invalid_ends_the_task() -> None:
    plan = run(task(), job_refused=(422, 'Job.batch "x" is invalid: spec.template.spec.tolerations[0]: bad'))
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == "InvalidSpec"
    assert "refused the Job of attempt 1" in plan.status["error"]["message"]
    assert "tolerations[0]" in plan.status["error"]["message"]


@pytest.mark.parametrize("message, reason", [
    ('jobs.batch "x" is forbidden: exceeded quota: q, requested: count/jobs.batch=1', "QuotaExceeded"),
    ('jobs.batch is forbidden: User "system:serviceaccount:x:y" cannot create resource "jobs"', "JobRefused"),
])
def test_a_job_the_api_forbids_waits_visibly_and_is_retried(message: str, reason: str) -> None:
    plan = run(task(), job_refused=(403, message))
    assert plan.create_attempt is None and plan.recheck_after
    assert plan.status is not None and plan.status["state"] == "PENDING"
    assert "attempts" not in plan.status and "jobName" not in plan.status  # the attempt is not started
    assert succeeded(plan.status)["reason"] == reason and message in succeeded(plan.status)["message"]
    # Next time round the Job is tried again.
    again = run(task(plan.status))
    assert again.create_attempt == 1


def test_a_job_without_a_pod_is_looked_at_after_a_grace() -> None:
    young = JobView.from_body({**job_body(1), "metadata": {**job_body(1)["metadata"], "creationTimestamp": NOW_TS}})
    plan = run(task(pending_status()), [young])
    from limetask_operator.derivation import ADMISSION_GRACE_SECONDS

    assert plan.check_admission is None and plan.recheck_after is not None
    assert 0 < plan.recheck_after <= ADMISSION_GRACE_SECONDS + 1
    old = JobView.from_body(job_body(1))
    assert run(task(pending_status()), [old]).check_admission == 1


def test_a_pod_a_limitrange_refuses_ends_the_task() -> None:
    refusal = ('Error creating: pods "x-1-abcde" is forbidden: maximum memory usage per Container is 256Mi, '
               'but limit is 512Mi')
    plan = run(task(pending_status()), [JobView.from_body(job_body(1))], admission=refusal)
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == "InvalidSpec" and "256Mi" in plan.status["error"]["message"]
    assert plan.stop_jobs == [job_name(NAME, 1)]  # the job controller stops trying


@pytest.mark.parametrize("refusal, reason", [
    ('Error creating: pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3',
     "QuotaExceeded"),
    ('Error creating: pods "x" is forbidden: error looking up service account ns/default: serviceaccount '
     '"default" not found', "PodRefused"),
    ("Error creating: Internal error occurred: etcdserver: request timed out", "PodRefused"),
])
def test_a_pod_refused_for_now_waits_visibly(refusal: str, reason: str) -> None:
    plan = run(task(pending_status()), [JobView.from_body(job_body(1))], admission=refusal)
    assert plan.status is not None and plan.status["state"] == "PENDING"
    assert succeeded(plan.status)["reason"] == reason and refusal in succeeded(plan.status)["message"]
    assert plan.recheck_after


def test_no_refusal_found_is_still_pending_and_looked_at_again() -> None:
    plan = run(task(pending_status()), [JobView.from_body(job_body(1))], admission="")
    assert plan.status is None and plan.recheck_after


def test_why_a_pending_pod_waits_is_shown() -> None:
    body = pod_body(1, "Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})
    plan = run(task(pending_status()), [JobView.from_body(job_body(1))], [PodView.from_body(body)])
    assert plan.status is not None and plan.status["state"] == "PENDING"
    assert succeeded(plan.status)["reason"] == "ImagePullBackOff"
    assert "Back-off pulling image" in succeeded(plan.status)["message"]


def test_a_name_longer_than_a_label_fails() -> None:
    body = task_body()
    body["metadata"]["name"] = "n" * 64
    plan = derive(TaskView.from_body(body), {}, {}, NOW, CEILING)
    assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"
    assert "at most 63" in plan.status["error"]["message"] and plan.create_attempt is None


@pytest.mark.parametrize("args, words", [
    ([[[[1]]]], None),
    ([18446744073709551616], "64-bit"),
    ([1e19], "2**63"),
    (["x" * 40000], "over the limit"),
])
def test_arguments_the_client_would_refuse_fail_here_too(args: list[Any], words: str | None) -> None:
    plan = run(task(args=args))
    if words is None:
        assert plan.create_attempt == 1
    else:
        assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"
        assert words in plan.status["error"]["message"]


def test_arguments_nested_too_deep_fail() -> None:
    from lime_task import safejson

    body = safejson.loads('{"spec": {"args": ' + "[" * 3000 + "1" + "]" * 3000 + "}}")
    plan = run(task(args=body["spec"]["args"]))
    assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"
    assert "deeper than 64" in plan.status["error"]["message"]


@pytest.mark.parametrize("resources, words", [
    ({"requests": {"memory": "1Gi"}}, "requests.memory=1Gi is above limits.memory=512Mi"),
    ({"limits": {"cpu": "inf"}}, "not a quantity"),
    ({"limits": {"memory": "-1Gi"}}, "not a quantity"),
    ({"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}, None),
])
def test_resources_checked_against_the_defaults(resources: dict[str, Any], words: str | None) -> None:
    defaults = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    plan = run(task(resources=resources), runner_resources=defaults)
    if words is None:
        assert plan.create_attempt == 1
    else:
        assert plan.status is not None and words in plan.status["error"]["message"], plan.status


def test_event_message_id_is_the_uid_not_the_name() -> None:
    plan = run(task(started_status()), [JobView.from_body(job_body(1, ("Complete", None, None), active=0))],
               [ended_pod(0, SUCCESS_VERDICT)])
    assert plan.status is not None and plan.status["event"]["messageId"] == "uid-1.SUCCESS"



# --- a verdict already written wins over a later cancel -----------------------------------------

@pytest.mark.parametrize("verdict, state", [(SUCCESS_VERDICT, "SUCCESS"), (FAILURE_VERDICT, "FAILURE")])
def test_a_verdict_wins_over_a_later_cancel(verdict: str, state: str) -> None:
    plan = run(task(started_status(), annotations={ANNOTATION_CANCEL: "true"}),
               [complete_job() if state == "SUCCESS" else failed_job()], [ended_pod(0 if state == "SUCCESS" else 1,
                                                                                    verdict)])
    assert plan.status is not None and plan.status["state"] == state
    assert (plan.status.get("error") or {}).get("reason") != "Cancelled"


def test_a_cancel_with_a_finished_job_but_no_pod_in_cache_reads_the_pods_first() -> None:
    plan = run(task(started_status(), annotations={ANNOTATION_CANCEL: "true"}), [complete_job()], [])
    assert plan.need_fresh_pods == 1 and plan.status is None
    after = run(task(started_status(), annotations={ANNOTATION_CANCEL: "true"}), [complete_job()],
                [ended_pod(0, SUCCESS_VERDICT)], pods_fresh=True)
    assert after.status is not None and after.status["state"] == "SUCCESS"


def test_a_lost_worker_is_still_cancelled() -> None:
    plan = run(task(started_status(), annotations={ANNOTATION_CANCEL: "true"}), [failed_job()], [ended_pod(137, None)])
    assert plan.status is not None and plan.status["error"]["reason"] == "Cancelled"


def test_a_finished_job_is_kept_when_asked_and_a_running_one_is_stopped() -> None:
    plan = run(task(started_status(2, acksLate=True), acksLate=True),
               [complete_job(1), job(2)], [ended_pod(0, SUCCESS_VERDICT, attempt=1), running_pod(2)])
    del plan
    cancelled = run(task(started_status(2, acksLate=True), annotations={ANNOTATION_CANCEL: "true"}, acksLate=True),
                    [failed_job(1), job(2)], [ended_pod(137, None, attempt=1), running_pod(2)])
    assert cancelled.stop_jobs == [job_name(NAME, 2)] and cancelled.delete_jobs == [job_name(NAME, 1)]


# --- one pod per attempt; an attempt that never started ----------------------------------------

def test_a_replacement_pods_verdict_never_counts() -> None:
    import dataclasses as dc

    first = dc.replace(ended_pod(143, None, reason="Error"), name="a", created="2024-05-01T10:00:40Z",
                       deleting=True)
    replacement = dc.replace(ended_pod(0, SUCCESS_VERDICT), name="b", created="2024-05-01T10:02:00Z")
    plan = run(task(started_status()), [job()], [first, replacement])
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == "WorkerLost" and "replacement" in plan.status["error"]["message"]


def test_the_first_pods_verdict_counts_even_with_a_replacement() -> None:
    import dataclasses as dc

    first = dc.replace(ended_pod(0, SUCCESS_VERDICT), name="a", created="2024-05-01T10:00:40Z", deleting=True)
    replacement = dc.replace(running_pod(), name="b", created="2024-05-01T10:02:00Z")
    plan = run(task(started_status()), [job()], [first, replacement])
    assert plan.status is not None and plan.status["state"] == "SUCCESS"


def test_a_deleted_running_pod_stops_its_job_at_once() -> None:
    plan = run(task(started_status()), [job()], [running_pod(deleting=True)])
    assert plan.stop_jobs == [job_name(NAME, 1)]
    assert plan.status is None or plan.status["state"] == "STARTED"  # the first pod's end decides


def test_a_new_attempt_stops_an_earlier_attempts_job_that_still_runs() -> None:
    import dataclasses as dc

    spec: dict[str, Any] = {"acksLate": True, "maxAttempts": 3}
    first = dc.replace(ended_pod(137, None), name="a", created="2024-05-01T10:00:40Z")
    replacement = dc.replace(running_pod(), name="b", created="2024-05-01T10:02:00Z")
    plan = run(task(started_status(**spec), **spec), [job()], [first, replacement])
    assert plan.create_attempt == 2 and plan.stop_jobs == [job_name(NAME, 1)]


def _evicted_before_start() -> PodView:
    return PodView.from_body(pod_body(1, "Failed", None, reason="Evicted", message="The node was low on memory."))


def test_an_attempt_whose_worker_never_started_runs_again_even_under_early_ack() -> None:
    plan = run(task(pending_status()), [failed_job()], [_evicted_before_start()])
    assert plan.create_attempt == 2
    assert plan.status is not None and plan.status["history"][-1]["outcome"] == "NotStarted"


def test_never_started_reruns_are_bounded() -> None:
    history = [{"attempt": n, "jobName": job_name(NAME, n), "outcome": "NotStarted", "reason": "NotStarted",
                "message": "evicted", "finishedAt": EARLIER_TS} for n in (1, 2, 3)]
    status = {**pending_status(4), "history": history}
    plan = derive(task(status), {4: failed_job(4)}, {4: [dataclasses.replace(_evicted_before_start(), attempt=4)]},
                  NOW, CEILING)
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "WorkerLost"
    assert plan.status["error"]["message"].startswith("no worker started in all 4 attempts")


def test_a_pod_deleted_while_it_ran_is_a_lost_worker_even_before_a_replacement() -> None:
    gone = dataclasses.replace(running_pod(), deleting=True, gone=True)
    plan = run(task(started_status()), [job()], [gone])
    assert plan.status is not None and plan.status["error"]["reason"] == "WorkerLost"
    assert "deleted while the task ran" in plan.status["error"]["message"]


def test_a_pod_stopped_by_its_deadline_before_it_started_is_not_run_again() -> None:
    """Not started, but stopped by the deadline (or a deletion), not evicted: it counts as run."""
    pod = PodView.from_body(pod_body(1, "Failed", None))
    spec: dict[str, Any] = {"timeoutSeconds": 2}
    plan = run(task(pending_status(**spec), **spec), [job()], [pod])
    assert plan.create_attempt is None


def test_a_pod_deleted_at_its_deadline_timed_out_even_once_its_job_is_gone() -> None:
    spec: dict[str, Any] = {"timeoutSeconds": 2, "acksLate": True, "maxAttempts": 3}
    gone = dataclasses.replace(running_pod(), deleting=True, gone=True, created=EARLIER_TS)
    past = run(task(started_status(**spec), **spec), [job()], [dataclasses.replace(running_pod(), deleting=True)])
    assert past.stop_jobs == []  # the job controller is at work: its Job will say DeadlineExceeded
    plan = run(task(started_status(**spec), **spec), [], [gone], jobs_gone=frozenset({1}))
    assert plan.status is not None and plan.status["error"]["reason"] == "TimedOut" and plan.create_attempt is None
