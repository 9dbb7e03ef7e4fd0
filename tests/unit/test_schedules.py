"""Schedules: cron ticks in a time zone (daylight saving included), and what the scheduler decides
for a LimeTaskSchedule and its runs at a given moment (an injected clock). End to end:
tests/test_e2e_schedules.py."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest
from limetask_operator.scheduler import Found, Run, decide, run_body, run_name

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


def run(minute: int, state: str = "SUCCESS", completed: str = "", *, settled: bool = True, archived: bool = False,
        started: bool | None = None, **mark: Any) -> Run:
    """A run of the schedule above for the tick at 07:`minute` (`mark`: what it says it belongs to)."""
    tick = at(2026, 11, 30, 7, minute)
    return Run(**{"name": run_name("nightly", tick), "uid": f"uid-{minute}", "tick": int(tick.timestamp()),
                  "state": state, "completed": completed, "schedule_uid": "s-uid", "app": "app-a",
                  "task": "acme.tasks.sync", "started": state != "PENDING" if started is None else started,
                  "settled": settled and state in ("SUCCESS", "FAILURE"), "archived": archived, **mark})


def nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def tick_of(minute: int) -> int:
    return int(at(2026, 11, 30, 7, minute).timestamp())


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
    body = run_body(schedule(), d.create, d.expires)
    assert body["metadata"]["name"] == "nightly-1796022000"
    assert body["metadata"]["labels"] == {"limetask.io/app": "app-a", "limetask.io/schedule": "nightly",
                                          "limetask.io/tick": "1796022000", "limetask.io/schedule-uid": "s-uid"}
    # Not owned by the schedule: deleting the schedule never deletes a run (it ends as any task does).
    assert "ownerReferences" not in body["metadata"]
    # Allow: a run that has not started by the next tick expires (runs never pile up behind a queue).
    assert body["spec"] == {"task": "acme.tasks.sync", "app": "app-a", "args": [1],
                            "expires": "2026-11-30T07:10:00.000000Z"}
    # The same moment again (a restart, a second replica): its run exists, nothing more is made.
    again = decide(schedule(d.status), [run(0, "PENDING")], at(2026, 11, 30, 7, 0, 9))
    assert again.create is None


def test_after_downtime_only_the_latest_missed_tick_runs() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last), [run(0)], at(2026, 11, 30, 7, 35))  # 07:10, 07:20, 07:30 were missed
    assert d.create == at(2026, 11, 30, 7, 30)
    d2 = decide(schedule(d.status), [run(0), run(30, "PENDING")], at(2026, 11, 30, 7, 36))
    assert d2.create is None  # never a storm


def test_ticks_passed_before_a_run_could_be_made_are_counted_skipped_once_and_said() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last), [run(0)], at(2026, 11, 30, 7, 35))
    assert d.create == at(2026, 11, 30, 7, 30) and d.status is not None
    assert d.status["skipped"] == 2 and d.status["lastSkippedTime"] == "2026-11-30T07:20:00Z"
    assert "2 tick(s) (2026-11-30T07:10:00Z to 2026-11-30T07:20:00Z)" in d.status["lastSkipReason"]
    assert "only the latest tick, 2026-11-30T07:30:00Z, runs" in d.status["lastSkipReason"]
    # decided again (a lost status write, a restart): counted once
    again = decide(schedule(d.status), [run(0), run(30, "PENDING")], at(2026, 11, 30, 7, 36))
    assert again.status is not None and again.status["skipped"] == 2
    # on time, nothing is missed
    on_time = decide(schedule(last), [run(0)], at(2026, 11, 30, 7, 10, 1))
    assert on_time.create == at(2026, 11, 30, 7, 10) and on_time.status is not None
    assert "skipped" not in on_time.status


def test_a_schedule_made_after_the_missed_ticks_does_not_count_them() -> None:
    d = decide(schedule(), [], at(2026, 11, 30, 7, 35))  # made at 06:00, never decided until 07:35
    assert d.create == at(2026, 11, 30, 7, 30) and d.status is not None
    assert d.status["skipped"] == 8  # 06:10 .. 07:20
    young = schedule()
    young["metadata"]["creationTimestamp"] = "2026-11-30T07:25:00Z"
    d = decide(young, [], at(2026, 11, 30, 7, 35))
    assert d.create == at(2026, 11, 30, 7, 30) and d.status is not None and "skipped" not in d.status


def test_a_tick_past_its_starting_deadline_is_skipped() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last, startingDeadlineSeconds=60), [run(0)], at(2026, 11, 30, 7, 35))
    # 07:10 and 07:20 were missed, 07:30 is past its deadline: none of the three runs
    assert d.create is None and d.status is not None and d.status["skipped"] == 3
    assert "past the starting deadline of 60s" in d.status["lastSkipReason"]
    assert decide(schedule(last, startingDeadlineSeconds=600), [run(0)], at(2026, 11, 30, 7, 35)).create is not None


def test_forbid_makes_a_tick_wait_while_a_run_is_active() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last, concurrencyPolicy="Forbid"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
    assert d.create is None and d.status is not None and d.status["activeCount"] == 1
    assert d.status["waitingTime"] == "2026-11-30T07:10:00Z"
    # A tick that waits is no skipped tick: it may still run.
    assert d.status.get("skipped", 0) == 0
    again = decide(schedule(d.status, concurrencyPolicy="Forbid"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 5))
    assert again.create is None and again.status == d.status
    # The active run ends within the tick's starting deadline: it runs then, late.
    late = decide(schedule(d.status, concurrencyPolicy="Forbid", startingDeadlineSeconds=120),
                  [run(0, "SUCCESS")], at(2026, 11, 30, 7, 11))
    assert late.create == at(2026, 11, 30, 7, 10) and late.status is not None
    assert late.status.get("skipped", 0) == 0 and "waitingTime" not in late.status
    # A Forbid run waits in its queue as long as it must: it gets no expiry.
    assert late.expires is None


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


def test_scheduled_tasks_turned_off_for_the_installation_make_no_runs_and_say_why() -> None:
    now = at(2026, 11, 30, 7, 10, 5)
    runs = [run(0, "STARTED")]
    assert decide(schedule(), runs, now).create == at(2026, 11, 30, 7, 10)  # on: the due tick runs
    off = decide(schedule(), runs, now, enabled=False)
    assert off.create is None and off.wake_at is None and off.status is not None
    ready = next(c for c in off.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ScheduledTasksDisabled")
    assert "LIMETASK_ENABLE_SCHEDULED_TASKS" in ready["message"] and "no runs are made" in ready["message"]
    assert [a["name"] for a in off.status["active"]] == [run_name("nightly", at(2026, 11, 30, 7, 0))]
    # An invalid spec still says what is wrong with it; turned on again, the tick that is due runs.
    bad = decide(schedule(schedule="61 * * * *"), [], now, enabled=False)
    assert bad.status is not None and "invalid cron expression" in bad.status["problem"]
    again = decide(schedule(status=off.status), runs, now, enabled=True)
    assert again.create == at(2026, 11, 30, 7, 10) and again.status is not None
    assert next(c for c in again.status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_a_schedule_without_a_time_zone_ticks_in_the_installations() -> None:
    now = at(2026, 11, 30, 6, 30, 5)  # 07:30:05 in Stockholm
    daily = schedule(schedule="30 7 * * *", **{"args": []})
    assert decide(daily, [], now).create is None  # 07:30 UTC has not come
    made = decide(daily, [], now, default_zone="Europe/Stockholm")
    assert made.create == at(2026, 11, 30, 6, 30) and made.wake_at == at(2026, 12, 1, 6, 30)
    # The schedule's own zone wins over the default.
    own = decide(schedule(schedule="30 7 * * *", timeZone="UTC"), [], now, default_zone="Europe/Stockholm")
    assert own.create is None and own.wake_at == at(2026, 11, 30, 7, 30)


def test_ticks_before_the_schedule_existed_never_run() -> None:
    assert decide(schedule(), [], at(2026, 11, 30, 6, 5)).create is None  # made at 06:00; the 06:00 tick ran before


def test_history_beyond_the_limits_is_deleted_oldest_first() -> None:
    runs = [run(m, "SUCCESS", f"2026-11-30T07:{m:02}:30Z") for m in (0, 10, 20, 30, 40)] + \
           [run(m, "FAILURE") for m in (5, 15)]
    d = decide(schedule({"lastScheduleTime": "2026-11-30T07:40:00Z"}), runs, at(2026, 11, 30, 7, 45))
    assert sorted(r.name for r in d.delete or []) == sorted(
        [run(0).name, run(10).name, run(5).name])  # 3 successes and 1 failure are kept
    assert d.status is not None and d.status["lastSuccessfulTime"] == "2026-11-30T07:40:30Z"


@pytest.mark.parametrize("expression", ["* * * * * *", "*/2 * * * * *", "30 7 * * 1 *", "0 30 7 * * 1"])
def test_six_fields_are_refused_whatever_they_were_meant_to_be(expression: str) -> None:
    # cronsim reads a sixth field as seconds (first): '30 7 * * 1 *' would run at 00:07:30 every
    # hour of January, and '* * * * * *' every second.
    for seconds in (False, True):
        with pytest.raises(InvalidTaskError, match="it has 6 fields, and a schedule takes 5: minute hour "
                                                   "day-of-month month day-of-week"):
            crontab.check(expression, seconds=seconds)
    d = decide(schedule(schedule=expression), [], at(2026, 11, 30, 7, 0, 5), seconds_ok=True)
    assert d.create is None and d.status is not None and "6 fields" in d.status["problem"]


@pytest.mark.parametrize("expression", ["0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2", "0 0 LW * *", "@reboot",
                                        "@DAILY", "0 0 * * * 2027", "@every 3"])
def test_only_the_documented_cron_syntax_is_taken(expression: str) -> None:
    with pytest.raises(InvalidTaskError, match="invalid cron expression"):
        crontab.check(expression, seconds=True)


def test_names_of_months_and_days_are_taken() -> None:
    assert crontab.check("0 9-17 * jan-jun mon-fri") == "0 9-17 * jan-jun mon-fri"
    assert crontab.check("5 4 * * SUN") == "5 4 * * SUN"


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Local", "/etc/localtime", "../../etc/passwd",
                                  "UTC+2", "Europe/Stockholm "])
def test_a_time_zone_must_be_an_iana_name(name: str) -> None:
    with pytest.raises(InvalidTaskError, match="unknown time zone"):
        crontab.zone(name)
    d = decide(schedule(timeZone=name), [], at(2026, 11, 30, 7, 0, 5))
    assert d.create is None and d.status is not None and "unknown time zone" in d.status["problem"]


def test_iana_names_are_taken() -> None:
    for name in ("UTC", "Etc/UTC", "Europe/Stockholm", "America/Argentina/Buenos_Aires", "Etc/GMT+2"):
        assert crontab.zone(name) is not None


# -- a tick runs once -----------------------------------------------------------------------------

def test_a_tick_whose_status_write_was_lost_is_never_made_again() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    made = decide(schedule(last), [run(0)], at(2026, 11, 30, 7, 10, 0, 500000))
    assert made.create == at(2026, 11, 30, 7, 10)
    # The status write after the create is lost (a crash, a 409, a 5xx, a new leader). The next
    # pass sees the run, and records its tick all the same.
    seen = decide(schedule(last), [run(0), run(10, "SUCCESS", "2026-11-30T07:11:00Z")], at(2026, 11, 30, 7, 12))
    assert seen.create is None and seen.status is not None
    assert seen.status["lastScheduleTime"] == "2026-11-30T07:10:00Z"
    # The run leaves the cluster (archived, or the history limits): the tick stays done.
    assert decide(schedule(seen.status), [run(0)], at(2026, 11, 30, 7, 15)).create is None


def test_a_tick_whose_run_is_archived_is_never_made_again() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    now = at(2026, 11, 30, 7, 15)
    assert decide(schedule(last), [run(0)], now, archive=True).create == at(2026, 11, 30, 7, 10)
    # Asked before making it, the archive holds a run of that name: it was made, ran, and left.
    d = decide(schedule(last), [run(0)], now, archive=True, found={tick_of(10): Found(archived=True)})
    assert d.create is None and d.status is not None
    assert d.status["lastScheduleTime"] == "2026-11-30T07:10:00Z" and d.status.get("skipped", 0) == 0
    # The archive cannot say: nothing is made, and the tick is tried again soon.
    unsure = decide(schedule(last), [run(0)], now, archive=True,
                    found={tick_of(10): Found(unsure="the archive cannot be reached")})
    assert unsure.create is None and unsure.status is not None
    assert unsure.status["lastScheduleTime"] == "2026-11-30T07:00:00Z" and unsure.status.get("skipped", 0) == 0
    assert unsure.wake_at is not None and unsure.wake_at <= now + dt.timedelta(seconds=10)


def test_a_name_taken_by_another_object_skips_its_tick_with_the_reason() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    now = at(2026, 11, 30, 7, 10, 1)
    taken = "LimeTask nightly-1796022600 exists and is not this schedule's run (application app-b, task x.y)"
    d = decide(schedule(last), [run(0)], now, found={tick_of(10): Found(taken_by=taken)})
    assert d.create is None and d.status is not None
    assert d.status["skipped"] == 1 and d.status["lastSkippedTime"] == "2026-11-30T07:10:00Z"
    assert taken in d.status["lastSkipReason"]
    assert d.status["active"] == [] and d.status["lastScheduleTime"] == "2026-11-30T07:00:00Z"
    # Once recorded, the tick is done: no second try, no second count.
    again = decide(schedule(d.status), [run(0)], at(2026, 11, 30, 7, 11))
    assert again.create is None and again.status is not None and again.status["skipped"] == 1
    # The same when the other object carries the schedule's label and is seen in the cache.
    foreign = run(10, "STARTED", app="app-b")
    seen = decide(schedule(last), [run(0), foreign], now)
    assert seen.create is None and seen.status is not None and seen.status["skipped"] == 1
    assert "is not this schedule's run" in seen.status["lastSkipReason"] and seen.status["active"] == []


@pytest.mark.parametrize("mark", [{"schedule_uid": "another-schedule"}, {"schedule_uid": ""}, {"app": "app-b"},
                                  {"task": "other.tasks.job"}, {"name": "nightly-1"}])
def test_only_the_schedules_own_runs_count(mark: dict[str, Any]) -> None:
    """A LimeTask that merely carries the schedule's label is not its run: never active, never
    cancelled, never deleted, never a tick made."""
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    stranger = run(5, "STARTED", **mark)
    for policy in ("Allow", "Forbid", "Replace"):
        d = decide(schedule(last, concurrencyPolicy=policy), [run(0), stranger], at(2026, 11, 30, 7, 10, 1))
        assert d.create == at(2026, 11, 30, 7, 10), policy
        assert not d.cancel and d.status is not None and d.status["active"] == [{"name": "nightly-1796022600"}]
    finished = run(5, "SUCCESS", "2026-11-30T07:06:00Z", **mark)
    history = decide(schedule(last, successfulRunsHistoryLimit=0), [finished], at(2026, 11, 30, 7, 9))
    assert not history.delete and history.status is not None
    assert history.status["lastScheduleTime"] == "2026-11-30T07:00:00Z"
    assert "lastSuccessfulTime" not in history.status


# -- history --------------------------------------------------------------------------------------

def test_history_keeps_runs_whose_event_is_not_confirmed() -> None:
    runs = [run(m, "SUCCESS", f"2026-11-30T07:{m:02}:30Z", settled=m != 0) for m in (0, 10)] + \
           [run(m, "FAILURE", settled=False) for m in (5, 15)]
    d = decide(schedule({"lastScheduleTime": "2026-11-30T07:40:00Z"}, successfulRunsHistoryLimit=0,
                        failedRunsHistoryLimit=0), runs, at(2026, 11, 30, 7, 45))
    assert [r.name for r in d.delete or []] == [run(10).name]


def test_history_with_the_archive_deletes_only_archived_runs() -> None:
    runs = [run(0, "SUCCESS", "2026-11-30T07:00:30Z", archived=True),
            run(10, "SUCCESS", "2026-11-30T07:10:30Z", archived=False),
            run(20, "FAILURE", "2026-11-30T07:20:30Z", archived=False, settled=True)]
    d = decide(schedule({"lastScheduleTime": "2026-11-30T07:20:00Z"}, successfulRunsHistoryLimit=0,
                        failedRunsHistoryLimit=0), runs, at(2026, 11, 30, 7, 25), archive=True)
    assert [r.name for r in d.delete or []] == [run(0).name]


def test_the_history_limits_count_runs_not_yet_deletable() -> None:
    """A kept run that may not go yet still counts: the limit is on runs in the cluster."""
    runs = [run(m, "SUCCESS", f"2026-11-30T07:{m:02}:30Z", settled=m != 30) for m in (0, 10, 20, 30)]
    d = decide(schedule({"lastScheduleTime": "2026-11-30T07:30:00Z"}, successfulRunsHistoryLimit=2),
               runs, at(2026, 11, 30, 7, 35))
    assert sorted(r.name for r in d.delete or []) == sorted([run(0).name, run(10).name])


# -- problems -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, fragment", [
    ([nest(100)], {}, "nest deeper than 64"),
    ([nest(2000)], {}, "nest deeper than 64"),
    (["x" * 40000], {}, "over the limit"),
    ([2**64], {}, "beyond the 64-bit integers"),
    ([], {"n": -(2**63) - 1}, "beyond the 64-bit integers"),
])
def test_arguments_every_run_would_refuse_are_the_schedules_problem(args: list[Any], kwargs: dict[str, Any],
                                                                   fragment: str) -> None:
    d = decide(schedule(args=args, kwargs=kwargs), [], at(2026, 11, 30, 7, 0, 5))
    assert d.create is None and d.status is not None and fragment in d.status["problem"]
    assert d.status["problem"].startswith("spec.args/kwargs: ")


def test_a_schedule_says_whether_it_is_ready_in_a_condition() -> None:
    now = at(2026, 11, 30, 7, 0, 5)
    bad = decide(schedule(schedule="61 * * * *"), [], now)
    assert bad.status is not None
    [ready] = bad.status["conditions"]
    assert ready["type"] == "Ready" and ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert ready["message"] == bad.status["problem"] and ready["lastTransitionTime"] == "2026-11-30T07:00:05Z"
    # Fixed: ready again; the transition time moves only when the status does.
    good = decide(schedule(bad.status), [], at(2026, 11, 30, 7, 1, 5))
    assert good.status is not None and "problem" not in good.status
    [ready] = good.status["conditions"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("True", "Scheduling",
                                                                               "2026-11-30T07:01:05Z")
    later = decide(schedule(good.status), [], at(2026, 11, 30, 7, 2, 5))
    assert later.status is not None and later.status["conditions"] == good.status["conditions"]
    suspended = decide(schedule(good.status, suspend=True), [], at(2026, 11, 30, 7, 3, 5))
    assert suspended.status is not None and suspended.status["conditions"][0]["reason"] == "Suspended"
    assert suspended.status["conditions"][0]["status"] == "True"


def test_the_crd_shows_whether_a_schedule_is_ready_and_its_problem() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    for path in (root / "crds" / "limetask.io_limetaskschedules.yaml",
                 root / "charts" / "limetask" / "files" / "limetask.io_limetaskschedules.yaml"):
        version = yaml.safe_load(path.read_text())["spec"]["versions"][0]
        columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
        assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns["Problem"]["jsonPath"] == ".status.problem"
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        # Every status field the scheduler writes is declared (a structural schema prunes the rest).
        d = decide(schedule({"waitingTime": "2026-11-30T06:50:00Z"}, concurrencyPolicy="Forbid"),
                   [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
        assert d.status is not None and set(d.status) <= set(status), set(d.status) - set(status)
        assert set(d.status["conditions"][0]) <= set(status["conditions"]["items"]["properties"])


# -- queues and concurrency -----------------------------------------------------------------------

def test_an_allowed_run_expires_at_the_next_tick() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    d = decide(schedule(last), [run(0, "PENDING")], at(2026, 11, 30, 7, 10, 1))
    assert d.create == at(2026, 11, 30, 7, 10) and d.expires == at(2026, 11, 30, 7, 20)
    body = run_body(schedule(last), d.create, d.expires)
    assert body["spec"]["expires"] == "2026-11-30T07:20:00.000000Z"


def test_replace_leaves_a_run_that_has_not_started_to_stand_for_the_tick() -> None:
    """Cancelling a run still waiting in its queue would put the same task at the back of the
    queue, tick after tick: nothing would ever run."""
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    waiting = run(0, "PENDING")
    d = decide(schedule(last, concurrencyPolicy="Replace"), [waiting], at(2026, 11, 30, 7, 10, 1))
    assert d.create is None and not d.cancel and d.status is not None
    assert d.status["active"] == [{"name": waiting.name}] and d.status["skipped"] == 1
    assert "has not started yet" in d.status["lastSkipReason"] and waiting.name in d.status["lastSkipReason"]
    # A run that has started is replaced: the new run is made, then the old one cancelled.
    started = decide(schedule(last, concurrencyPolicy="Replace"), [run(0, "STARTED")], at(2026, 11, 30, 7, 10, 1))
    assert started.create == at(2026, 11, 30, 7, 10) and started.cancel == [waiting.name]
    assert started.expires is None


def test_replace_cancels_runs_older_than_the_newest_at_any_pass() -> None:
    """The create and the cancel are two calls: a pass that made the new run but died before the
    cancel leaves two active runs, and the next pass cancels the older one."""
    last = {"lastScheduleTime": "2026-11-30T07:10:00Z"}
    d = decide(schedule(last, concurrencyPolicy="Replace"), [run(0, "STARTED"), run(10, "PENDING")],
               at(2026, 11, 30, 7, 10, 3))
    assert d.create is None and d.cancel == [run(0).name]
    # Asked once: a run already told to cancel is not asked again.
    asked = decide(schedule(last, concurrencyPolicy="Replace"), [run(0, "STARTED", cancelling=True), run(10)],
                   at(2026, 11, 30, 7, 10, 4))
    assert not asked.cancel


def test_a_waiting_tick_is_counted_skipped_only_once_it_can_never_run() -> None:
    forbid = {"concurrencyPolicy": "Forbid"}
    active = [run(0, "STARTED")]
    first = decide(schedule({"lastScheduleTime": "2026-11-30T07:00:00Z"}, **forbid), active,
                   at(2026, 11, 30, 7, 10, 1))
    assert first.status is not None and first.status.get("skipped", 0) == 0
    # The next tick comes while the run is still active: 07:10 can never run now.
    second = decide(schedule(first.status, **forbid), active, at(2026, 11, 30, 7, 20, 1))
    assert second.status is not None and second.status["skipped"] == 1
    assert second.status["lastSkippedTime"] == "2026-11-30T07:10:00Z"
    assert "07:20:00Z" in second.status["lastSkipReason"] and "still active" in second.status["lastSkipReason"]
    assert second.status["waitingTime"] == "2026-11-30T07:20:00Z"
    # Looked at again: counted once.
    again = decide(schedule(second.status, **forbid), active, at(2026, 11, 30, 7, 20, 9))
    assert again.status is not None and again.status["skipped"] == 1
    # With a starting deadline, a waiting tick is skipped once the deadline has passed ...
    deadline = decide(schedule(first.status, startingDeadlineSeconds=60, **forbid), active,
                      at(2026, 11, 30, 7, 11, 30))
    assert deadline.status is not None and deadline.status["skipped"] == 1 and "waitingTime" not in deadline.status
    assert deadline.status["lastSkipReason"] == ("the tick of 2026-11-30T07:10:00Z waited while run nightly-1796022000 "
                                                 "was still active, past its starting deadline of 60s "
                                                 "(concurrencyPolicy Forbid)")
    # ... and the scheduler looks again at that deadline, not only at the next tick.
    assert first.wake_at == at(2026, 11, 30, 7, 20)
    waiting = decide(schedule({"lastScheduleTime": "2026-11-30T07:00:00Z"}, startingDeadlineSeconds=60, **forbid),
                     active, at(2026, 11, 30, 7, 10, 1))
    assert waiting.wake_at is not None and waiting.wake_at <= at(2026, 11, 30, 7, 11, 1)


# -- the scheduler's side effects, in order, against a fake API -------------------------------------

SCHEDULE = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule",
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "s-uid", "resourceVersion": "1",
                         "generation": 1, "creationTimestamp": CREATED},
            "spec": {"task": "acme.tasks.sync", "app": "app-a", "schedule": "*/10 * * * *", "args": [1],
                     "concurrencyPolicy": "Forbid", "successfulRunsHistoryLimit": 0},
            "status": {"lastScheduleTime": "2026-11-30T07:00:00Z"}}


def run_resource(minute: int, state: str = "SUCCESS", *, app: str = "app-a", uid: str = "s-uid",
                 owned: bool = False, confirmed: bool = True) -> dict[str, Any]:
    """A LimeTask as the scheduler made it for the tick at 07:`minute` (`owned`: as runs were
    made before, with an owner reference to the schedule instead of its UID as a label)."""
    tick = tick_of(minute)
    labels = {"limetask.io/app": app, "limetask.io/schedule": "nightly", "limetask.io/tick": str(tick)}
    meta: dict[str, Any] = {"name": f"nightly-{tick}", "namespace": "ns", "uid": f"uid-{minute}",
                            "resourceVersion": "7", "labels": labels}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule",
                                    "name": "nightly", "uid": uid, "controller": True}]
    else:
        labels["limetask.io/schedule-uid"] = uid
    status: dict[str, Any] = {"state": state}
    if state in ("SUCCESS", "FAILURE"):
        status.update(completedAt=f"2026-11-30T07:{minute:02}:30Z", event={"confirmed": confirmed})
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask", "metadata": meta,
            "spec": {"task": "acme.tasks.sync", "app": app, "args": [1]}, "status": status}


class FakeKube:
    """Records the scheduler's requests; `status_errors` answer its status writes in turn, and
    `existing` holds objects whose names a create finds taken (409)."""

    def __init__(self, status_errors: list[int] | None = None, existing: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.status_errors = list(status_errors or [])
        self.existing = {e["metadata"]["name"]: e for e in existing or []}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("POST", path, body))
        if body["metadata"]["name"] in self.existing:
            return None
        return {**body, "metadata": {**body["metadata"], "uid": "new-uid", "resourceVersion": "20"}}

    async def get(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path, None))
        name = path.rsplit("/", 1)[1]
        if name == "nightly":
            return copy.deepcopy(SCHEDULE)
        return copy.deepcopy(self.existing.get(name))

    async def delete(self, path: str, propagation: str = "Background", uid: str | None = None) -> None:
        self.calls.append(("DELETE", path, uid))

    async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        if method == "PUT":
            if self.status_errors:
                from limetask_operator.kube import KubeError

                raise KubeError(self.status_errors.pop(0), "conflict", method, path)
            return {**body, "metadata": {**body["metadata"], "resourceVersion": str(30 + len(self.calls))}}
        return {}

    def made(self) -> list[str]:
        return [c[2]["metadata"]["name"] for c in self.calls if c[0] == "POST"]

    def statuses(self) -> list[dict[str, Any]]:
        return [c[2]["status"] for c in self.calls if c[0] == "PUT"]


class Archive:
    """The operator's archive as the scheduler asks it: `held` names are archived runs; `down`
    makes every question fail."""

    def __init__(self, held: set[str] | None = None, down: bool = False) -> None:
        self.held, self.down = held or set(), down
        self.asked: list[tuple[str, str, str, str]] = []

    def has_archived(self, key: tuple[str, str], uid: str) -> bool:
        return key[1] in self.held

    async def holds_run(self, namespace: str, name: str, app: str, task: str) -> bool:
        self.asked.append((namespace, name, app, task))
        if self.down:
            raise OSError("connection refused")
        return name in self.held


def scheduler(kube: FakeKube, now: dt.datetime, runs: list[dict[str, Any]], archive: Archive | None = None,
              **spec: Any) -> Any:
    from limetask_operator.scheduler import Scheduler

    s = Scheduler(kube, clock=lambda: now, archive=archive, archive_keep_seconds=600)  # type: ignore[arg-type]
    body = copy.deepcopy(SCHEDULE)
    body["spec"].update(spec)
    s.schedule_event("ADDED", body)
    for r in runs:
        s.task_event("ADDED", r)
    return s


def reconcile(s: Any) -> None:
    async def once() -> None:
        await s.reconcile(("ns", "nightly"))
        for handle in s.timers.values():
            handle.cancel()
    asyncio.run(once())


def test_history_is_deleted_only_once_the_status_that_records_its_ticks_is_stored() -> None:
    kube = FakeKube(status_errors=[409])
    now = at(2026, 11, 30, 7, 10, 0, 500000)
    s = scheduler(kube, now, [run_resource(0)])
    reconcile(s)
    assert kube.made() == ["nightly-1796022600"]
    assert not [c for c in kube.calls if c[0] == "DELETE"], "history deleted before the status was stored"
    # The next pass finds the new run: its tick is recorded from it, then the history goes.
    s.task_event("ADDED", run_resource(10, "PENDING"))
    reconcile(s)
    assert kube.statuses()[-1]["lastScheduleTime"] == "2026-11-30T07:10:00Z"
    assert kube.made() == ["nightly-1796022600"]
    assert ("DELETE", "/apis/limetask.io/v1alpha1/namespaces/ns/limetasks/nightly-1796022000", "uid-0") in kube.calls
    puts = [i for i, c in enumerate(kube.calls) if c[0] == "PUT"]
    deletes = [i for i, c in enumerate(kube.calls) if c[0] == "DELETE"]
    assert max(puts) < min(deletes)


def test_a_run_whose_event_is_not_confirmed_is_kept() -> None:
    kube = FakeKube()
    s = scheduler(kube, at(2026, 11, 30, 7, 5), [run_resource(0, confirmed=False)])
    reconcile(s)
    assert not [c for c in kube.calls if c[0] == "DELETE"]
    s.task_event("MODIFIED", run_resource(0, confirmed=True))
    assert ("ns", "nightly") in s.work  # the event confirmed: the schedule is looked at again
    reconcile(s)
    assert [c[2] for c in kube.calls if c[0] == "DELETE"] == ["uid-0"]


def test_with_the_archive_only_archived_runs_leave() -> None:
    kube = FakeKube()
    archive = Archive()
    s = scheduler(kube, at(2026, 11, 30, 7, 5), [run_resource(0)], archive)
    reconcile(s)
    assert not [c for c in kube.calls if c[0] == "DELETE"]
    archive.held.add("nightly-1796022000")
    reconcile(s)
    assert [c[2] for c in kube.calls if c[0] == "DELETE"] == ["uid-0"]


def test_a_409_from_another_object_skips_the_tick_and_says_why() -> None:
    other = run_resource(10, "STARTED", app="app-b")
    del other["metadata"]["labels"]["limetask.io/schedule"]  # not even labelled: found by its name only
    kube = FakeKube(existing=[other])
    s = scheduler(kube, at(2026, 11, 30, 7, 10, 1), [run_resource(0)])
    reconcile(s)
    assert kube.made() == ["nightly-1796022600"]
    [status] = kube.statuses()
    assert status["skipped"] == 1 and status["lastSkippedTime"] == "2026-11-30T07:10:00Z"
    assert "LimeTask nightly-1796022600 exists and is not this schedule's run" in status["lastSkipReason"]
    assert "app-b" in status["lastSkipReason"] and status["active"] == []
    assert status["lastScheduleTime"] == "2026-11-30T07:00:00Z"


def test_a_409_from_its_own_run_is_that_run() -> None:
    mine = run_resource(10, "PENDING")
    kube = FakeKube(existing=[mine])
    s = scheduler(kube, at(2026, 11, 30, 7, 10, 1), [run_resource(0)])
    reconcile(s)
    [status] = kube.statuses()
    assert status["lastScheduleTime"] == "2026-11-30T07:10:00Z" and status.get("skipped", 0) == 0
    assert status["active"] == [{"name": "nightly-1796022600"}]


def test_the_archive_is_asked_before_a_run_is_made() -> None:
    kube = FakeKube()
    archive = Archive(held={"nightly-1796022600"})
    s = scheduler(kube, at(2026, 11, 30, 7, 15), [run_resource(0)], archive)
    reconcile(s)
    assert archive.asked == [("ns", "nightly-1796022600", "app-a", "acme.tasks.sync")]
    assert kube.made() == []
    assert kube.statuses()[-1]["lastScheduleTime"] == "2026-11-30T07:10:00Z"


def test_an_archive_that_cannot_answer_holds_back_only_ticks_it_may_hold() -> None:
    # 5 minutes after its tick, a run cannot have been archived and deleted yet (it would have
    # been kept 10 minutes after it completed): it is made.
    kube = FakeKube()
    s = scheduler(kube, at(2026, 11, 30, 7, 15), [run_resource(0)], Archive(down=True))
    reconcile(s)
    assert kube.made() == ["nightly-1796022600"]
    # 20 minutes after its tick, it may have been: it waits for the archive's answer.
    kube = FakeKube()
    s = scheduler(kube, at(2026, 11, 30, 7, 9, 59), [run_resource(0)], Archive(down=True),
                  schedule="10 7 * * *")
    s.clock = lambda: at(2026, 11, 30, 7, 30)
    reconcile(s)
    assert kube.made() == []
    assert s.timers  # tried again soon


def test_runs_made_before_are_released_from_their_schedule() -> None:
    """A run owned by its schedule would be deleted with it (running or not archived): the owner
    reference goes, the schedule's UID label comes."""
    kube = FakeKube()
    s = scheduler(kube, at(2026, 11, 30, 7, 5), [run_resource(0, "STARTED", owned=True)])
    reconcile(s)
    [patch] = [c for c in kube.calls if c[0] == "PATCH"]
    assert patch[1].endswith("/limetasks/nightly-1796022000")
    assert patch[2] == [{"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "s-uid"},
                        {"op": "remove", "path": "/metadata/ownerReferences/0"},
                        {"op": "add", "path": "/metadata/labels/limetask.io~1schedule-uid", "value": "s-uid"}]
    # Still its run meanwhile (Forbid: active).
    assert kube.statuses()[-1]["active"] == [{"name": "nightly-1796022000"}]


def test_the_schedule_cache_never_goes_back_to_before_its_own_write() -> None:
    from limetask_operator.scheduler import Scheduler

    s = Scheduler(FakeKube())  # type: ignore[arg-type]
    key = ("ns", "nightly")

    def body(rv: str, **status: Any) -> dict[str, Any]:
        b = copy.deepcopy(SCHEDULE)
        b["metadata"]["resourceVersion"] = rv
        b["status"] = status
        return b

    s.schedule_event("ADDED", body("1"))
    s.schedule_event_quiet(body("3", lastScheduleTime="2026-11-30T07:10:00Z"))  # the answer to our write
    s.schedule_event("MODIFIED", body("2", lastScheduleTime="2026-11-30T07:00:00Z"))  # older, delivered late
    assert s.schedules[key]["status"] == {"lastScheduleTime": "2026-11-30T07:10:00Z"}
    assert s.schedules[key]["metadata"]["resourceVersion"] == "3"
    s.schedule_event("MODIFIED", body("3", lastScheduleTime="2026-11-30T07:10:00Z"))  # the echo
    s.schedule_event("MODIFIED", body("4", lastScheduleTime="2026-11-30T07:10:00Z", skipped=1))  # a later change
    assert s.schedules[key]["metadata"]["resourceVersion"] == "4"
    # The watch was first, and further: the write's late answer takes nothing back.
    s.schedule_event_quiet(body("3", lastScheduleTime="2026-11-30T07:10:00Z"))
    assert s.schedules[key]["metadata"]["resourceVersion"] == "4"


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


@pytest.mark.archive
def test_the_archive_answers_whether_a_run_was_made_and_lists_a_schedules_runs(archive_db: str) -> None:
    """Against the real PostgreSQL: the operator's question before a run is made, and the reader's
    search of a schedule's runs by name."""
    import uuid

    from limetask_operator.archive import ArchiveDown, Archiver
    from limetask_operator.model import TaskView
    from limetask_operator.settings import OperatorSettings

    from lime_task.archive import ArchiveReader, row_of

    ns = f"ns-{uuid.uuid4().hex[:6]}"

    def archived(name: str, task: str = "acme.tasks.sync") -> TaskView:
        return TaskView.from_body({
            "metadata": {"namespace": ns, "name": name, "uid": str(uuid.uuid4()),
                         "creationTimestamp": "2026-11-30T07:10:00Z", "resourceVersion": "1"},
            "spec": {"task": task, "app": "app-a", "args": [1]},
            "status": {"state": "SUCCESS", "completedAt": "2026-11-30T07:10:30Z", "event": {"confirmed": True}}})

    async def scenario() -> list[bool]:
        a = Archiver(None, OperatorSettings(), archive_db)  # type: ignore[arg-type]
        try:
            with pytest.raises(ArchiveDown):  # not connected yet: it never waits for a pool to open
                await a.holds_run(ns, "nightly-1796022600", "app-a", "acme.tasks.sync")
            views = [archived("nightly-1796022600"), archived("nightly_1796023200"), archived("nightly-x", "a.b")]
            await a._write([row_of(v.namespace, v.name, v.uid, v.created, v.spec, v.status) for v in views])
            a.up = True
            return [await a.holds_run(ns, "nightly-1796022600", "app-a", "acme.tasks.sync"),
                    await a.holds_run(ns, "nightly-1796022600", "app-b", "acme.tasks.sync"),
                    await a.holds_run(ns, "nightly-1796022600", "app-a", "other.task"),
                    await a.holds_run(ns, "nightly-1796023200", "app-a", "acme.tasks.sync")]
        finally:
            await a.stop()

    assert asyncio.run(scenario()) == [True, False, False, False]
    reader = ArchiveReader(archive_db)
    try:
        page = reader.search(ns, apps=["app-a"], name_prefix="nightly-")
        assert sorted(b["metadata"]["name"] for b in page.items) == ["nightly-1796022600", "nightly-x"]
        # LIKE's wildcards in the prefix are taken literally: '_' is no '-'.
        page = reader.search(ns, apps=["app-a"], name_prefix="nightly_")
        assert [b["metadata"]["name"] for b in page.items] == ["nightly_1796023200"]
    finally:
        reader.close()


def test_a_slow_schedule_does_not_hold_up_the_others_and_none_is_worked_on_twice_at_once() -> None:
    """A hundred schedules on the same minute: one whose create hangs (a slow API server, the
    archive) must not keep the others' runs from being made on time; and a schedule queued
    again while a worker has it waits for that worker (two at once would make its run twice)."""
    from limetask_operator.scheduler import Scheduler

    class SlowKube(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.inside: dict[str, int] = {}
            self.most_at_once: dict[str, int] = {}

        async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
            schedule_name = body["metadata"]["name"].rsplit("-", 1)[0]
            self.inside[schedule_name] = self.inside.get(schedule_name, 0) + 1
            self.most_at_once[schedule_name] = max(self.most_at_once.get(schedule_name, 0),
                                                   self.inside[schedule_name])
            try:
                if schedule_name == "slow":
                    await self.release.wait()
                return await super().create(path, body)
            finally:
                self.inside[schedule_name] -= 1

    async def main() -> SlowKube:
        kube = SlowKube()
        now = at(2026, 11, 30, 7, 10, 0, 500000)
        s = Scheduler(kube, clock=lambda: now)  # type: ignore[arg-type]
        for i, name in enumerate(["slow"] + [f"fast{n}" for n in range(20)]):
            body = copy.deepcopy(SCHEDULE)
            body["metadata"].update(name=name, uid=f"uid-{i}")
            s.schedule_event("ADDED", body)
        s.start()
        try:
            for _ in range(200):
                if len(kube.made()) == 20:
                    break
                await asyncio.sleep(0.01)
            assert sorted(kube.made()) == sorted(f"fast{n}-1796022600" for n in range(20))
            for _ in range(3):  # the slow one is queued again (a watch event) while it hangs
                s.enqueue(("ns", "slow"))
                await asyncio.sleep(0.01)
            kube.release.set()
            for _ in range(200):
                if "slow-1796022600" in kube.made() and not s.busy and not s.work:
                    break
                await asyncio.sleep(0.01)
        finally:
            await s.stop()
        return kube

    kube = asyncio.run(main())
    assert kube.most_at_once["slow"] == 1
    assert "slow-1796022600" in kube.made()


def test_ticks_passed_while_suspended_are_counted_skipped_with_a_reason_that_names_the_suspension() -> None:
    last = {"lastScheduleTime": "2026-11-30T07:00:00Z"}
    held = decide(schedule(last, suspend=True), [run(0)], at(2026, 11, 30, 7, 25))
    assert held.create is None and held.status is not None and "skipped" not in held.status
    resumed = decide(schedule(held.status), [run(0)], at(2026, 11, 30, 7, 35))
    assert resumed.create == at(2026, 11, 30, 7, 30) and resumed.status is not None
    assert resumed.status["skipped"] == 2 and "the schedule was suspended" in resumed.status["lastSkipReason"]
