"""finished.py: an attempt's verdict or its deadline ends the task, or (autoretry) retries it."""

from __future__ import annotations

from limetask_operator.derivation import RETRY_SCHEDULED, TIMED_OUT
from limetask_operator.derivation.finished import after_timeout, after_verdict
from limetask_operator.derivation.outcome import TimedOut

from lime_task import verdict as verdicts
from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import FAILURE_VERDICT, SUCCESS_VERDICT, pending_status, started_status, task

ENDED = "2024-05-01T10:04:59Z"


def verdict(text: str) -> verdicts.Verdict:
    found = verdicts.parse(text)
    assert found is not None
    return found


def test_success_ends_the_task_with_its_result_and_a_history_entry() -> None:
    plan = after_verdict(facts(task(started_status())), verdict(SUCCESS_VERDICT), ENDED)
    st = plan.status
    assert st is not None and st["state"] == "SUCCESS" and st["result"] == {"updated": 50}
    assert st["history"][-1] == {"attempt": 1, "jobName": "sync-deals-7c1e-1", "outcome": "SUCCESS",
                                 "reason": "Succeeded", "message": "", "finishedAt": ENDED}


def test_a_task_that_raised_fails_at_once() -> None:
    plan = after_verdict(facts(task(started_status())), verdict(FAILURE_VERDICT), ENDED)
    st = plan.status
    assert st is not None and st["error"] == {"type": "ValueError", "message": "the CRM said no",
                                              "reason": "TaskRaised"}


def test_a_verdict_seen_before_the_start_still_records_a_start() -> None:
    plan = after_verdict(facts(task(pending_status())), verdict(SUCCESS_VERDICT), ENDED)
    assert plan.status is not None and plan.status["startedAt"] == "2024-05-01T10:05:00Z"


def test_an_exception_autoretry_for_names_is_retried() -> None:
    raised = verdict('{"state":"FAILURE","error":{"type":"IOError","message":"down","reason":"TaskRaised"},'
                     '"retry":{"maxRetries":1,"delay":5}}')
    plan = after_verdict(facts(task(started_status())), raised, ENDED)
    assert plan.status is not None and condition_of(plan.status)["reason"] == RETRY_SCHEDULED


def test_a_timeout_fails_timed_out_and_names_the_limit() -> None:
    plan = after_timeout(facts(task(started_status(timeoutSeconds=60), timeoutSeconds=60)), TimedOut("deadline"))
    st = plan.status
    assert st is not None and st["error"]["reason"] == TIMED_OUT
    assert st["error"]["message"] == "the task did not finish within its timeout of 60 seconds"
