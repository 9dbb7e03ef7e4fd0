"""Whether each schedule's TaskSession can work for its application, asked when it is applied.

A schedule whose session cannot work would otherwise fail at its first tick, perhaps a week
later. `limetask schedules apply` asks the application factory, as the runner would, for each
application of each schedule:
- can it build the application object (`factory(app_name)`)?
- does the object take the session? With a `check_session(session)` method, the object says:
  it raises (or returns False) when the session cannot work, e.g. an unknown user name or
  language; without one, it must at least take a `session` attribute, which is how every run
  receives it (an object that does not would run each tick without its session).
That is as far as the factory can tell: what a run does with the session is found out then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .application import APP_FACTORY_ENV, load_app_factory
from .errors import InvalidTaskError, LimeTaskError

CHECK_HOOK = "check_session"


@dataclass(frozen=True)
class SessionProblem:
    """A schedule that cannot work for its application, and why."""

    schedule: str
    app: str
    what: str

    def __str__(self) -> str:
        return f"schedule {self.schedule!r} (application {self.app!r}): {self.what}"


def app_factory(spec: str | None = None) -> Callable[[str], Any]:
    """The runner's application factory (`module:callable`, default LIMETASK_APP_FACTORY)."""
    try:
        return load_app_factory(spec)
    except LimeTaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - the solution's import: one line that says which
        shown = spec if spec is not None else f"{APP_FACTORY_ENV}"
        raise InvalidTaskError(f"the application factory {shown!r} cannot be loaded: {type(exc).__name__}: "
                               f"{exc}") from exc


def _raised(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def session_problems(resources: Iterable[dict[str, Any]], factory: Callable[[str], Any]) -> list[SessionProblem]:
    """What cannot work, for each LimeTaskSchedule body (empty: every one can, as far as the
    factory can tell). The factory builds each application once."""
    from .schedule import TaskSession

    built: dict[str, Any] = {}
    problems: list[SessionProblem] = []
    for body in resources:
        name, spec = str(body["metadata"]["name"]), body.get("spec") or {}
        app_name = str(spec.get("app", ""))
        if app_name not in built:
            try:
                built[app_name] = factory(app_name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the factory raises is the answer
                built[app_name] = exc
        app = built[app_name]
        if isinstance(app, BaseException):
            problems.append(SessionProblem(name, app_name, f"the application factory cannot build it: "
                                                           f"{_raised(app)}"))
            continue
        session = spec.get("session") or {}
        if not session:
            continue
        task_session = TaskSession(user_name=session.get("userName"), language=session.get("language"))
        who = ", ".join(f"{k} {v!r}" for k, v in (("user", task_session.user_name),
                                                   ("language", task_session.language)) if v)
        check = getattr(app, CHECK_HOOK, None)
        if callable(check):
            try:
                answer = check(task_session)
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                problems.append(SessionProblem(name, app_name, f"its session ({who}) cannot work: {_raised(exc)}"))
                continue
            if answer is False:
                problems.append(SessionProblem(name, app_name, f"its session ({who}) cannot work: "
                                                               f"{type(app).__name__}.{CHECK_HOOK}() refused it"))
            continue
        try:
            app.session = task_session
        except (AttributeError, TypeError) as exc:
            problems.append(SessionProblem(
                name, app_name, f"its session ({who}) cannot reach the task: the application object "
                                f"({type(app).__name__}) takes no `session` attribute ({_raised(exc)})"))
    return problems
