"""retry.py: an exception autoretry_for names runs the task again after the policy's delay, up to
max_retries; the delay is the same each time the plan is derived."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation import RETRIES_EXHAUSTED, RETRY_SCHEDULED
from limetask_operator.derivation.retry import retry, retry_delay, retry_not_due, retry_recorded, will_retry

from lime_task import verdict as verdicts
from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import NOW, started_status, task

RAISED = verdicts.parse('{"state":"FAILURE","error":{"type":"IOError","message":"down","reason":"TaskRaised"},'
                        '"retry":{"maxRetries":2,"delay":30,"backoff":0}}')
ENTRY = {"attempt": 1, "jobName": "j-1", "outcome": "FAILURE", "reason": "TaskRaised", "message": "down",
         "finishedAt": "2024-05-01T10:04:59Z"}


def test_the_delay_is_celerys_backoff_with_a_jitter_drawn_from_the_seed() -> None:
    assert retry_delay({"delay": 30}, 0, "s") == 30.0  # no backoff: the fixed delay
    assert retry_delay({"backoff": 2, "jitter": False}, 3, "s") == 16.0
    assert retry_delay({"backoff": 2, "backoffMax": 10, "jitter": False}, 5, "s") == 10.0
    jittered = retry_delay({"backoff": 2}, 3, "uid.1")
    assert jittered == retry_delay({"backoff": 2}, 3, "uid.1") and 0 <= jittered <= 16.0


def test_a_retry_waits_pending_with_no_job_and_counts_against_max_retries() -> None:
    assert RAISED is not None
    plan = retry(facts(task(started_status())), RAISED, ENTRY, [], "2024-05-01T10:04:59Z")
    assert plan.create_attempt is None and plan.status is not None
    st = plan.status
    assert st["state"] == "PENDING" and st["retries"] == 1 and st["retryAt"] == "2024-05-01T10:05:29Z"
    assert st["history"][-1]["outcome"] == "Retry"
    assert condition_of(st)["reason"] == RETRY_SCHEDULED
    assert plan.recheck_after == 29.05


def test_after_max_retries_the_task_fails_retries_exhausted() -> None:
    assert RAISED is not None
    spent = facts(task({**started_status(), "retries": 2}))
    plan = retry(spent, RAISED, ENTRY, [], "2024-05-01T10:04:59Z")
    assert plan.status is not None and plan.status["state"] == "FAILURE"
    assert plan.status["error"]["reason"] == RETRIES_EXHAUSTED and plan.status["error"]["type"] == "IOError"


def test_a_recorded_retry_waits_for_its_time() -> None:
    st = {"retryAt": "2024-05-01T10:06:00Z", "attempts": 1}
    assert retry_recorded(st, 1) and not retry_recorded(st, 2)
    waiting = retry_not_due(st, NOW)
    assert waiting is not None and waiting.recheck_after == 60.05 and waiting.status is None
    assert retry_not_due(st, NOW + dt.timedelta(minutes=2)) is None


def test_a_verdict_to_be_retried_is_not_the_last_word() -> None:
    assert RAISED is not None
    assert will_retry(RAISED, {}, 1)
    assert not will_retry(RAISED, {"retries": 2}, 1)
