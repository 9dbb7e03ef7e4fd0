"""The runner: environment in, verdict out (file and exit code)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lime_task import verdict as v
from lime_task.resource import FAILURE, MAX_VERDICT_BYTES, SUCCESS

# The package exports the function `main`, which hides the module of the same name.
runner = importlib.import_module("limetask_runner.main")

RUNNER_ENV = ("LIMETASK_TASK_ID", "LIMETASK_TASK", "LIMETASK_APP", "LIMETASK_ARGS", "LIMETASK_KWARGS",
              "LIMETASK_ATTEMPT", "LIMETASK_VERDICT_PATH", "LIMETASK_APP_FACTORY", "LIMETASK_IMPORTS")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # run() falls back to os.environ for the app factory: keep the test process neutral.
    for key in RUNNER_ENV:
        monkeypatch.delenv(key, raising=False)
    yield


def env(task: str, *args: object, app: str = "acme", **kwargs: object) -> dict[str, str]:
    return {
        "LIMETASK_TASK_ID": "t-1", "LIMETASK_TASK": task, "LIMETASK_APP": app,
        "LIMETASK_ARGS": json.dumps(list(args)), "LIMETASK_KWARGS": json.dumps(kwargs),
        "LIMETASK_ATTEMPT": "1",
    }


PLUGIN = '''
from lime_task import task

class SolutionApp:
    def __init__(self, name):
        self.name = name
        self.kind = "solution"

def make_app(name):
    return SolutionApp(name)

def broken_factory(name):
    raise ConnectionError("the CRM database is down")

NOT_CALLABLE = 3

@task
def describe_app(app, suffix=""):
    return {"type": type(app).__name__, "name": app.name + suffix,
            "kind": getattr(app, "kind", None)}
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"plugin_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --- run(env) ---------------------------------------------------------------------------------

def test_success() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.add", 2, 3.5))
    assert verdict == v.Verdict(SUCCESS, result=5.5)


def test_success_with_keyword_arguments_and_default_application() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.get_lime_company", 1001, app="my-app",
                             props=["name", "phone"]))
    assert verdict.state == SUCCESS
    # The default application object carries the name it was built from.
    assert verdict.result == "company 1001 of my-app: updated 2 properties on 50 deals"


def test_task_that_raises() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.fail", message="no such deal"))
    assert verdict.state == FAILURE
    assert verdict.error == {"type": "ValueError", "message": "no such deal", "reason": "TaskRaised"}


def test_result_not_json_and_too_large() -> None:
    assert runner.run(env("acme_solution.tasks.lime.not_json")).error["reason"] == "ResultNotJSON"
    big = runner.run(env("acme_solution.tasks.lime.huge", size=10_000))
    assert big.state == FAILURE and big.error["reason"] == "ResultTooLarge"
    assert len(big.to_json().encode()) <= MAX_VERDICT_BYTES


def test_unknown_task() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.nope"))
    assert verdict.state == FAILURE
    assert verdict.error["reason"] == "UnknownTask"
    assert verdict.error["type"] == "UnknownTaskError"


@pytest.mark.parametrize("name", ["os.system", "subprocess.call", "acme_solution.tasks.lime.undecorated"])
def test_non_tasks_are_refused(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    verdict = runner.run(env(name, f"touch {marker}"))
    assert verdict.state == FAILURE
    assert verdict.error["reason"] == "UnknownTask"
    assert "no task of that name is registered" in verdict.error["message"]
    assert not marker.exists()


@pytest.mark.parametrize("name, module", [("this.x", "this"), ("unittest.__main__.x", "unittest.__main__"),
                                          ("antigravity.x", "antigravity")])
def test_a_name_never_imports_its_module(name: str, module: str, tmp_path: Path) -> None:
    """Hostile input: `this.x` printed the Zen of Python, `unittest.__main__.x` ran test discovery."""
    verdict_path = tmp_path / "verdict"
    code = (f"import runpy, sys; sys.argv = ['runner']; "
            f"rc = __import__('limetask_runner.main', fromlist=['main']).main(); "
            f"print('IMPORTED' if {module!r} in sys.modules else 'CLEAN'); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env(name), "LIMETASK_VERDICT_PATH": str(verdict_path)})
    assert proc.returncode == 1
    assert proc.stdout.strip() == "CLEAN", proc.stdout
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr
    verdict = json.loads(verdict_path.read_text())
    assert verdict["error"]["reason"] == "UnknownTask"


def test_a_runner_without_task_modules_refuses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "declared_task_modules", lambda: [])
    verdict = runner.run(env("acme_solution.tasks.lime.add", 1, 2))
    assert verdict.error["reason"] == "UnknownTask"
    assert "LIMETASK_IMPORTS" in verdict.error["message"] and "entry points" in verdict.error["message"]


def test_declared_task_modules_are_the_default() -> None:
    # acme_solution declares acme_solution.tasks.lime as a `limetask.tasks` entry point.
    assert runner.run(env("acme_solution.tasks.lime.add", 1, 2)) == v.Verdict(SUCCESS, result=3)


def test_invalid_task_name_is_unknown_task() -> None:
    verdict = runner.run(env("os.*"))
    assert verdict.error["reason"] == "UnknownTask"
    assert verdict.error["type"] == "InvalidTaskError"


@pytest.mark.parametrize("args, kwargs", [
    ("[1, 2", "{}"),          # not JSON
    ("{}", "{}"),             # not an array
    ("[]", "[1]"),            # not an object
    ("[]", "{bad}"),
    ("[NaN]", "{}"),          # JSON but not finite: refused by the argument check
])
def test_bad_arguments_are_invalid_arguments(args: str, kwargs: str) -> None:
    e = env("acme_solution.tasks.lime.add")
    e.update(LIMETASK_ARGS=args, LIMETASK_KWARGS=kwargs)
    verdict = runner.run(e)
    assert verdict.state == FAILURE
    assert verdict.error["reason"] == "InvalidArguments"


def test_missing_arguments_default_to_none() -> None:
    e = env("acme_solution.tasks.lime.fail")
    del e["LIMETASK_ARGS"], e["LIMETASK_KWARGS"]
    verdict = runner.run(e)
    # The task ran with its defaults: it raised its own error.
    assert verdict.error == {"type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}


def test_wrong_argument_count_is_the_tasks_failure() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.add", 1))
    assert verdict.error["type"] == "TypeError"
    assert verdict.error["reason"] == "TaskRaised"


def test_invalid_app_name() -> None:
    verdict = runner.run(env("acme_solution.tasks.lime.add", 1, 2, app="-bad-"))
    assert verdict.state == FAILURE
    assert "application name" in verdict.error["message"]


def test_app_factory_plugin(plugin: str) -> None:
    e = env(f"{plugin}.describe_app", app="lime-crm", suffix="!")
    e["LIMETASK_APP_FACTORY"] = f"{plugin}:make_app"
    assert runner.run(e) == v.Verdict(SUCCESS, result={"type": "SolutionApp", "name": "lime-crm!",
                                                       "kind": "solution"})


def test_without_factory_the_default_application_is_used(plugin: str) -> None:
    verdict = runner.run({**env(f"{plugin}.describe_app", app="lime-crm"), "LIMETASK_IMPORTS": plugin})
    assert verdict.result == {"type": "Application", "name": "lime-crm", "kind": None}


@pytest.mark.parametrize("spec, words", [
    ("{plugin}:broken_factory", ["ConnectionError", "the CRM database is down"]),
    ("{plugin}:missing", ["is not callable"]),
    ("{plugin}:NOT_CALLABLE", ["is not callable"]),
    ("{plugin}", ["module:callable"]),
    ("no_such_module_xyz:make", ["ModuleNotFoundError", "no_such_module_xyz"]),
])
def test_app_factory_failures(plugin: str, spec: str, words: list[str]) -> None:
    e = env(f"{plugin}.describe_app")
    e["LIMETASK_APP_FACTORY"] = spec.format(plugin=plugin)
    verdict = runner.run(e)
    assert verdict.state == FAILURE
    assert verdict.error["reason"] == "ApplicationFailed"
    text = f"{verdict.error['type']}: {verdict.error['message']}"
    for word in words:
        assert word in text


def test_imports_mode(plugin: str) -> None:
    e = env(f"{plugin}.describe_app", app="a1")
    e["LIMETASK_IMPORTS"] = f" {plugin} , "
    assert runner.run(e).result == {"type": "Application", "name": "a1", "kind": None}


def test_imports_mode_never_imports_by_name(plugin: str, tmp_path: Path) -> None:
    other = f"other_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{other}.py").write_text("from lime_task import task\n@task\ndef t(app):\n    return 1\n")
    e = env(f"{other}.t")
    e["LIMETASK_IMPORTS"] = plugin
    verdict = runner.run(e)
    assert verdict.error["reason"] == "UnknownTask"
    assert "registered" in verdict.error["message"]
    assert other not in sys.modules
    # Nor without LIMETASK_IMPORTS: then only the declared task modules are imported.
    del e["LIMETASK_IMPORTS"]
    assert runner.run(e).error["reason"] == "UnknownTask"
    assert other not in sys.modules


def test_imports_mode_refuses_os_system(plugin: str) -> None:
    e = env("os.system", "true")
    e["LIMETASK_IMPORTS"] = plugin
    assert runner.run(e).error["reason"] == "UnknownTask"


def test_imports_mode_with_a_missing_module() -> None:
    e = env("acme_solution.tasks.lime.add", 1, 2)
    e["LIMETASK_IMPORTS"] = "no_such_module_abc"
    verdict = runner.run(e)
    assert verdict.error["reason"] == "UnknownTask"
    assert verdict.error["type"] == "ModuleNotFoundError"
    assert "LIMETASK_IMPORTS" in verdict.error["message"]


# --- main() -----------------------------------------------------------------------------------

def set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_main_success_writes_verdict_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "termination-log"
    set_env(monkeypatch, {**env("acme_solution.tasks.lime.add", 20, 22), "LIMETASK_VERDICT_PATH": str(path)})
    assert runner.main() == 0
    assert path.read_text() == '{"state":"SUCCESS","result":42}'


def test_main_failure_writes_verdict_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "termination-log"
    path.write_text("x" * 10_000)  # a stale, longer content is replaced, not partly overwritten
    set_env(monkeypatch, {**env("acme_solution.tasks.lime.fail"), "LIMETASK_VERDICT_PATH": str(path)})
    assert runner.main() == 1
    assert json.loads(path.read_text()) == {"state": "FAILURE", "error": {
        "type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}}


def test_main_unknown_task_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "verdict"
    set_env(monkeypatch, {**env("os.system", "true"), "LIMETASK_VERDICT_PATH": str(path)})
    assert runner.main() == 1
    assert v.parse(path.read_text()).error["reason"] == "UnknownTask"  # type: ignore[union-attr]


def test_main_exits_2_when_the_verdict_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing-dir" / "verdict"
    set_env(monkeypatch, {**env("acme_solution.tasks.lime.add", 1, 1), "LIMETASK_VERDICT_PATH": str(path)})
    assert runner.main() == 2
    assert '{"state":"SUCCESS","result":2}' in capsys.readouterr().err


def test_python_m_limetask_runner(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    child_env = {k: v for k, v in os.environ.items() if k not in RUNNER_ENV}
    child_env.update(env("acme_solution.tasks.lime.add", 2, 2))
    child_env["LIMETASK_VERDICT_PATH"] = str(path)
    ok = subprocess.run([sys.executable, "-m", "limetask_runner"], env=child_env, capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(path.read_text()) == {"state": "SUCCESS", "result": 4}
    assert "SUCCESS" in ok.stderr  # the log line

    child_env.update(env("acme_solution.tasks.lime.fail", "nope"))
    failed = subprocess.run([sys.executable, "-m", "limetask_runner"], env=child_env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(path.read_text())["error"] == {"type": "ValueError", "message": "nope",
                                                     "reason": "TaskRaised"}


@pytest.mark.parametrize("kwargs, words", [({"code": 0}, "sys.exit(0)"), ({"code": 3}, "sys.exit(3)"),
                                           ({"code": None}, "sys.exit(None)"), ({"interrupt": True}, "")])
def test_exit_and_interrupt_are_the_tasks_own_failure(kwargs: dict[str, object], words: str, tmp_path: Path) -> None:
    """sys.exit() or KeyboardInterrupt in a task: a FAILURE verdict, exit 1, never a lost worker."""
    verdict_path = tmp_path / "verdict"
    proc = subprocess.run([sys.executable, "-m", "limetask_runner"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env("acme_solution.tasks.lime.exits", **kwargs),
                               "LIMETASK_VERDICT_PATH": str(verdict_path)})
    assert proc.returncode == 1, proc.stderr
    verdict = json.loads(verdict_path.read_text())
    assert verdict["state"] == FAILURE and verdict["error"]["reason"] == "TaskRaised"
    assert verdict["error"]["type"] == ("KeyboardInterrupt" if kwargs.get("interrupt") else "SystemExit")
    assert words in verdict["error"]["message"]


def test_sigterm_ends_the_runner_at_once_with_no_verdict(tmp_path: Path) -> None:
    """In a container the runner is process 1, which the kernel spares from signals it has no
    handler for: the runner's own handler ends it on SIGTERM (exit status 143, as the signal
    would), from its very start and without writing a verdict."""
    import signal
    import time

    path = tmp_path / "termination-log"
    child_env = {k: v for k, v in os.environ.items() if k not in RUNNER_ENV}
    child_env.update(env("acme_solution.tasks.lime.sleep", 60))
    child_env["LIMETASK_VERDICT_PATH"] = str(path)
    proc = subprocess.Popen([sys.executable, "-m", "limetask_runner"], env=child_env, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while "attempt" not in proc.stderr.readline():  # the runner's first log line: the task runs
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        # A process that relied on the default action would end with -15 (killed by the signal);
        # process 1 of a container would not end at all.
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not path.exists()


def test_the_soft_time_limit_counts_from_the_jobs_creation_the_operator_passes(tmp_path: Path) -> None:
    """The Job's deadline counts from its start, before the pod is scheduled and its image pulled:
    a soft time limit that passed meanwhile ends the attempt before the task is called, as
    SoftTimeLimitExceeded, rather than the task running into the hard deadline."""
    import datetime as dt

    path = tmp_path / "termination-log"
    made = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    child_env = {k: v for k, v in os.environ.items() if k not in RUNNER_ENV}
    child_env.update(env("acme_solution.tasks.lime.soft_limited", 0))
    child_env.update(LIMETASK_VERDICT_PATH=str(path), LIMETASK_JOB_CREATED_AT=made.isoformat().replace("+00:00", "Z"))
    late = subprocess.run([sys.executable, "-m", "limetask_runner"], env=child_env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert late.returncode == 1, late.stderr
    verdict = json.loads(path.read_text())
    assert verdict["error"]["type"] == "SoftTimeLimitExceeded" and "before the task was called" in verdict["error"][
        "message"]
    # Without it (a Job Kueue admits later, say), the soft limit counts from the runner's start
    # (a task whose limit is far beyond any start-up time, so that a loaded machine cannot pass it).
    del child_env["LIMETASK_JOB_CREATED_AT"]
    child_env.update(env("acme_solution.tasks.lime.soft_limited_minute", 0))
    on_time = subprocess.run([sys.executable, "-m", "limetask_runner"], env=child_env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert on_time.returncode == 0, on_time.stderr
    assert json.loads(path.read_text()) == {"state": "SUCCESS", "result": "slept 0s"}


def test_the_installations_soft_time_limit_applies_to_a_task_that_sets_none() -> None:
    import datetime as dt

    made = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    # A task with no soft limit of its own: the default, already passed, ends it before it is called.
    late = env("acme_solution.tasks.lime.add", 1, 2)
    late.update(LIMETASK_JOB_CREATED_AT=made, LIMETASK_DEFAULT_SOFT_TIME_LIMIT="60")
    verdict = runner.run(late)
    assert verdict.error["type"] == "SoftTimeLimitExceeded" and "soft time limit of 60 seconds" in verdict.error[
        "message"]
    # Without the default, the same task runs.
    del late["LIMETASK_DEFAULT_SOFT_TIME_LIMIT"]
    assert runner.run(late).result == 3
    # The task's own soft limit wins over the default (its own, an hour, has not passed).
    from lime_task import task

    @task(name="unit.patient", soft_time_limit=3600)
    def patient(app: object) -> str:
        return "on time"

    own = env("unit.patient")
    own.update(LIMETASK_JOB_CREATED_AT=made, LIMETASK_DEFAULT_SOFT_TIME_LIMIT="60")
    assert runner.run(own).result == "on time"


@pytest.mark.parametrize("value, expect", [("30", 30.0), ("1.5", 1.5), ("", None), ("0", None), ("-3", None),
                                           ("soon", None), ("inf", None), ("nan", None)])
def test_the_default_soft_time_limit_from_the_environment(value: str, expect: float | None) -> None:
    assert runner.default_soft_time_limit({"LIMETASK_DEFAULT_SOFT_TIME_LIMIT": value}) == expect


@pytest.mark.parametrize("created, started, expect", [
    ("2026-05-01T10:00:00Z", 1777629700.0, 1777629600.0),  # the Job's creation, before the runner's start
    ("2026-05-01T10:00:00Z", 1777629500.0, 1777629500.0),  # a node clock behind the operator's: the earlier
    ("not a time", 1777629700.0, 1777629700.0),
    (None, 1777629700.0, 1777629700.0),
    (None, None, None),
])
def test_when_the_deadline_started(created: str | None, started: float | None, expect: float | None) -> None:
    values = {"LIMETASK_JOB_CREATED_AT": created} if created else {}
    assert runner.deadline_start(values, started) == expect
