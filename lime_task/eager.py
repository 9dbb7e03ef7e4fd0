"""Running a task in this process, with the runner's rules: for unit tests and debugging."""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from . import verdict as verdicts
from .application import load_app_factory
from .coroutine import run_coroutine
from .errors import LimeTaskError, SoftTimeLimitExceeded
from .registry import resolve_task
from .validation import check_app_name, check_arguments


def execute(
    task_name: str, app_name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
    app_factory: Callable[[str], Any] | None = None, import_modules: bool = True,
    session: Mapping[str, Any] | None = None, started_at: float | None = None,
    default_soft_time_limit: float | None = None,
) -> verdicts.Verdict:
    """Run one task and return its verdict. Never raises for a task's own failure.

    `session` (a scheduled task's: userName, language) becomes the application object's
    `session`, a `lime_task.schedule.TaskSession`, where the object takes attributes.
    `started_at` (epoch seconds): when the attempt's hard timeout began to count (the runner's
    Job); the soft time limit counts from then too. None: from the call.
    `default_soft_time_limit`: the soft limit of a task that sets none (the installation's)."""
    try:
        check_app_name(app_name)
        task = resolve_task(task_name, import_modules=import_modules)
    except LimeTaskError as exc:
        return verdicts.from_exception(exc, verdicts.UNKNOWN_TASK)
    try:
        clean_args, clean_kwargs = check_arguments(args, kwargs or {})
    except LimeTaskError as exc:
        return verdicts.from_exception(exc, verdicts.INVALID_ARGUMENTS)
    try:
        app = (app_factory or load_app_factory())(app_name)
    except Exception as exc:  # noqa: BLE001 - any failure of a plug-in is the task's failure
        return verdicts.from_exception(exc, verdicts.APP_FACTORY_FAILED)
    if session:
        from .schedule import TaskSession

        try:
            app.session = TaskSession(user_name=session.get("userName"), language=session.get("language"))
        except (AttributeError, TypeError):
            pass  # an application object that takes no attributes: the session is not passed
    options = task.options
    called = time.time() if started_at is None else started_at
    try:
        soft = options.soft_time_limit if options.soft_time_limit is not None else default_soft_time_limit
        with soft_time_limit(soft, since=started_at):
            result = task.fn(app, *clean_args, **clean_kwargs)
        if inspect.iscoroutine(result):
            # An `async def` task: its coroutine runs on an event loop of its own (coroutine.py).
            result = run_coroutine(result, options.soft_time_limit, since=called)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - the task raised: its verdict
        # sys.exit() and KeyboardInterrupt in a task are the task's own failure, with a
        # verdict: never a lost worker, so never re-run under late acknowledgement.
        if isinstance(exc, SystemExit):
            return verdicts.failure(verdicts.TASK_RAISED, "SystemExit",
                                    f"the task called sys.exit({exc.code!r}); a task ends by returning or raising")
        # An exception its autoretry_for names: the operator runs it again (its policy goes along).
        retry = options.retry_policy() if options.autoretry_for and isinstance(exc, options.autoretry_for) else None
        return verdicts.from_exception(exc, retry=retry)
    return verdicts.success(result)


@contextlib.contextmanager
def soft_time_limit(seconds: float | None, since: float | None = None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this thread `seconds` after `since` (epoch seconds; None:
    now), with a real-time interval timer. A limit already past raises at once, before the body
    runs: the time went to what came before the call (scheduling, an image pull, imports).

    Only the main thread gets signals: elsewhere (a task run eagerly in a worker thread) the
    soft limit is not applied.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    waited = 0.0 if since is None else time.time() - since
    left = seconds - waited
    if left <= 0:
        raise SoftTimeLimitExceeded(
            f"the task passed its soft time limit of {seconds:g} seconds before the task was called: its attempt "
            f"started {waited:.0f} seconds ago (scheduling, image pull, imports)")

    def expired(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"the task passed its soft time limit of {seconds:g} seconds")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
