"""Delayed start and expiry (send_task's countdown, eta and expires): the checks, and what derive()
makes of them. (End to end: tests/test_e2e_tasks.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from limetask_operator.derivation import EXPIRED, SCHEDULED, derive

from lime_task.errors import InvalidTaskError
from lime_task.validation import TIME_RE, check_timing, parse_time, rfc3339
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
    p = plan(task(expires=EARLIER))
    assert p.create_attempt is None and p.status is not None
    assert p.status["state"] == "FAILURE" and p.status["error"]["reason"] == EXPIRED
    assert "never ran" in p.status["error"]["message"]


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
    ({"countdown": float("nan")}, "countdown must be a finite number of seconds, got nan"),
    ({"expires": float("inf")}, "expires must be a finite number of seconds"),
    ({"countdown": True}, "not True"),
    ({"countdown": 400 * 24 * 3600}, "over a year"),
    ({"eta": dt.datetime(2026, 11, 30, 10, 0)}, "no time zone"),
    ({"eta": "tomorrow"}, "not an RFC 3339 time"),
    ({"eta": 60}, "not a number"),
    ({"expires": [1]}, "not list"),
    ({"expires": "2030-01-01T00:00:00Z"}, "expires 2030-01-01T00:00:00Z is over a year from now"),
    ({"eta": dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)}, "eta 0001-01-01T00:00:00Z is before 1970"),
    ({"eta": "0001-01-01T00:00:00Z"}, "eta 0001-01-01T00:00:00Z is before 1970"),
    ({"eta": "1927-03-01T00:00:00Z"}, "before 1970"),
    ({"expires": dt.datetime(1969, 12, 31, tzinfo=dt.timezone.utc)}, "expires 1969-12-31T00:00:00Z is before 1970"),
    ({"countdown": 3600, "expires": 60}, "expires 2026-11-30T09:01:00Z is not after the task's start "
                                         r"\(2026-11-30T10:00:00Z\): it could only end Expired"),
    ({"countdown": 60, "expires": 60}, "is not after the task's start"),
    ({"eta": "2026-12-01T00:00:00Z", "expires": "2026-11-30T12:00:00Z"}, "is not after the task's start"),
    ({"expires": 0}, "expires 2026-11-30T09:00:00Z is not after the task's start"),
    ({"expires": "2026-11-30T08:00:00Z"}, "is not after the task's start"),
    ({"expires": "3600"}, "not an RFC 3339 time"),
])
def test_bad_timing_is_a_clear_error(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        check_timing(now=NOW_REAL, **kwargs)


def test_times_as_the_api_server_takes_them() -> None:
    assert parse_time("2026-12-01T07:30:00.123456789Z") == dt.datetime(2026, 12, 1, 7, 30, 0, 123456,
                                                                        tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-01t08:30:00+01:00") == dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-01") is None and parse_time(None) is None and parse_time("soon") is None


def test_times_are_written_with_four_digit_years() -> None:
    assert rfc3339(dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)) == "0999-01-02T03:04:05.000006Z"
    assert rfc3339(dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == \
        "2026-01-01T00:00:00.000000Z"
    assert TIME_RE.fullmatch(rfc3339(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))


@pytest.mark.parametrize("text, ok", [
    ("2026-12-07T18:00:00Z", True), ("2026-12-07T18:00:00.123456789Z", True), ("2026-12-07T18:00:00+23:59", True),
    ("2026-12-07T18:00:00-05:00", True),
    ("2026-12-07t18:00:00z", False), ("2026-12-07T18:00:00z", False), ("2026-12-07t18:00:00Z", False),
    ("2026-12-07T18:20:00+25:00", False), ("2026-12-07T18:20:00+01:60", False), ("1-01-01T00:00:00Z", False),
    ("2026-12-07 18:00:00Z", False), ("2026-12-07T18:00:00", False), ("2026-12-07T24:00:00Z", False),
    ("2026-12-07T18:00:60Z", False), ("+2026-12-07T18:00:00Z", False), ("2026-12-07", False),
])
def test_the_time_grammar_is_what_the_api_servers_rules_can_read(text: str, ok: bool) -> None:
    """Upper-case T and Z, an offset within 23:59, a four-digit year: what CEL parses (Go's RFC 3339)."""
    assert bool(TIME_RE.fullmatch(text)) is ok


def test_the_crd_refuses_at_create_what_its_rules_cannot_read() -> None:
    import yaml

    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "limetask.io_limetasks.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("eta", "expires"):
        assert spec[field]["pattern"] == f"^{TIME_RE.pattern}$"


CREATED = "2024-05-01T10:00:00Z"  # the test task's creationTimestamp


@pytest.mark.parametrize("fields, words", [
    ({"eta": "2024-05-07t18:00:00z"}, "spec.eta '2024-05-07t18:00:00z' is not an RFC 3339 time"),
    ({"eta": "2024-05-07T18:20:00+25:00"}, "spec.eta '2024-05-07T18:20:00+25:00' is not an RFC 3339 time"),
    ({"expires": "2025-01-01t00:00:00z"}, "spec.expires '2025-01-01t00:00:00z' is not an RFC 3339 time"),
    ({"eta": "9999-12-31T23:59:59Z"}, "eta 9999-12-31T23:59:59Z is over a year after the task was created"),
    ({"expires": "2025-06-01T00:00:00Z"}, "over a year after the task was created"),
    ({"eta": "0000-01-01T00:00:00Z"}, "eta 0000-01-01T00:00:00Z is before 1970"),
    ({"eta": "2024-05-02T00:00:00Z", "expires": "2024-05-01T12:00:00Z"}, "is not after the task's start"),
    ({"eta": "2024-02-30T00:00:00Z"}, "spec.eta '2024-02-30T00:00:00Z' is not an RFC 3339 time"),
    ({"eta": 5}, "spec.eta 5 is not an RFC 3339 time"),
])
def test_the_operator_makes_no_job_for_times_it_cannot_act_on(fields: dict[str, Any], words: str) -> None:
    """A kubectl-made task the schema let through (an older CRD, or none of its rules): FAILURE
    InvalidSpec, and no Job, whose result could never be stored."""
    p = plan(task(**fields))
    assert p.create_attempt is None and p.status is not None
    assert p.status["state"] == "FAILURE" and p.status["error"]["reason"] == "InvalidSpec"
    assert words in p.status["error"]["message"], p.status["error"]["message"]


def test_the_operator_takes_times_within_a_year_of_the_tasks_creation() -> None:
    """The rule counts from the task's creation, so the same task is never refused later; a
    client's clock a little ahead of the API server's does not matter."""
    ok = plan(task(eta="2025-05-01T10:30:00+00:30", expires="2025-05-01T10:30:00Z"))
    assert ok.status is not None and ok.status["state"] == "PENDING"
    assert ok.status["conditions"][0]["reason"] == SCHEDULED
    past = plan(task(eta="1999-01-01T00:00:00Z"))
    assert past.create_attempt == 1
