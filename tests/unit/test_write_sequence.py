"""What the operator writes, in which order (Reconciler.carry_out), as the API server sees it.

The Kube client is the real one, with only its HTTP request replaced by a recorder that answers
as an API server would: so what is asserted is every request carry_out makes, in order, with
the client's own policy (409 on create, 404 on delete) in between.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import kopf
import pytest
from limetask_operator import derivation
from limetask_operator.kube import Kube, KubeError
from limetask_operator.model import JobView, PodView, TaskView
from limetask_operator.reconciler import PredecessorsJob, Reconciler
from limetask_operator.settings import OperatorSettings

JOBS = "/apis/batch/v1/namespaces/ns/jobs"
STATUS = "/apis/limetask.io/v1alpha1/namespaces/ns/limetasks/t1/status"
BODY: dict[str, Any] = {
    "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
    "metadata": {"name": "t1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5", "generation": 1,
                 "creationTimestamp": "2024-05-01T10:00:00Z"},
    "spec": {"task": "acme_solution.tasks.lime.add", "app": "my-app", "args": [1, 2]},
}


class RecordingKube(Kube):
    """The real client; its requests go to `answers` ((method, path) -> a body or a KubeError)."""

    def __init__(self, answers: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__(kopf.ConnectionInfo(server="https://api.test"))
        self.answers = answers or {}
        self.requests: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, body: Any = None, params: Any = None,
                      content_type: str = "application/json") -> Any:
        self.requests.append((method, path, copy.deepcopy(body)))
        answer = self.answers.get((method, path))
        if isinstance(answer, KubeError):
            raise answer
        if answer is not None:
            return copy.deepcopy(answer)
        if method == "GET":
            raise KubeError(404, "not found", method, path)
        if method == "PUT":
            return {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": "6"}}
        return copy.deepcopy(body) if body is not None else {}

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests]


def carry_out(kube: RecordingKube, plan: derivation.Plan, body: dict[str, Any] = BODY,
              **settings: Any) -> None:
    async def run() -> None:
        rec = Reconciler(kube, OperatorSettings(**settings))
        await rec.carry_out(TaskView.from_body(copy.deepcopy(body)), plan)
    asyncio.run(run())


def status(state: str, **more: Any) -> dict[str, Any]:
    return {"state": state, "attempts": 1, "jobName": "t1-1", **more}


FINAL = status("SUCCESS", result=3, completedAt="2024-05-01T10:04:59Z",
               event={"messageId": "uid-1.SUCCESS", "routingKey": "core.task.x.success.v1", "confirmed": False})


def test_a_new_attempt_creates_its_job_then_writes_its_status_then_stops_the_earlier_job() -> None:
    kube = RecordingKube()
    carry_out(kube, derivation.Plan(status=status("PENDING"), create_attempt=2, stop_jobs=["t1-1"]))
    assert kube.writes() == [("POST", JOBS), ("PUT", STATUS), ("DELETE", f"{JOBS}/t1-1")]
    job = kube.requests[0][2]
    assert job["metadata"]["name"] == "t1-2" and job["metadata"]["labels"]["limetask.io/attempt"] == "2"
    assert kube.requests[1][2]["status"]["state"] == "PENDING"
    assert kube.requests[2][2]["propagationPolicy"] == "Background"


def test_a_final_status_is_stored_before_any_job_is_stopped_or_deleted() -> None:
    kube = RecordingKube()
    carry_out(kube, derivation.Plan(status=dict(FINAL), stop_jobs=["t1-2"], delete_jobs=["t1-1"]))
    assert kube.writes() == [("PUT", STATUS), ("DELETE", f"{JOBS}/t1-2"), ("DELETE", f"{JOBS}/t1-1")]


def test_finished_jobs_the_platform_keeps_are_not_deleted_but_running_ones_are_stopped() -> None:
    kube = RecordingKube()
    carry_out(kube, derivation.Plan(status=dict(FINAL), stop_jobs=["t1-2"], delete_jobs=["t1-1"]),
              delete_finished_jobs=False)
    assert kube.writes() == [("PUT", STATUS), ("DELETE", f"{JOBS}/t1-2")]


def test_a_status_not_stored_leaves_every_job_in_place() -> None:
    kube = RecordingKube({("PUT", STATUS): KubeError(404, "the task is gone", "PUT", STATUS)})
    carry_out(kube, derivation.Plan(status=dict(FINAL), stop_jobs=["t1-2"], delete_jobs=["t1-1"]))
    assert kube.writes() == [("PUT", STATUS)]


def test_a_job_of_ours_made_before_a_restart_is_taken_as_it_is() -> None:
    ours = {"metadata": {"name": "t1-1", "labels": {"limetask.io/task-uid": "uid-1"}}}
    kube = RecordingKube({("POST", JOBS): KubeError(409, "exists", "POST", JOBS), ("GET", f"{JOBS}/t1-1"): ours})
    carry_out(kube, derivation.Plan(status=status("PENDING"), create_attempt=1))
    assert kube.writes() == [("POST", JOBS), ("GET", f"{JOBS}/t1-1"), ("PUT", STATUS)]


def test_an_earlier_tasks_job_of_the_same_name_is_deleted_and_nothing_else_written() -> None:
    theirs = {"metadata": {"name": "t1-1", "labels": {"limetask.io/task-uid": "uid-0"}}}
    kube = RecordingKube({("POST", JOBS): KubeError(409, "exists", "POST", JOBS), ("GET", f"{JOBS}/t1-1"): theirs})
    with pytest.raises(PredecessorsJob):
        carry_out(kube, derivation.Plan(status=status("PENDING"), create_attempt=1))
    assert kube.writes() == [("POST", JOBS), ("GET", f"{JOBS}/t1-1"), ("DELETE", f"{JOBS}/t1-1")]
    assert kube.requests[2][2]["propagationPolicy"] == "Foreground"  # its pods go with it


def test_a_namespace_going_away_ends_the_sequence_at_the_job() -> None:
    kube = RecordingKube({("POST", JOBS): KubeError(404, "namespace ns not found", "POST", JOBS)})
    carry_out(kube, derivation.Plan(status=status("PENDING"), create_attempt=1, stop_jobs=["t1-0"]))
    assert kube.writes() == [("POST", JOBS)]


def test_the_plan_derived_for_a_verdict_stores_it_then_deletes_the_finished_job() -> None:
    """From the objects to the requests: the derived plan, carried out."""
    task = TaskView.from_body({**BODY, "status": status("STARTED", startedAt="2024-05-01T10:00:42Z")})
    job = JobView.from_body({"metadata": {"name": "t1-1", "namespace": "ns", "labels": {
        "limetask.io/task-id": "t1", "limetask.io/attempt": "1"}, "creationTimestamp": "2024-05-01T10:00:30Z"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}})
    pod = PodView.from_body({"metadata": {"name": "t1-1-x", "namespace": "ns", "labels": {
        "limetask.io/task-id": "t1", "limetask.io/attempt": "1"}, "creationTimestamp": "2024-05-01T10:00:30Z"},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "task", "state": {"terminated": {
            "exitCode": 0, "finishedAt": "2024-05-01T10:04:59Z", "message": '{"state":"SUCCESS","result":3}'}}}]}})
    plan = derivation.derive(task, {1: job}, {1: [pod]}, dt.datetime(2024, 5, 1, 10, 5, tzinfo=dt.UTC), 10)
    kube = RecordingKube()
    carry_out(kube, plan, body={**BODY, "status": task.status})
    assert kube.writes() == [("PUT", STATUS), ("DELETE", f"{JOBS}/t1-1")]
    assert kube.requests[0][2]["status"]["state"] == "SUCCESS" and kube.requests[0][2]["status"]["result"] == 3
