"""Run one attempt of one task and write its verdict to the termination message.

The operator sets the environment:
  LIMETASK_TASK_ID, LIMETASK_TASK (dotted name), LIMETASK_APP, LIMETASK_ARGS (JSON array),
  LIMETASK_KWARGS (JSON object), LIMETASK_ATTEMPT, LIMETASK_VERDICT_PATH (the container's
  terminationMessagePath, default /dev/termination-log), and LIMETASK_JOB_CREATED_AT (RFC 3339:
  when the operator made the attempt's Job, whose deadline counts from its start just after; the
  soft time limit counts from it too, else from the runner's own start).
Task modules: LIMETASK_IMPORTS (comma-separated), else the modules that installed packages
declare as `limetask.tasks` entry points; and those a solution's get_task_modules() lists
(lime_task.solutions says where solutions are found). A task name is looked up only among the tasks those
modules register: a name never makes the runner import anything, and a runner with no task
modules refuses every task. Optional: LIMETASK_APP_FACTORY (`module:callable` building the
application object); LIMETASK_SESSION (a scheduled task's session, JSON: the application
object's `session`, a lime_task.schedule.TaskSession); LIMETASK_DEFAULT_SOFT_TIME_LIMIT (seconds:
the soft time limit of a task whose @task sets none; the installation's default); LIMETASK_TRACEPARENT
and LIMETASK_TRACESTATE (the sender's W3C trace context, which the attempt's span links to; see
tracing.py).

Exit status: 0 with a SUCCESS verdict, 1 with FAILURE, 2 when the verdict cannot be written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

from lime_task import verdict as verdicts
from lime_task.eager import execute
from lime_task.errors import TaskModuleError
from lime_task.registry import ENTRY_POINT_GROUP, declared_task_modules
from lime_task.resource import SUCCESS
from lime_task.solutions import import_task_modules, imports_from_env
from lime_task.solutions import sources as task_sources
from lime_task.validation import parse_time

from . import tracing

LOG = logging.getLogger("limetask.runner")
DEFAULT_VERDICT_PATH = "/dev/termination-log"
ENV = ("LIMETASK_TASK_ID", "LIMETASK_TASK", "LIMETASK_APP", "LIMETASK_ARGS", "LIMETASK_KWARGS",
       "LIMETASK_ATTEMPT", "LIMETASK_VERDICT_PATH", "LIMETASK_APP_FACTORY", "LIMETASK_IMPORTS", "LIMETASK_SESSION",
       "LIMETASK_JOB_CREATED_AT", "LIMETASK_DEFAULT_SOFT_TIME_LIMIT", "LIMETASK_TRACEPARENT",
       "LIMETASK_TRACESTATE")


def deadline_start(env: Mapping[str, str], process_started: float | None) -> float | None:
    """When the attempt's hard timeout began to count, as near as the runner can tell (epoch
    seconds): the Job's creation, which the operator passes (its deadline runs from its start,
    just after, and the pod's from later still), else the runner's own start. The earlier of the
    two, so that a node clock behind the operator's never makes the soft limit late."""
    made = parse_time(env.get("LIMETASK_JOB_CREATED_AT"))
    known = [t for t in (made.timestamp() if made is not None else None, process_started) if t is not None]
    return min(known) if known else None


def run(env: Mapping[str, str], process_started: float | None = None) -> verdicts.Verdict:
    """The verdict of one attempt, from the runner's environment (`process_started`: when the
    runner's process began, epoch seconds)."""
    task_name = env.get("LIMETASK_TASK", "")
    app_name = env.get("LIMETASK_APP", "")
    try:
        args = json.loads(env.get("LIMETASK_ARGS") or "[]")
        kwargs = json.loads(env.get("LIMETASK_KWARGS") or "{}")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError("LIMETASK_ARGS must be a JSON array and LIMETASK_KWARGS a JSON object")
    except ValueError as exc:
        return verdicts.from_exception(exc, verdicts.INVALID_ARGUMENTS)
    roots, solutions = task_sources(env, None if imports_from_env(env) else declared_task_modules())
    try:
        imported = import_task_modules(roots, solutions)
    except TaskModuleError as exc:  # reported as the verdict, with the type of what failed
        return verdicts.failure(verdicts.UNKNOWN_TASK, type(exc.__cause__ or exc).__name__, str(exc))
    if not imported:
        return verdicts.failure(
            verdicts.UNKNOWN_TASK, "UnknownTaskError",
            f"task {task_name!r} refused: this runner has no task modules. List them in LIMETASK_IMPORTS "
            f"(the chart's runner.env), declare them as '{ENTRY_POINT_GROUP}' entry points of the "
            f"solution package, or return them from the solution's get_task_modules(); a task name alone "
            f"never imports anything")
    factory = None
    if env.get("LIMETASK_APP_FACTORY"):
        from lime_task.application import load_app_factory
        try:
            factory = load_app_factory(env["LIMETASK_APP_FACTORY"])
        except Exception as exc:  # noqa: BLE001
            return verdicts.from_exception(exc, verdicts.APP_FACTORY_FAILED)
    session = None
    if env.get("LIMETASK_SESSION"):
        try:
            session = json.loads(env["LIMETASK_SESSION"])
        except ValueError:
            session = None
    return execute(task_name, app_name, args, kwargs, app_factory=factory, import_modules=False,
                   session=session if isinstance(session, dict) else None,
                   started_at=deadline_start(env, process_started),
                   default_soft_time_limit=default_soft_time_limit(env))


def default_soft_time_limit(env: Mapping[str, str]) -> float | None:
    """The installation's soft time limit for a task that sets none (the operator passes it only
    when it comes before the attempt's hard limit); anything but a positive number is none."""
    try:
        seconds = float(env.get("LIMETASK_DEFAULT_SOFT_TIME_LIMIT") or 0)
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def write_verdict(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def main(process_started: float | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = os.environ
    started = time.monotonic()
    LOG.info("task %s (%s) attempt %s for app %s", env.get("LIMETASK_TASK_ID", "?"), env.get("LIMETASK_TASK", "?"),
             env.get("LIMETASK_ATTEMPT", "1"), env.get("LIMETASK_APP", "?"))
    with tracing.task_span(env) as record:  # OpenTelemetry, when OTEL_* asks for it (tracing.py)
        verdict = run(env, process_started)
        record(verdict)
    text = verdict.to_json()
    path = env.get("LIMETASK_VERDICT_PATH") or DEFAULT_VERDICT_PATH
    try:
        write_verdict(path, text)
    except OSError as exc:
        LOG.error("cannot write the verdict to %s: %s", path, exc)
        print(text, file=sys.stderr)
        return 2
    finally:
        tracing.flush()  # after the verdict: a slow collector never costs one
    took = time.monotonic() - started
    if verdict.state == SUCCESS:
        LOG.info("SUCCESS in %.3fs", took)
        return 0
    LOG.error("FAILURE in %.3fs: %s: %s (%s)", took, verdict.error.get("type"), verdict.error.get("message"),
              verdict.error.get("reason"))
    return 1
