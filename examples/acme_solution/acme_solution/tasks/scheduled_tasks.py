"""The acme solution's scheduled tasks: one LimeTaskSchedule per application it serves.

    limetask schedules apply --app app-one --app app-two --prune
"""

from __future__ import annotations

from lime_task.schedule import CronTab, ScheduledTask, TaskSession

from . import lime


def register_scheduled_tasks() -> list[ScheduledTask]:
    return [
        ScheduledTask(task=lime.get_lime_company,
                      session=TaskSession(user_name="integration-user", language="sv"),
                      args=[1001, ["name", "phone"]],
                      schedule=CronTab(hour=7, minute=30, day_of_week=1),
                      time_zone="Europe/Stockholm"),
        ScheduledTask(task=lime.whoami, session=TaskSession(user_name="integration-user", language="sv"),
                      args=["nightly check"], schedule=CronTab(hour=2, minute=0)),
    ]
