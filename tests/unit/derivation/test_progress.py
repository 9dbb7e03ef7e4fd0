"""progress.py: an attempt not ended yet is STARTED once its worker runs, PENDING (and why)
before; a Job with no pod past the grace is asked about, and a permanent refusal fails."""

from __future__ import annotations

import datetime as dt

from limetask_operator.derivation import INVALID_SPEC, POD_REFUSED, QUOTA_EXCEEDED
from limetask_operator.derivation.outcome import AttemptRunning
from limetask_operator.derivation.progress import ADMISSION_GRACE_SECONDS, admission_is_permanent, in_progress

from tests.unit.derivation.facts import condition_of, facts
from tests.unit.test_status_derivation import job, pending_status, running_pod, started_status, task

JOB_MADE = dt.datetime(2024, 5, 1, 10, 0, 30, tzinfo=dt.UTC)
IN_GRACE = JOB_MADE + dt.timedelta(seconds=4)


def test_a_running_worker_makes_the_task_started() -> None:
    plan = in_progress(facts(task(pending_status()), [job()], [running_pod()]), AttemptRunning("2024-05-01T10:00:42Z"),
                       job(), [running_pod()], None, None, "")
    assert plan.status is not None and plan.status["state"] == "STARTED"
    assert plan.status["startedAt"] == "2024-05-01T10:00:42Z"
    assert condition_of(plan.status)["message"] == "attempt 1 is running"


def test_nothing_is_written_when_nothing_changed() -> None:
    f = facts(task(started_status()), [job()], [running_pod()])
    assert in_progress(f, AttemptRunning("2024-05-01T10:00:42Z"), job(), [running_pod()], None, None, "").status \
        is None


def test_a_started_attempt_never_goes_back_to_pending() -> None:
    plan = in_progress(facts(task(started_status()), [job()]), AttemptRunning(None), job(), [], None, None, "",
                       stopping=["x"])
    assert plan.status is None and plan.stop_jobs == ["x"]


def test_a_job_without_a_pod_is_looked_at_again_after_the_grace() -> None:
    plan = in_progress(facts(task(pending_status()), [job()], now=IN_GRACE), AttemptRunning(None), job(), [],
                       None, None, "")
    assert plan.check_admission is None
    assert plan.recheck_after == ADMISSION_GRACE_SECONDS - 4 + 0.5


def test_past_the_grace_the_job_controllers_events_are_read() -> None:
    f = facts(task(pending_status()), [job()])
    asked = in_progress(f, AttemptRunning(None), job(), [], None, None, "")
    assert asked.check_admission == 1 and asked.status is None
    none = in_progress(f, AttemptRunning(None), job(), [], "", None, "")  # read: no complaint
    assert none.check_admission is None and none.recheck_after == 10.0


def test_a_quota_waits_and_a_permanent_refusal_fails_invalid_spec() -> None:
    f = facts(task(pending_status()), [job()])
    quota = in_progress(f, AttemptRunning(None), job(), [], 'pods "x" is forbidden: exceeded quota: q', None, "")
    assert quota.status is not None and condition_of(quota.status)["reason"] == QUOTA_EXCEEDED
    limit = 'pods "x" is forbidden: maximum memory usage per Container is 1Gi'
    assert admission_is_permanent(limit) and not admission_is_permanent("serviceaccount not found")
    failed = in_progress(f, AttemptRunning(None), job(), [], limit, None, "")
    assert failed.status is not None and failed.status["error"]["reason"] == INVALID_SPEC
    webhook = in_progress(f, AttemptRunning(None), job(), [], "admission webhook timed out", None, "")
    assert webhook.status is not None and condition_of(webhook.status)["reason"] == POD_REFUSED


def test_a_pending_attempt_looks_again_when_its_start_timeout_or_expiry_is_due() -> None:
    f = facts(task(pending_status(), expires="2024-05-01T10:05:20Z"), [job()])
    plan = in_progress(f, AttemptRunning(None, ("ImagePullBackOff", "back-off")), job(), [running_pod()], None,
                       600.0, "")
    assert plan.status is not None and condition_of(plan.status)["reason"] == "ImagePullBackOff"
    assert plan.recheck_after == 20.05  # the expiry, before the start timeout (at 10:10:30)
