"""A schedule whose session cannot work for its application is flagged when it is applied."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from lime_task.errors import InvalidTaskError
from lime_task.schedule import CronTab, ScheduledTask, TaskSession, schedule_resources
from lime_task.session_check import app_factory, session_problems
from tests.unit.fake_api import FakeCustomObjects
from tests.unit.test_schedule_api import fake_api, invoke  # noqa: F401 - the fixture, used below

FACTORY = '''
KNOWN_USERS = {"app-one": {"integration-user"}, "app-two": {"someone-else"}}


class LimeApp:
    def __init__(self, name):
        if name == "app-down":
            raise ConnectionError("the CRM database of app-down does not answer")
        self.name = name

    def check_session(self, session):
        if session.user_name not in KNOWN_USERS.get(self.name, ()):
            raise LookupError(f"no user {session.user_name!r} in {self.name}")
        return session.language != "xx" and None


class Frozen:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def make(name):
    return LimeApp(name)


def frozen(name):
    return Frozen(name)
'''


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"factory_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LIMETASK_APP_FACTORY", raising=False)
    return name


def resources(*apps: str, with_session: bool = True, language: str = "sv") -> list[dict[str, Any]]:
    session = TaskSession(user_name="integration-user", language=language) if with_session else None
    scheduled = [ScheduledTask(task="acme_solution.tasks.lime.whoami", session=session, args=["nightly"],
                               schedule=CronTab(hour=2, minute=0))]
    return schedule_resources(scheduled, list(apps), "acme.scheduled_tasks")


def test_every_bad_schedule_is_named_with_its_application_and_what_failed(factory_module: str) -> None:
    bodies = resources("app-one", "app-two", "app-down")
    problems = session_problems(bodies, app_factory(f"{factory_module}:make"))
    assert [(p.schedule, p.app) for p in problems] == [(bodies[1]["metadata"]["name"], "app-two"),
                                                       (bodies[2]["metadata"]["name"], "app-down")]
    two, down = map(str, problems)
    assert two.startswith(f"schedule {bodies[1]['metadata']['name']!r} (application 'app-two'): ")
    assert "its session (user 'integration-user', language 'sv') cannot work: LookupError: no user " \
           "'integration-user' in app-two" in two
    assert "the application factory cannot build it: ConnectionError: the CRM database of app-down" in down


def test_a_session_the_application_refuses_by_answer(factory_module: str) -> None:
    problems = session_problems(resources("app-one", language="xx"), app_factory(f"{factory_module}:make"))
    assert len(problems) == 1 and "LimeApp.check_session() refused it" in problems[0].what


def test_an_application_object_that_cannot_take_the_session(factory_module: str) -> None:
    problems = session_problems(resources("app-one"), app_factory(f"{factory_module}:frozen"))
    assert len(problems) == 1 and "takes no `session` attribute" in problems[0].what
    # Without a session there is nothing to take: only the build counts.
    assert session_problems(resources("app-one", with_session=False), app_factory(f"{factory_module}:frozen")) == []


def test_the_default_application_takes_any_session() -> None:
    assert session_problems(resources("app-one", "app-two"), app_factory(None)) == []


def test_the_factory_is_built_once_per_application(factory_module: str) -> None:
    made: list[str] = []

    def counting(name: str) -> Any:
        made.append(name)
        return type("App", (), {})()

    scheduled = [ScheduledTask(task="acme_solution.tasks.lime.whoami", schedule=f"{i} 2 * * *",
                               session=TaskSession(user_name="u")) for i in range(3)]
    assert session_problems(schedule_resources(scheduled, ["app-one", "app-two"]), counting) == []
    assert made == ["app-one", "app-two"]


@pytest.mark.parametrize(("spec", "words"), [
    ("no_colon", "expected 'module:callable'"),
    ("no_such_module_q:make", "cannot be loaded: ModuleNotFoundError"),
])
def test_a_bad_factory_is_a_clear_error(spec: str, words: str) -> None:
    with pytest.raises(InvalidTaskError, match=words):
        app_factory(spec)


def test_apply_refuses_listing_every_bad_schedule_unless_forced(fake_api: FakeCustomObjects,  # noqa: F811
                                                                 factory_module: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import lime_task.schedule

    applied: list[list[str]] = []
    monkeypatch.setattr(lime_task.schedule, "apply_resources", lambda client, bodies, source, prune: (
        applied.append([b["metadata"]["name"] for b in bodies]) or [f"created     {b['metadata']['name']}"
                                                                    for b in bodies]))
    args = ["schedules", "apply", "-m", "acme_solution.tasks.scheduled_tasks", "-a", "app-one", "-a", "app-down",
            "--app-factory", f"{factory_module}:make"]
    refused = invoke(*args)
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.splitlines()
    # Two scheduled tasks for app-down: both named; app-one's user is known to it.
    assert [line.split("'")[3] for line in lines[:-1]] == ["app-down", "app-down"]
    assert all(line.startswith("error: schedule '") and "cannot build it: ConnectionError" in line
               for line in lines[:-1])
    assert lines[-1].startswith("error: 2 schedule(s) cannot work for their application, nothing was applied")
    assert "--force" in lines[-1] and applied == []
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.stderr.count("warning: schedule '") == 2 and len(applied[0]) == 4
    # The factory comes from the runner's own variable too.
    monkeypatch.setenv("LIMETASK_APP_FACTORY", f"{factory_module}:make")
    assert invoke(*args[:-2]).exit_code == 2
    assert invoke("schedules", "apply", "-m", "acme_solution.tasks.scheduled_tasks", "-a", "app-one",
                  "--app-factory", "nope").stderr.startswith("error: InvalidTaskError: LIMETASK_APP_FACTORY='nope'")
