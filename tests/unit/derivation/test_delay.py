"""delay.py: a delayed start (eta) waits with no Job and no pod, and looks again at the eta or the
expiry, whichever comes first."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation import SCHEDULED
from limetask_operator.derivation.delay import wait_for_eta

from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import NOW, task

ETA = NOW + dt.timedelta(minutes=10)


def test_before_its_eta_a_task_is_pending_scheduled_and_no_job_is_made() -> None:
    f = facts(task(eta="2024-05-01T10:15:00Z"))
    plan = wait_for_eta(f, ETA, None)
    assert plan is not None and plan.create_attempt is None
    assert plan.status is not None and plan.status["state"] == "PENDING"
    cond = condition_of(plan.status)
    assert (cond["reason"], cond["message"]) == (SCHEDULED, "waiting until 2024-05-01T10:15:00Z to start (eta)")
    assert plan.recheck_after == 600.05


def test_it_looks_again_at_the_expiry_when_that_comes_first() -> None:
    f = facts(task())
    plan = wait_for_eta(f, ETA, NOW + dt.timedelta(seconds=30))
    assert plan is not None and plan.recheck_after == 30.05


def test_the_same_wait_is_not_written_again() -> None:
    f = facts(task())
    first = wait_for_eta(f, ETA, None)
    assert first is not None and first.status is not None
    again = wait_for_eta(facts(task(first.status)), ETA, None)
    assert again is not None and again.status is None and again.recheck_after == 600.05


def test_at_its_eta_the_rule_gives_way() -> None:
    assert wait_for_eta(facts(task()), NOW, None) is None
    assert wait_for_eta(facts(task()), None, None) is None
