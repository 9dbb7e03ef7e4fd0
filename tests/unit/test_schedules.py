"""Schedules: cron ticks in a time zone (daylight saving included), and what the scheduler decides
for a LimeTaskSchedule and its runs at a given moment (an injected clock). End to end:
tests/test_e2e_schedules.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from limetask_operator.scheduler import Run, decide, run_body, run_name

from lime_task import crontab
from lime_task.errors import InvalidTaskError

UTC = dt.timezone.utc
STOCKHOLM = crontab.zone("Europe/Stockholm")
CREATED = "2026-11-30T06:00:00Z"


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def schedule(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nightly", "namespace": "ns", "uid": "s-uid", "generation": 1,
                         "creationTimestamp": CREATED, "resourceVersion": "1"},
            "spec": {"task": "acme.tasks.sync", "app": "app-a", "schedule": "*/10 * * * *", "args": [1], **spec},
            "status": status or {}}


def run(minute: int, state: str = "SUCCESS", completed: str = "") -> Run:
    tick = at(2026, 11, 30, 7, minute)
    return Run(run_name("nightly", tick), f"uid-{minute}", int(tick.timestamp()), state, completed)


# -- ticks ---------------------------------------------------------------------------------------

def test_ticks_are_read_in_the_schedules_time_zone() -> None:
    now = at(2026, 11, 30, 7, 0)  # 08:00 in Stockholm
    assert crontab.previous_tick("30 7 * * *", STOCKHOLM, now) == at(2026, 11, 30, 6, 30)
    assert crontab.next_tick("30 7 * * *", STOCKHOLM, now) == at(2026, 12, 1, 6, 30)
    assert crontab.previous_tick("30 7 * * *", UTC, now) == at(2026, 11, 29, 7, 30)
    assert crontab.previous_tick("30 7 * * 1", STOCKHOLM, now) == at(2026, 11, 30, 6, 30)  # a Monday


def test_spring_forward_runs_a_skipped_time_once_right_after_the_gap() -> None:
    # 2026-03-29 in Stockholm: 02:00 becomes 03:00; 02:30 does not exist that night.
    first = crontab.next_tick("30 2 * * *", STOCKHOLM, at(2026, 3, 28, 23, 0))
    assert first == at(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert crontab.next_tick("30 2 * * *", STOCKHOLM, first) == at(2026, 3, 30, 0, 30)  # 02:30 CEST the next day
    # An hourly schedule just has one tick less that night.
    ticks, t = [], at(2026, 3, 28, 23, 0)
    for _ in range(4):
        t = crontab.next_tick("0 * * * *", STOCKHOLM, t)
        ticks.append(t.astimezone(STOCKHOLM).strftime("%H:%M%z"))
    assert ticks == ["01:00+0100", "03:00+0200", "04:00+0200", "05:00+0200"]


def test_fall_back_runs_a_daily_time_once_but_hourly_ones_in_both_passes() -> None:
    # 2026-10-25 in Stockholm: 03:00 becomes 02:00 again; 02:30 happens twice.
    first = crontab.next_tick("30 2 * * *", STOCKHOLM, at(2026, 10, 24, 23, 0))
    assert first == at(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    assert crontab.next_tick("30 2 * * *", STOCKHOLM, first) == at(2026, 10, 26, 1, 30)  # not the second 02:30
    ticks, t = [], at(2026, 10, 24, 23, 0)
    for _ in range(5):
        t = crontab.next_tick("30 * * * *", STOCKHOLM, t)
        ticks.append(t.astimezone(STOCKHOLM).strftime("%H:%M%z"))
    assert ticks == ["01:30+0200", "02:30+0200", "02:30+0100", "03:30+0100", "04:30+0100"]


def test_expressions_and_zones_are_checked() -> None:
    assert crontab.check("  30  7 * * 1 ") == "30 7 * * 1"
    assert crontab.check("@daily") == "@daily"
    assert crontab.check("@every 3s", seconds=True) == "@every 3s"
    for bad in ("61 * * * *", "* * *", "", "@every 3s", "@every 0s"):
        with pytest.raises(InvalidTaskError):
            crontab.check(bad, seconds=bad == "@every 0s")
    with pytest.raises(InvalidTaskError, match="IANA"):
        crontab.zone("Mars/Olympus_Mons")


# -- decisions -----------------------------------------------------------------------------------

def test_a_tick_makes_one_run_named_after_it() -> None:
    d = decide(schedule(), [], at(2026, 11, 30, 7, 0, 5))
    assert d.create == at(2026, 11, 30, 7, 0) and d.status is not None
    assert d.status["lastScheduleTime"] == "2026-11-30T07:00:00Z"
    assert d.status["active"] == [{"name": "nightly-1796022000"}] and d.status["activeCount"] == 1
    assert d.wake_at == at(2026, 11, 30, 7, 10)
    body = run_body(schedule(), d.create)
    assert body["metadata"]["name"] == "nightly-1796022000"
    assert body["metadata"]["labels"] == {"limetask.io/app": "app-a", "limetask.io/schedule": "nightly",
                                          "limetask.io/tick": "1796022000"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "s-uid"
    assert body["spec"] == {"task": "acme.tasks.sync", "app": "app-a", "args": [1]}
    # The same moment again (a restart, a second replica): its run exists, nothing more is made.
    again = decide(schedule(d.status), [run(0, "PENDING")], at(2026, 11, 30, 7, 0, 9))
    assert again.create is None


def test_after_downtime_only_the_latest_missed_tick_runs() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last), [run(0)], at(2026, 11, 30, 7, 35))  # 07:10, 07:20, 07:30 were missed
    assert d.create == at(2026, 11, 30, 7, 30)
    d2 = decide(schedule(d.status), [run(0), run(30, "PENDING")], at(2026, 11, 30, 7, 36))
    assert d2.create is None  # never a storm


def test_a_tick_past_its_starting_deadline_is_skipped() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last, startingDeadlineSeconds=60), [run(0)], at(2026, 11, 30, 7, 35))
    assert d.create is None and d.status is not None and d.status["skipped"] == 1
    assert "past the starting deadline of 60s" in d.status["lastSkipReason"]
    assert decide(schedule(last, startingDeadlineSeconds=600), [run(0)], at(2026, 11, 30, 7, 35)).create is not None


def test_forbid_makes_a_tick_wait_while_a_run_is_active() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last, concurrencyPolicy="Forbid"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
    assert d.create is None and d.status is not None and d.status["skipped"] == 1
    assert "still active" in d.status["lastSkipReason"] and d.status["activeCount"] == 1
    # Counted once per tick, however often it is looked at.
    again = decide(schedule(d.status, concurrencyPolicy="Forbid"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 5))
    assert again.status is not None and again.status["skipped"] == 1
    # The active run ends within the tick's starting deadline: it runs then, late.
    late = decide(schedule(d.status, concurrencyPolicy="Forbid", startingDeadlineSeconds=120),
                  [run(0, "SUCCESS")], at(2026, 11, 30, 7, 11))
    assert late.create == at(2026, 11, 30, 7, 10)


def test_replace_cancels_the_active_run_for_the_new_one() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last, concurrencyPolicy="Replace"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
    assert d.cancel == ["nightly-1796022000"] and d.create == at(2026, 11, 30, 7, 10)
    assert d.status is not None and d.status["active"] == [{"name": "nightly-1796022600"}]


def test_allow_lets_runs_overlap() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
    assert d.create == at(2026, 11, 30, 7, 10) and d.cancel is None and d.status is not None
    assert d.status["activeCount"] == 2


def test_suspended_and_invalid_schedules_make_no_runs() -> None:
    assert decide(schedule(suspend=True), [], at(2026, 11, 30, 7, 0, 5)).create is None
    bad = decide(schedule(schedule="61 * * * *"), [], at(2026, 11, 30, 7, 0, 5))
    assert bad.create is None and bad.status is not None and "invalid cron expression" in bad.status["problem"]
    zone = decide(schedule(timeZone="Nowhere/Town"), [], at(2026, 11, 30, 7, 0, 5))
    assert zone.status is not None and "unknown time zone" in zone.status["problem"]
    seconds = decide(schedule(schedule="@every 3s"), [], at(2026, 11, 30, 7, 0, 5))
    assert seconds.create is None and seconds.status is not None and "for tests only" in seconds.status["problem"]
    assert decide(schedule(schedule="@every 3s"), [], at(2026, 11, 30, 7, 0, 5), seconds_ok=True).create is not None


def test_ticks_before_the_schedule_existed_never_run() -> None:
    assert decide(schedule(), [], at(2026, 11, 30, 6, 5)).create is None  # made at 06:00; the 06:00 tick ran before


def test_history_beyond_the_limits_is_deleted_oldest_first() -> None:
    runs = [run(m, "SUCCESS", f"2026-11-30T07:{m:02}:30Z") for m in (0, 10, 20, 30, 40)] + \
           [run(m, "FAILURE") for m in (5, 15)]
    d = decide(schedule({"lastScheduleTime": "2026-11-30T07:40:00Z"}), runs, at(2026, 11, 30, 7, 45))
    assert sorted(r.name for r in d.delete or []) == sorted(
        [run(0).name, run(10).name, run(5).name])  # 3 successes and 1 failure are kept
    assert d.status is not None and d.status["lastSuccessfulTime"] == "2026-11-30T07:40:30Z"


def test_an_operator_without_the_schedule_crd_runs_tasks_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from limetask_operator.handlers import schedules_installed

    class Api:
        def __init__(self, resources: list[str]) -> None:
            self.resources = resources

        async def get(self, path: str) -> dict[str, Any]:
            assert path == "/apis/limetask.io/v1alpha1"
            return {"resources": [{"name": r} for r in self.resources]}

    assert asyncio.run(schedules_installed(Api(["limetasks", "limetaskschedules"]))) is True  # type: ignore[arg-type]
    assert asyncio.run(schedules_installed(Api(["limetasks"]))) is False  # type: ignore[arg-type]
    from limetask_operator.handlers import queues_installed

    assert asyncio.run(queues_installed(Api(["limetasks", "limetaskqueues"]))) is True  # type: ignore[arg-type]
    assert asyncio.run(queues_installed(Api(["limetasks", "limetaskschedules"]))) is False  # type: ignore[arg-type]
    assert "schedules are off" in caplog.text
