"""lime_task.schedule: CronTab, TaskSession, ScheduledTask and the LimeTaskSchedules they become."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lime_task import task
from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.schedule import CronTab, ScheduledTask, TaskSession, load_registered, schedule_resources, to_yaml
from tests.unit.fake_api import FakeCustomObjects, fake_client, live_task


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


@task(name="tests.schedule.queued_task", qos="nightly", priority=-5, memory_on_oom=["1Gi", "2Gi"])
def queued_task(app: Any) -> str:
    return "ok"


def test_a_scheduled_tasks_queue_priority_and_memory_on_oom_reach_its_runs() -> None:
    import datetime as dt

    from limetask_operator.scheduler import run_body

    spec = schedule_resources([ScheduledTask(task=queued_task, schedule=CronTab(minute=0))], ["app"])[0]
    assert spec["spec"]["queue"] == "nightly" and spec["spec"]["priority"] == -5
    spec["metadata"].update(namespace="ns", uid="u1")
    run = run_body(spec, dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    assert run["spec"]["queue"] == "nightly" and run["spec"]["priority"] == -5
    # So does its memory after OOMKilled attempts.
    assert spec["spec"]["memoryOnOOM"] == run["spec"]["memoryOnOOM"] == ["1Gi", "2Gi"]


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


# -- loading a solution's scheduled tasks: one line and exit 2 for whatever the module does ---------

BAD_MODULES = {
    "raises_at_import": 'raise RuntimeError("boom at import: no settings")\n',
    "register_raises": 'def register_scheduled_tasks():\n    raise ValueError("no tenant configured")\n',
    "exits_at_import": 'import sys\nsys.exit(0)\n',
    "register_exits": 'def register_scheduled_tasks():\n    import sys\n    sys.exit(3)\n',
    "imports_missing": 'import no_such_dependency_here\n',
}


@pytest.mark.parametrize("module, fragment", [
    ("raises_at_import", "importing 'raises_at_import' raised RuntimeError: boom at import: no settings"),
    ("register_raises", "register_raises.register_scheduled_tasks() raised ValueError: no tenant configured"),
    ("exits_at_import", "importing 'exits_at_import' called sys.exit(0)"),
    ("register_exits", "register_exits.register_scheduled_tasks() called sys.exit(3)"),
    ("imports_missing", "cannot import 'imports_missing': No module named 'no_such_dependency_here'"),
    ("../etc/passwd", "cannot import '../etc/passwd': not a module name (a dotted name such as "
                      "acme_solution.tasks.scheduled_tasks)"),
    ("acme_solution.", "cannot import 'acme_solution.': not a module name"),
])
def test_a_module_that_fails_is_one_line_and_exit_2(module: str, fragment: str, tmp_path: Path) -> None:
    for name, text in BAD_MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMETASK_")}
    env.update(PYTHONPATH=str(tmp_path), LIMETASK_KUBECONFIG=str(tmp_path / "none"))
    for command in ("render", "apply"):
        proc = subprocess.run([sys.executable, "-m", "lime_task.cli", "schedules", command, "--module", module,
                               "--app", "app-one"], capture_output=True, text=True, env=env, timeout=60)
        detail = (command, proc.returncode, proc.stderr[-2000:])
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, detail
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: InvalidTaskError: ") and fragment in lines[0], detail
        assert proc.stdout == ""


def test_load_registered_says_what_the_module_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, text in BAD_MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in BAD_MODULES:
        with pytest.raises(InvalidTaskError, match=name):
            load_registered(name)
        sys.modules.pop(name, None)


# -- the command line and the HTTP endpoint, against a fake API ------------------------------------

def schedule_resource_body(name: str = "nightly", uid: str = "s-uid", app: str = "app-one", **status: Any
                           ) -> dict[str, Any]:
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTaskSchedule",
            "metadata": {"name": name, "namespace": "solutions", "uid": uid, "resourceVersion": "3",
                         "creationTimestamp": "2026-05-01T08:30:00Z", "labels": {"limetask.io/app": app}},
            "spec": {"task": "acme_solution.tasks.lime.add", "app": app, "schedule": "0 * * * *", "args": [1, 2]},
            "status": status}


def run_of(tick: int, *, schedule: str = "nightly", uid: str = "s-uid", app: str = "app-one",
           task: str = "acme_solution.tasks.lime.add", state: str = "SUCCESS") -> dict[str, Any]:
    body = live_task(f"{schedule}-{tick}", app=app, task=task, state=state)
    body["metadata"]["labels"].update({"limetask.io/schedule": schedule, "limetask.io/schedule-uid": uid,
                                       "limetask.io/tick": str(tick)})
    body["metadata"]["creationTimestamp"] = dt.datetime.fromtimestamp(tick, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    return body


TICK = 1777629600  # 2026-05-01T10:00:00Z, 90 minutes after the schedule was made


class Results:
    """The results API as `schedules runs` asks it: the endpoint's runs of a schedule."""

    def __init__(self, items: list[dict[str, Any]] | None) -> None:
        self.items = items
        self.asked: list[tuple[str, str, int, str]] = []

    def schedule_runs(self, app: str, name: str, limit: int, *, namespace: str) -> list[dict[str, Any]] | None:
        self.asked.append((app, name, limit, namespace))
        return self.items


@pytest.fixture
def fake_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    """The commands' client talks to this fake instead of a cluster."""
    import lime_task.cli.options

    api = FakeCustomObjects()
    client = fake_client(tmp_path, api)
    monkeypatch.setattr(lime_task.cli.options, "task_client", lambda *args, **kwargs: client)
    api.client = client  # type: ignore[attr-defined]
    return api


def invoke(*args: str) -> Any:
    from typer.testing import CliRunner

    from lime_task.cli.app import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("command", [["schedules", "list"], ["schedules", "runs", "nightly"],
                                     ["schedules", "apply", "-m", "acme_solution.tasks.scheduled_tasks", "-a", "a"]])
def test_without_the_schedule_crd_the_commands_say_so(fake_api: FakeCustomObjects, command: list[str]) -> None:
    fake_api.missing.add("limetaskschedules")
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ClusterError: schedules are not installed in this "
                                                   "cluster (no limetaskschedules.limetask.io resource): install "
                                                   "the CRDs"), lines


def test_runs_of_no_such_schedule_are_not_found(fake_api: FakeCustomObjects) -> None:
    fake_api.schedules = [schedule_resource_body()]
    result = invoke("schedules", "runs", "nosuch")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["error: NotFoundError: schedule 'nosuch' not found"]


def test_runs_are_the_schedules_own_and_archived_ones_too(fake_api: FakeCustomObjects) -> None:
    from lime_task.status import TaskStatus

    fake_api.schedules = [schedule_resource_body()]
    mine = [run_of(TICK), run_of(TICK + 3600, state="STARTED")]
    strangers = [run_of(TICK + 7200, app="app-two"), run_of(TICK + 10800, uid="earlier-schedule"),
                 run_of(TICK + 14400, task="acme_solution.tasks.lime.fail")]
    fake_api.tasks = mine + strangers
    archived = TaskStatus.from_resource(run_of(TICK - 3600), archived=True).to_dict()
    results = Results([TaskStatus.from_resource(mine[0]).to_dict(), archived])
    fake_api.client.results = results  # type: ignore[attr-defined]
    result = invoke("schedules", "runs", "nightly", "-o", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [(r["id"], r["archived"]) for r in shown] == [(f"nightly-{TICK + 3600}", False),
                                                         (f"nightly-{TICK}", False),
                                                         (f"nightly-{TICK - 3600}", True)]
    assert results.asked == [("app-one", "nightly", 100, fake_api.client.namespace)]  # type: ignore[attr-defined]
    text = invoke("schedules", "runs", "nightly", "--limit", "2")
    assert text.exit_code == 0 and "(archived)" not in text.stdout and len(text.stdout.splitlines()) == 3


def test_an_invalid_schedule_looks_invalid_in_the_list(fake_api: FakeCustomObjects) -> None:
    problem = "invalid cron expression '* * * * * *': it has 6 fields, and a schedule takes 5"
    fake_api.schedules = [schedule_resource_body(problem=problem), schedule_resource_body("fine", uid="u2")]
    result = invoke("schedules", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("fine ") and lines[2].startswith("nightly ") and "INVALID" in lines[2]
    assert lines[3] == f"  problem: {problem}"
    listed = json.loads(invoke("schedules", "list", "-o", "json").stdout)
    assert [s["problem"] for s in listed] == [None, problem]


def test_a_schedule_stopped_by_the_installation_says_so_in_the_list(fake_api: FakeCustomObjects) -> None:
    off = {"type": "Ready", "status": "False", "reason": "ScheduledTasksDisabled", "message": "turned off"}
    fake_api.schedules = [schedule_resource_body(conditions=[off]), schedule_resource_body("fine", uid="u2")]
    lines = invoke("schedules", "list").stdout.splitlines()
    assert lines[1].startswith("fine ") and "turned off" not in lines[1] and "(default)" in lines[1]
    assert lines[2].startswith("nightly ") and lines[2].endswith("(scheduled tasks are turned off: no runs are made)")
    listed = json.loads(invoke("schedules", "list", "-o", "json").stdout)
    assert [s["disabled"] for s in listed] == [False, True]


def test_the_http_endpoint_lists_a_schedules_runs_live_and_archived(fake_api: FakeCustomObjects,
                                                                    tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lime_task.archive import Page
    from lime_task.server.app import create_app

    class Archive:
        def __init__(self) -> None:
            self.searched: list[dict[str, Any]] = []

        def ping(self) -> None:
            """Reachable (the endpoint's readiness asks)."""

        def search(self, namespace: str, **filters: Any) -> Page:
            self.searched.append(filters)
            return Page([run_of(TICK - 3600), run_of(TICK - 7200, uid="earlier-schedule"),
                         run_of(1777622400 - 3600), run_of(TICK - 10800, task="acme_solution.tasks.lime.addition"),
                         {**run_of(TICK - 14400), "metadata": {**run_of(TICK - 14400)["metadata"],
                                                               "name": "nightly-x"}}], None)

    fake_api.schedules = [schedule_resource_body(), schedule_resource_body("theirs", uid="u3", app="app-two")]
    fake_api.tasks = [run_of(TICK), run_of(TICK + 3600, app="app-two")]
    archive = Archive()
    http = TestClient(create_app(client=fake_client(tmp_path, fake_api), tokens={"app-one": "t1", "app-two": "t2"},
                                 imports=[], archive=archive))  # type: ignore[arg-type]
    mine = {"Authorization": "Bearer t1"}
    shown = http.get("/v1/apps/app-one/schedules/nightly/runs", headers=mine)
    assert shown.status_code == 200, shown.text
    # Archived runs: of this schedule's task and application, named after a tick after it was made.
    assert [(r["id"], r["archived"]) for r in shown.json()] == [(f"nightly-{TICK}", False),
                                                                (f"nightly-{TICK - 3600}", True)]
    assert archive.searched[0]["apps"] == ["app-one"] and archive.searched[0]["name_prefix"] == "nightly-"
    assert archive.searched[0]["exclude"] == [f"nightly-{TICK}"]
    assert http.get("/v1/apps/app-one/schedules/nightly/runs?limit=1", headers=mine).json()[0]["id"] == \
        f"nightly-{TICK}"
    missing = http.get("/v1/apps/app-one/schedules/nosuch/runs", headers=mine)
    assert missing.status_code == 404 and missing.json()["detail"] == "schedule 'nosuch' not found"
    theirs = http.get("/v1/apps/app-one/schedules/theirs/runs", headers=mine)
    assert theirs.status_code == 404 and theirs.json()["detail"] == "schedule 'theirs' not found"
