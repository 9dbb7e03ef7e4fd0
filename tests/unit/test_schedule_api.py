"""lime_task.schedule: CronTab, TaskSession, ScheduledTask and the LimeTaskSchedules they become."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from lime_task import task
from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.schedule import CronTab, ScheduledTask, TaskSession, load_registered, schedule_resources, to_yaml


@task(name="tests.schedule.my_task", timeout=600)
def my_task(app: Any, *args: Any) -> str:
    return "ok"


def register_scheduled_tasks() -> list[ScheduledTask]:
    """The issue's example, as a solution writes it."""
    return [ScheduledTask(task=my_task,
                          session=TaskSession(user_name='integration-user', language='sv'),
                          args=['arg1', {'key': 'value'}, True, 1337, None],
                          schedule=CronTab(hour=7, minute=30, day_of_week=1))]


@pytest.mark.parametrize("crontab, expression", [
    (CronTab(hour=7, minute=30, day_of_week=1), "30 7 * * 1"),
    (CronTab(), "* * * * *"),
    (CronTab(minute="*/15"), "*/15 * * * *"),
    (CronTab(minute=0, hour="9-17", day_of_week="mon-fri"), "0 9-17 * * mon-fri"),
    (CronTab(minute=0, hour={0, 12}), "0 0,12 * * *"),
    (CronTab(minute=0, hour=3, day_of_month=1, month_of_year="1,7"), "0 3 1 1,7 *"),
    (CronTab(minute=5, hour=4, day_of_week="SUN"), "5 4 * * sun"),
])
def test_crontab_speaks_celerys_names_and_gives_a_cron_expression(crontab: CronTab, expression: str) -> None:
    assert crontab.expression == expression == str(crontab)


@pytest.mark.parametrize("kwargs", [{"minute": 60}, {"hour": -1}, {"day_of_week": "funday"}, {"minute": True},
                                    {"minute": set()}, {"month_of_year": 13}, {"minute": "5;rm"}])
def test_a_bad_crontab_is_refused_where_it_is_written(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidTaskError, match="CronTab|cron"):
        CronTab(**kwargs)


def test_the_issue_example_becomes_one_schedule_per_application() -> None:
    resources = schedule_resources(register_scheduled_tasks(), ["app-one", "app-two"], "acme.scheduled_tasks")
    assert [r["spec"]["app"] for r in resources] == ["app-one", "app-two"]
    spec = resources[0]["spec"]
    assert spec["task"] == "tests.schedule.my_task" and spec["schedule"] == "30 7 * * 1"
    assert spec["args"] == ['arg1', {'key': 'value'}, True, 1337, None]
    assert spec["session"] == {"userName": "integration-user", "language": "sv"}
    assert spec["timeoutSeconds"] == 600 and spec["concurrencyPolicy"] == "Forbid"
    names = [r["metadata"]["name"] for r in resources]
    assert len(set(names)) == 2 and all(len(n) <= 52 for n in names)
    # The same code gives the same names (apply updates in place).
    again = schedule_resources(register_scheduled_tasks(), ["app-one", "app-two"], "acme.scheduled_tasks")
    assert [r["metadata"]["name"] for r in again] == names
    labels = resources[0]["metadata"]["labels"]
    assert labels["limetask.io/schedule-source"] == "acme-scheduled-tasks"
    docs = list(yaml.safe_load_all(to_yaml(resources, "solutions")))
    assert [d["metadata"]["namespace"] for d in docs] == ["solutions"] * 2 and docs[0]["spec"] == spec


@task(name="tests.schedule.queued_task", qos="nightly", priority=-5)
def queued_task(app: Any) -> str:
    return "ok"


def test_a_scheduled_tasks_queue_and_priority_reach_its_runs() -> None:
    import datetime as dt

    from limetask_operator.scheduler import run_body

    spec = schedule_resources([ScheduledTask(task=queued_task, schedule=CronTab(minute=0))], ["app"])[0]
    assert spec["spec"]["queue"] == "nightly" and spec["spec"]["priority"] == -5
    spec["metadata"].update(namespace="ns", uid="u1")
    run = run_body(spec, dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    assert run["spec"]["queue"] == "nightly" and run["spec"]["priority"] == -5


def test_a_scheduled_task_is_checked_where_it_is_written() -> None:
    with pytest.raises(InvalidTaskError, match="dotted"):
        ScheduledTask(task="nodots", schedule="* * * * *")
    with pytest.raises(InvalidTaskError, match="cron"):
        ScheduledTask(task=my_task, schedule="every day")
    with pytest.raises(InvalidTaskError, match="time zone"):
        ScheduledTask(task=my_task, schedule="0 3 * * *", time_zone="Nowhere")
    with pytest.raises(InvalidTaskError, match="concurrency_policy"):
        ScheduledTask(task=my_task, schedule="0 3 * * *", concurrency_policy="Sometimes")
    with pytest.raises(InvalidArgumentsError, match="JSON"):
        ScheduledTask(task=my_task, schedule="0 3 * * *", args=[object()])
    with pytest.raises(InvalidTaskError, match="no application"):
        schedule_resources(register_scheduled_tasks(), [])
    twice = [ScheduledTask(task=my_task, schedule="0 3 * * *", name="same"),
             ScheduledTask(task=my_task, schedule="0 4 * * *", name="same")]
    with pytest.raises(InvalidTaskError, match="both be named"):
        schedule_resources(twice, ["app-one"])


def test_scheduled_tasks_are_found_by_module_and_entry_point() -> None:
    found, source = load_registered("acme_solution.tasks.scheduled_tasks")
    assert source == "acme_solution.tasks.scheduled_tasks" and len(found) == 2
    declared, _ = load_registered()  # the acme package declares it as an entry point
    assert [s.task_name for s in declared] == [s.task_name for s in found]
    with pytest.raises(InvalidTaskError, match="has no register_scheduled_tasks"):
        load_registered("acme_solution.tasks.lime")
    with pytest.raises(InvalidTaskError, match="cannot import"):
        load_registered("no_such_module_here")
