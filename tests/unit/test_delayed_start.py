"""Delayed start and expiry (send_task's countdown, eta and expires): the checks, and what derive()
makes of them. (End to end: tests/test_e2e_tasks.py.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from limetask_operator.derivation import EXPIRED, SCHEDULED, derive

from lime_task.errors import InvalidTaskError
from lime_task.validation import check_timing, parse_time
from tests.unit.test_status_derivation import CEILING, NOW, job, pending_pod, running_pod, task

LATER = "2024-05-01T10:06:00.000000Z"  # NOW + 60 s
EARLIER = "2024-05-01T10:04:00.000000Z"  # NOW - 60 s


def plan(t: Any, jobs: dict[int, Any] | None = None, pods: dict[int, Any] | None = None) -> Any:
    return derive(t, jobs or {}, pods or {}, NOW, CEILING)


def test_a_task_before_its_eta_waits_without_a_job() -> None:
    p = plan(task(eta=LATER))
    assert p.create_attempt is None and p.status is not None
    assert p.status["state"] == "PENDING" and p.status["conditions"][0]["reason"] == SCHEDULED
    assert 59 < (p.recheck_after or 0) < 61  # a reconcile is due at the eta
    again = plan(task(status=p.status, eta=LATER))
    assert again.status is None and again.create_attempt is None  # nothing written twice


def test_a_task_at_its_eta_starts() -> None:
    p = plan(task(eta=EARLIER))
    assert p.create_attempt == 1


def test_a_task_expired_before_it_started_fails_and_never_runs() -> None:
    p = plan(task(eta=LATER, expires=EARLIER))
    assert p.create_attempt is None and p.status is not None
    assert p.status["state"] == "FAILURE" and p.status["error"]["reason"] == EXPIRED
    assert "never ran" in p.status["error"]["message"]
    # Waiting for its eta, a reconcile is due at the expiry when that comes first.
    soon = plan(task(eta="2024-05-01T10:10:00Z", expires=LATER))
    assert soon.status is not None and soon.status["state"] == "PENDING" and 59 < (soon.recheck_after or 0) < 61


def test_expiry_stops_a_worker_that_has_not_started_but_never_one_that_runs() -> None:
    pending = {"state": "PENDING", "attempts": 1, "jobName": "x"}
    p = plan(task(status=pending, expires=EARLIER), {1: job(1)}, {1: [pending_pod(1)]})
    assert p.status is not None and p.status["error"]["reason"] == EXPIRED and p.stop_jobs
    waiting = plan(task(status=pending, expires=LATER), {1: job(1)}, {1: [pending_pod(1)]})
    assert waiting.status is None or waiting.status["state"] == "PENDING"
    assert waiting.recheck_after is not None and waiting.recheck_after <= 61
    running = plan(task(status=pending, expires=EARLIER), {1: job(1)}, {1: [running_pod(1)]})
    assert running.status is not None and running.status["state"] == "STARTED"


NOW_REAL = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.timezone.utc)


def test_countdown_eta_and_expires_become_times_in_utc() -> None:
    assert check_timing(countdown=90, expires=600, now=NOW_REAL) == {
        "eta": "2026-11-30T09:01:30.000000Z", "expires": "2026-11-30T09:10:00.000000Z"}
    stockholm = dt.timezone(dt.timedelta(hours=1))
    assert check_timing(eta=dt.datetime(2026, 11, 30, 11, 0, tzinfo=stockholm), now=NOW_REAL) == {
        "eta": "2026-11-30T10:00:00.000000Z"}
    assert check_timing(eta="2026-11-30T10:00:00+01:00", expires="2026-11-30T10:30:00Z", now=NOW_REAL) == {
        "eta": "2026-11-30T09:00:00.000000Z", "expires": "2026-11-30T10:30:00.000000Z"}
    assert check_timing(now=NOW_REAL) == {}


@pytest.mark.parametrize("kwargs, words", [
    ({"countdown": 5, "eta": "2026-11-30T10:00:00Z"}, "not both"),
    ({"countdown": -1}, "at least 0"),
    ({"countdown": float("nan")}, "at least 0"),
    ({"countdown": True}, "not True"),
    ({"countdown": 400 * 24 * 3600}, "over a year"),
    ({"eta": dt.datetime(2026, 11, 30, 10, 0)}, "no time zone"),
    ({"eta": "tomorrow"}, "not an RFC 3339 time"),
    ({"eta": 60}, "not a number"),
    ({"expires": [1]}, "not list"),
    ({"expires": "2030-01-01T00:00:00Z"}, "over a year ahead"),
])
def test_bad_timing_is_a_clear_error(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        check_timing(now=NOW_REAL, **kwargs)


def test_times_as_the_api_server_takes_them() -> None:
    assert parse_time("2026-12-01T07:30:00.123456789Z") == dt.datetime(2026, 12, 1, 7, 30, 0, 123456,
                                                                        tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-01t08:30:00+01:00") == dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-01") is None and parse_time(None) is None and parse_time("soon") is None
