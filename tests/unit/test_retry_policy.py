"""Retry policies (autoretry_for, max_retries, retry_backoff, retry_jitter) and soft time limits:
the options, the runner's verdict, and what derive() makes of it. (End to end: test_e2e_tasks.py.)"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from limetask_operator.budgets import RETRY
from limetask_operator.derivation import RETRY_SCHEDULED, derive, retry_delay

from lime_task import SoftTimeLimitExceeded, task
from lime_task import verdict as verdicts
from lime_task.eager import execute
from lime_task.errors import InvalidTaskError
from lime_task.registry import TaskOptions
from tests.unit.test_status_derivation import (
    CEILING,
    NOW,
    complete_job,
    ended_pod,
    failed_job,
    started_status,
)
from tests.unit.test_status_derivation import task as task_view

POLICY = {"maxRetries": 2, "backoff": 1.0, "backoffMax": 600.0, "delay": 180.0, "jitter": False}


@task(name="tests.retry.flaky", autoretry_for=(ConnectionError,), max_retries=2, retry_backoff=True)
def flaky(app: Any, kind: str) -> str:
    if kind == "connection":
        raise ConnectionResetError("the CRM hung up")  # a subclass counts
    raise ValueError("bad data")


@task(name="tests.retry.soft", soft_time_limit=0.2)
def soft(app: Any, catch: bool) -> str:
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        if catch:
            return "cleaned up"
        raise
    return "slept"


def test_an_exception_autoretry_for_names_carries_the_policy_in_the_verdict() -> None:
    v = execute("tests.retry.flaky", "app", ["connection"], import_modules=False)
    assert v.state == "FAILURE" and v.error["type"] == "ConnectionResetError"
    assert v.retry == {"maxRetries": 2, "backoff": 1.0, "backoffMax": 600.0, "delay": 180.0, "jitter": True}
    assert verdicts.parse(v.to_json()) == v  # through the termination message
    other = execute("tests.retry.flaky", "app", ["data"], import_modules=False)
    assert other.state == "FAILURE" and other.retry is None and "retry" not in other.to_json()


def test_a_verdict_cannot_ask_for_more_than_the_bounds() -> None:
    text = json.dumps({"state": "FAILURE", "error": {"type": "E", "message": "m"},
                       "retry": {"maxRetries": 10**9, "backoff": -5, "delay": "soon", "jitter": 1}})
    parsed = verdicts.parse(text)
    assert parsed is not None and parsed.retry == {"maxRetries": 3, "backoff": 0.0, "backoffMax": 600.0,
                                                   "delay": 180.0, "jitter": True}


def test_the_soft_time_limit_can_be_caught_before_the_hard_one() -> None:
    started = time.monotonic()
    caught = execute("tests.retry.soft", "app", [True], import_modules=False)
    assert caught.state == "SUCCESS" and caught.result == "cleaned up" and time.monotonic() - started < 2
    raised = execute("tests.retry.soft", "app", [False], import_modules=False)
    assert raised.state == "FAILURE" and raised.error["type"] == "SoftTimeLimitExceeded"
    assert "soft time limit of 0.2 seconds" in raised.error["message"]


@task(name="tests.retry.soft_late", soft_time_limit=100.5, timeout=200)
def soft_late(app: Any) -> str:
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"


def test_the_soft_time_limit_counts_from_the_attempts_start_not_from_the_call() -> None:
    """The hard timeout counts from the Job's start, which includes the image pull and imports:
    so does the soft limit, or the hard one could come first."""
    started_at = time.time() - 100  # the attempt started 100 s before the task is called
    caught = execute("tests.retry.soft_late", "app", [], import_modules=False, started_at=started_at)
    assert caught.state == "SUCCESS" and caught.result == "cleaned up"


def test_a_soft_time_limit_that_passed_before_the_call_never_calls_the_task() -> None:
    ran: list[str] = []

    def factory(name: str) -> str:
        ran.append(name)
        return name

    late = execute("tests.retry.soft", "app", [True], import_modules=False, started_at=time.time() - 30,
                   app_factory=factory)
    assert late.state == "FAILURE" and late.error["type"] == "SoftTimeLimitExceeded"
    assert "before the task was called" in late.error["message"] and "30 seconds" in late.error["message"]
    assert ran == ["app"]  # built, but the task itself was never called (it would have caught it)


@pytest.mark.parametrize("options, words", [
    ({"autoretry_for": (ConnectionError, "TimeoutError")}, "tuple of exception classes"),
    ({"autoretry_for": ConnectionError}, "tuple of exception classes"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 51}, "max_retries"),
    ({"retry_backoff": -2}, "retry_backoff"),
    ({"retry_backoff": "yes"}, "retry_backoff"),
    ({"retry_jitter": 1}, "retry_jitter"),
    ({"soft_time_limit": 0}, "soft_time_limit"),
    ({"soft_time_limit": 60, "timeout": 30}, "below timeout"),
    ({"default_retry_delay": -1}, "default_retry_delay"),
])
def test_bad_retry_options_are_clear_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        TaskOptions(**options)


def test_the_delay_is_celerys_backoff_with_a_stable_jitter() -> None:
    assert [retry_delay(POLICY, n, "s") for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay({**POLICY, "backoffMax": 5.0}, 10, "s") == 5.0
    assert retry_delay({**POLICY, "backoff": 0.0, "delay": 30.0}, 3, "s") == 30.0
    jittered = [retry_delay({**POLICY, "jitter": True}, 3, f"uid.{i}") for i in range(50)]
    assert all(0 <= d <= 8 for d in jittered) and len(set(jittered)) > 40
    assert retry_delay({**POLICY, "jitter": True}, 3, "uid.1") == jittered[1]  # derived again: the same


def retry_verdict(policy: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"state": "FAILURE", "error": {"type": "ConnectionError", "message": "hung up",
                                                          "reason": "TaskRaised"}}
    body["retry"] = policy or POLICY
    return json.dumps(body)


def test_a_retryable_failure_waits_then_runs_a_new_attempt() -> None:
    pods = {1: [ended_pod(1, retry_verdict())]}
    first = derive(task_view(started_status(1)), {1: failed_job(1)}, pods, NOW, CEILING)
    st = first.status
    assert st is not None and st["state"] == "PENDING" and st["retries"] == 1 and first.create_attempt is None
    assert st["conditions"][0]["reason"] == RETRY_SCHEDULED and "retry 1 of 2" in st["conditions"][0]["message"]
    assert st["history"][-1]["outcome"] == RETRY and st["history"][-1]["attempt"] == 1
    assert st["retryAt"] == "2024-05-01T10:05:00Z"  # the pod's end (10:04:59) + 1 s
    assert first.recheck_after is not None and first.recheck_after < 1
    # The delay has passed: attempt 2, with the retry in its history. Its Job may be gone by then.
    second = derive(task_view(st), {}, {}, NOW, CEILING)
    assert second.create_attempt == 2 and second.status is not None
    assert "retryAt" not in second.status and second.status["history"][-1]["outcome"] == RETRY
    import datetime as dt
    early = derive(task_view(st), {1: failed_job(1)}, pods, NOW - dt.timedelta(seconds=5), CEILING)
    assert early.create_attempt is None and early.status is None and early.recheck_after is not None


def test_retries_end_in_retries_exhausted_with_every_try_in_the_history() -> None:
    status = {**started_status(3), "retries": 2,
              "history": [{"attempt": 1, "outcome": RETRY}, {"attempt": 2, "outcome": RETRY}]}
    p = derive(task_view(status), {3: failed_job(3)}, {3: [ended_pod(1, retry_verdict(), attempt=3)]}, NOW, CEILING)
    assert p.status is not None and p.status["state"] == "FAILURE"
    assert p.status["error"]["reason"] == "RetriesExhausted" and p.status["error"]["type"] == "ConnectionError"
    assert [h["attempt"] for h in p.status["history"]] == [1, 2, 3]
    assert "in all 3 attempts" in p.status["error"]["message"]


def test_any_other_exception_is_never_re_run() -> None:
    failure = '{"state":"FAILURE","error":{"type":"ValueError","message":"bad","reason":"TaskRaised"}}'
    p = derive(task_view(started_status(1)), {1: failed_job(1)}, {1: [ended_pod(1, failure)]}, NOW, CEILING)
    assert p.status is not None and p.status["state"] == "FAILURE" and p.create_attempt is None
    assert p.status["error"]["reason"] == "TaskRaised"


def test_a_cancel_wins_over_a_retry_still_to_come() -> None:
    from lime_task.resource import ANNOTATION_CANCEL

    pods = {1: [ended_pod(1, retry_verdict())]}
    waiting = derive(task_view(started_status(1)), {1: failed_job(1)}, pods, NOW, CEILING).status
    assert waiting is not None
    p = derive(task_view(waiting, annotations={ANNOTATION_CANCEL: "true"}), {1: complete_job(1)}, pods, NOW, CEILING)
    assert p.status is not None and p.status["error"]["reason"] == "Cancelled"
