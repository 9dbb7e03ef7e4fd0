"""final.py: the final status owes its completion event, and the task's Jobs are cleaned up:
what still runs is stopped, what has finished is deleted."""

from __future__ import annotations

from limetask_operator.derivation.final import already_final, clean_up, final

from lime_task.events import message_id, routing_key
from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import (
    BASE_SPEC,
    complete_job,
    ended_pod,
    job,
    running_pod,
    started_status,
    task,
)


def test_success_keeps_the_result_and_owes_its_event() -> None:
    f = facts(task(started_status()), [complete_job()], [ended_pod()])
    plan = final(f, "SUCCESS", "Succeeded", "", result={"n": 1}, completed_at="2024-05-01T10:04:59Z")
    st = plan.status
    assert st is not None and st["state"] == "SUCCESS" and st["result"] == {"n": 1} and "error" not in st
    assert st["completedAt"] == "2024-05-01T10:04:59Z" and st["attempts"] == 1
    assert condition_of(st)["status"] == "True"
    assert st["event"] == {"messageId": message_id("uid-1", "SUCCESS"),
                           "routingKey": routing_key(BASE_SPEC["task"], "SUCCESS"), "confirmed": False}
    assert plan.delete_jobs == [complete_job().name] and plan.stop_jobs == []


def test_failure_says_why_and_drops_any_result() -> None:
    f = facts(task({**started_status(), "result": 1, "retryAt": "x"}))
    plan = final(f, "FAILURE", "Cancelled", "the task was cancelled", error_type="Cancelled")
    st = plan.status
    assert st is not None and "result" not in st and "retryAt" not in st
    assert st["error"] == {"type": "Cancelled", "message": "the task was cancelled", "reason": "Cancelled"}
    assert condition_of(st)["status"] == "False"


def test_a_running_job_is_stopped_and_a_finished_one_deleted() -> None:
    jobs = {1: complete_job(1), 2: job(2), 3: job(3, deleting=True)}
    pods = {1: [ended_pod()], 2: [running_pod(2)]}
    assert clean_up(jobs, pods) == ([job(2).name], [complete_job(1).name])
    assert clean_up(jobs, pods, stopping=["other-9"]) == (["other-9", job(2).name], [complete_job(1).name])


def test_a_settled_task_writes_nothing_and_cleans_up() -> None:
    plan = already_final({1: complete_job()}, {1: [ended_pod()]})
    assert plan.status is None and plan.delete_jobs == [complete_job().name]
