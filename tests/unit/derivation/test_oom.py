"""oom.py: an attempt OOMKilled, of a task with memoryOnOOM, runs again with the next size as its
memory, under either acknowledgement and on a budget of its own; after the last size, or with
the next one over the installation's cap, the task fails OOMKilled. Sizes over the cap are
refused before any Job is made (spec.py)."""

from __future__ import annotations

from typing import Any

import pytest
from limetask_operator.derivation import Plan
from limetask_operator.derivation.oom import after_oom
from limetask_operator.derivation.outcome import Lost, attempt_outcome
from limetask_operator.manifests import job_name
from limetask_operator.model import PodView

from tests.unit.derivation.facts import facts
from tests.unit.test_status_derivation import (
    FAILURE_VERDICT,
    NAME,
    POD_FINISHED,
    SUCCESS_VERDICT,
    applied,
    ended_pod,
    failed_job,
    job,
    pod_body,
    run,
    started_status,
    task,
)

STEPS = {"memoryOnOOM": ["1Gi", "2Gi"]}
RUNNER = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
OOM = Lost("the container was OOMKilled: it ran out of memory (exit code 137); raise its memory limit", oom=True)


def oom_pod(attempt: int = 1) -> PodView:
    return ended_pod(137, None, reason="OOMKilled", attempt=attempt)


def derive(status: dict[str, Any], attempt: int, pod: PodView, spec: dict[str, Any] | None = None,
           **kw: Any) -> Plan:
    """The plan once attempt `attempt` ended with `pod` (its Job failed, or complete)."""
    spec = STEPS if spec is None else spec
    ended = failed_job(attempt) if pod.terminated and pod.terminated.get("exitCode") else job(
        attempt, condition=("Complete", None, None), active=0)
    return run(task(status, **spec), [ended], [pod], runner_resources=RUNNER, **kw)


def running(status_after: Plan, attempt: int, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status once the next attempt's worker started (written by the operator meanwhile)."""
    assert status_after.status is not None
    return {**status_after.status, **started_status(attempt, **(STEPS if spec is None else spec)),
            "history": status_after.status["history"]}


def test_an_oom_killed_attempt_is_known_from_its_pod() -> None:
    found = attempt_outcome(failed_job(), [oom_pod()])
    assert isinstance(found, Lost) and found.oom
    evicted = PodView.from_body(pod_body(1, "Failed", {"terminated": {
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2024-05-01T10:00:42Z", "finishedAt": POD_FINISHED}},
        reason="Evicted", message="The node was low on resource: memory."))
    # The node evicted the pod for its memory pressure: not the container over its own limit.
    found = attempt_outcome(failed_job(), [evicted])
    assert isinstance(found, Lost) and "evicted" in found.message and not found.oom


def test_oom_killed_runs_the_next_attempt_with_the_first_size_under_early_acknowledgement() -> None:
    plan = derive(started_status(**STEPS), 1, oom_pod())
    assert plan.create_attempt == 2 and plan.memory == "1Gi"
    st = plan.status
    assert st is not None and st["state"] == "PENDING" and st["attempts"] == 2
    # Its own budget: not a lost worker (early acknowledgement would fail one), nor any other kind.
    assert (st["oomKilled"], st["workersLost"], st["retries"], st["notStarted"]) == (1, 0, 0, 0)
    assert st["history"] == [{
        "attempt": 1, "jobName": job_name(NAME, 1), "outcome": "OOMKilled", "reason": "OOMKilled",
        "message": f"{OOM.message}; attempt 2 has 1Gi", "finishedAt": POD_FINISHED, "memory": "512Mi"}]
    assert "with 1Gi of memory" in [c for c in st["conditions"] if c["type"] == "Succeeded"][0]["message"]


def test_each_oom_killed_attempt_gives_the_next_the_next_size_and_the_last_fails_oom_killed() -> None:
    second = derive(started_status(**STEPS), 1, oom_pod())
    third = derive(running(second, 2), 2, oom_pod(2))
    assert third.create_attempt == 3 and third.memory == "2Gi"
    assert third.status is not None and third.status["oomKilled"] == 2
    assert [h["memory"] for h in third.status["history"]] == ["512Mi", "1Gi"]
    last = derive(running(third, 3), 3, oom_pod(3))
    assert last.create_attempt is None and last.memory is None
    st = last.status
    assert st is not None and st["state"] == "FAILURE" and st["attempts"] == 3 and st["oomKilled"] == 3
    assert (st["error"]["reason"], st["error"]["type"]) == ("OOMKilled", "OOMKilled")
    assert st["error"]["message"] == ("the container was OOMKilled with each memory it was given (attempt 1 had "
                                      "512Mi, attempt 2 had 1Gi and attempt 3 had 2Gi): the task needs more memory "
                                      "than the last size of memoryOnOOM")
    assert [(h["attempt"], h["outcome"], h["memory"]) for h in st["history"]] == [
        (1, "OOMKilled", "512Mi"), (2, "OOMKilled", "1Gi"), (3, "FAILURE", "2Gi")]
    assert last.delete_jobs == [job_name(NAME, 3)]


def test_the_attempt_after_an_oom_that_succeeds_has_its_memory_in_its_history() -> None:
    second = derive(started_status(**STEPS), 1, oom_pod())
    done = derive(running(second, 2), 2, ended_pod(0, SUCCESS_VERDICT, attempt=2))
    st = done.status
    assert st is not None and st["state"] == "SUCCESS" and st["attempts"] == 2
    assert [(h["outcome"], h["memory"]) for h in st["history"]] == [("OOMKilled", "512Mi"), ("SUCCESS", "1Gi")]


def test_an_attempt_that_raised_after_an_oom_has_its_memory_in_its_history() -> None:
    second = derive(started_status(**STEPS), 1, oom_pod())
    failed = derive(running(second, 2), 2, ended_pod(1, FAILURE_VERDICT, attempt=2))
    assert failed.status is not None and failed.status["error"]["reason"] == "TaskRaised"
    assert [h.get("memory") for h in failed.status["history"]] == ["512Mi", "1Gi"]


def test_a_task_without_memory_on_oom_records_no_memory() -> None:
    done = derive(started_status(), 1, ended_pod(0, SUCCESS_VERDICT), spec={})
    assert done.status is not None and "memory" not in done.status["history"][0]
    lost = derive(started_status(), 1, oom_pod(), spec={})
    assert lost.status is not None and lost.status["error"]["reason"] == "WorkerLost"
    assert "oomKilled" not in lost.status and lost.create_attempt is None


def test_oom_reruns_never_spend_max_attempts_and_later_attempts_keep_their_size() -> None:
    late = {**STEPS, "acksLate": True, "maxAttempts": 1}
    second = derive(started_status(**late), 1, oom_pod(), spec=late)
    assert second.create_attempt == 2 and second.status is not None and second.status["workersLost"] == 0
    # Attempt 2 loses its worker (SIGKILL): that one is a lost worker, on maxAttempts (1): spent.
    lost = derive(running(second, 2, late), 2, ended_pod(137, None, attempt=2), spec=late)
    assert lost.status is not None and lost.status["error"]["reason"] == "RetriesExhausted"
    assert (lost.status["workersLost"], lost.status["oomKilled"]) == (1, 1)
    assert lost.status["history"][-1]["memory"] == "1Gi"
    roomier = {**late, "maxAttempts": 2}
    second = derive(started_status(**roomier), 1, oom_pod(), spec=roomier)
    rerun = derive(running(second, 2, roomier), 2, ended_pod(137, None, attempt=2), spec=roomier)
    # The attempt after the lost worker has the size of the OOMs so far, not the task's own memory.
    assert rerun.create_attempt == 3 and rerun.memory == "1Gi"


def test_an_autoretry_after_an_oom_keeps_the_size() -> None:
    retried = '{"state":"FAILURE","error":{"type":"ConnectionError","message":"later","reason":"TaskRaised"},' \
              '"retry":{"maxRetries":3,"delay":0}}'
    second = derive(started_status(**STEPS), 1, oom_pod())
    plan = derive(running(second, 2), 2, ended_pod(1, retried, attempt=2))
    assert plan.status is not None and plan.status["retries"] == 1 and plan.status["oomKilled"] == 1
    assert plan.status["history"][-1]["memory"] == "1Gi"
    after = run(applied(task(plan.status, **STEPS), plan), [], [], runner_resources=RUNNER)
    assert after.create_attempt == 3 and after.memory == "1Gi"


def test_the_next_size_over_a_cap_lowered_since_fails_oom_killed_and_makes_no_job() -> None:
    plan = derive(started_status(**STEPS), 1, oom_pod(), max_memory_on_oom="768Mi")
    assert plan.create_attempt is None and plan.memory is None
    st = plan.status
    assert st is not None and st["state"] == "FAILURE" and st["error"]["reason"] == "OOMKilled"
    assert st["error"]["message"] == (
        "attempt 1 was OOMKilled with 512Mi; the next size of memoryOnOOM, 1Gi, is over this cluster's cap of "
        "768Mi (LIMETASK_MAX_MEMORY_ON_OOM), so no attempt is made with it: lower memoryOnOOM, or ask the "
        "platform team to raise the cap")


@pytest.mark.parametrize("kw, words", [
    ({"max_memory_on_oom": "1536Mi"}, "2Gi is over the cap of 1536Mi (LIMETASK_MAX_MEMORY_ON_OOM)"),
    ({"resource_caps": {"memory": "1Gi"}}, "2Gi is over the cap of 1Gi (LIMETASK_MAX_RUNNER_RESOURCES)"),
    ({"resource_caps": {"cpu": "2"}, "deny_unlisted_resources": True}, "which this cluster does not let a task set"),
])
def test_sizes_over_the_cap_are_refused_before_any_job(kw: dict[str, Any], words: str) -> None:
    plan = run(task(None, **STEPS), runner_resources=RUNNER, **kw)
    assert plan.create_attempt is None
    assert plan.status is not None and plan.status["error"]["reason"] == "InvalidSpec"
    assert words in plan.status["error"]["message"]


def test_the_installations_own_cap_may_be_above_the_resource_cap() -> None:
    plan = run(task(None, **STEPS), runner_resources=RUNNER, resource_caps={"memory": "1Gi"},
               max_memory_on_oom="2Gi")
    assert plan.create_attempt == 1 and plan.memory is None


@pytest.mark.parametrize("steps, words", [
    (["256Mi"], "spec.memoryOnOOM[0]='256Mi' is below the memory limit of 512Mi the task has without it"),
    (["2Gi", "1Gi"], "must be strictly increasing"),
    (["1Gi", "1024Mi"], "must be strictly increasing"),
    (["1Gi"] * 6, "at most 5"),
])
def test_sizes_the_client_would_refuse_are_an_invalid_spec(steps: list[str], words: str) -> None:
    plan = run(task(None, memoryOnOOM=steps), runner_resources=RUNNER)
    assert plan.create_attempt is None and plan.status is not None
    assert plan.status["error"]["reason"] == "InvalidSpec" and words in plan.status["error"]["message"]


def test_after_oom_alone_counts_from_the_stored_tally() -> None:
    status = {**started_status(3, **STEPS), "oomKilled": 1, "workersLost": 1}
    plan = after_oom(facts(task(status, **STEPS), [failed_job(3)]), OOM, POD_FINISHED, (None, ""), RUNNER)
    assert plan.create_attempt == 4 and plan.memory == "2Gi"
    assert plan.status is not None and (plan.status["oomKilled"], plan.status["workersLost"]) == (2, 1)
    assert plan.status["history"][-1]["memory"] == "1Gi"


def test_the_final_message_names_each_attempts_memory_even_when_two_had_the_same() -> None:
    same = {"memoryOnOOM": ["512Mi", "1Gi"]}  # the first size as much as the task's own limit
    second = derive(started_status(**same), 1, oom_pod(), spec=same)
    third = derive(running(second, 2, same), 2, oom_pod(2), spec=same)
    last = derive(running(third, 3, same), 3, oom_pod(3), spec=same)
    assert last.status is not None and last.status["error"]["message"].startswith(
        "the container was OOMKilled with each memory it was given (attempt 1 had 512Mi, attempt 2 had 512Mi and "
        "attempt 3 had 1Gi)")


def test_the_final_message_names_by_memory_alone_the_attempts_the_history_no_longer_holds() -> None:
    # Attempts 1 (512Mi) and 2 (1Gi) were OOMKilled; 3 to 12 (2Gi) raised and were retried; 13
    # (2Gi) is OOMKilled too. The history keeps the last ten: 4 to 13.
    history = [{"attempt": n, "outcome": "Retry", "reason": "TaskRaised", "memory": "2Gi"} for n in range(3, 13)]
    status = {**started_status(13, **STEPS), "oomKilled": 2, "retries": 10, "history": history}
    plan = derive(status, 13, oom_pod(13))
    assert plan.status is not None and plan.status["error"]["reason"] == "OOMKilled"
    assert [h["attempt"] for h in plan.status["history"]] == list(range(4, 14))
    assert plan.status["error"]["message"].startswith(
        "the container was OOMKilled with each memory it was given (512Mi, 1Gi and attempt 13 had 2Gi)")
