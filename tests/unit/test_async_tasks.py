"""`async def` tasks: run to completion on a loop of their own, in the runner and in `run_eager`,
with the soft time limit raised inside the coroutine and the loop closed as `asyncio.run` closes it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from lime_task import FAILURE, SUCCESS, SoftTimeLimitExceeded, Task, run_eager, task
from lime_task.coroutine import run_coroutine
from lime_task.eager import execute

runner = importlib.import_module("limetask_runner.main")

SEEN: dict[str, Any] = {}


@task(name="async_tests.double")
async def double(app: Any, x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@task(name="async_tests.fails")
async def fails(app: Any) -> None:
    await asyncio.sleep(0)
    raise LookupError("deal 7 is gone")


@task(name="async_tests.not_json")
async def not_json(app: Any) -> Any:
    await asyncio.sleep(0)
    return {1, 2}


async def wait_for_crm(seconds: float) -> str:
    """A coroutine the task awaits: the soft limit arrives here, at the innermost await."""
    await asyncio.sleep(seconds)
    return "answered"


@task(name="async_tests.soft", soft_time_limit=0.3, timeout=60)
async def soft(app: Any, catch: bool) -> str:
    try:
        return await wait_for_crm(30)
    except SoftTimeLimitExceeded as exc:
        if not catch:
            raise
        SEEN["frame"] = exc.__traceback__.tb_next is not None  # raised below the task, in wait_for_crm
        SEEN["cancelling"] = asyncio.current_task().cancelling()  # type: ignore[union-attr]
        await asyncio.sleep(0.01)  # cleanup may await: the cancellation was withdrawn
        return "cleaned up"


@task(name="async_tests.soft_gather", soft_time_limit=0.3, timeout=60)
async def soft_gather(app: Any) -> str:
    """What the task awaited is cancelled (as asyncio.timeout cancels it); the task gets the soft limit."""
    child = asyncio.ensure_future(wait_for_crm(30))
    try:
        await child
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0)
        return f"child cancelled: {child.cancelled()}"
    return "no limit"


@task(name="async_tests.litter")
async def litter(app: Any) -> str:
    """Leaves behind a task, a suspended async generator and a thread of the default executor."""
    loop = asyncio.get_running_loop()
    SEEN["loop"] = loop

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            SEEN["cancelled"] = True
            raise

    async def ticks() -> Any:
        try:
            while True:
                yield 1
                await asyncio.sleep(0)
        finally:
            SEEN["generator closed"] = True

    SEEN["leftover"] = asyncio.create_task(forever())
    gen = ticks()
    await gen.__anext__()
    SEEN["gen"] = gen
    SEEN["thread"] = await loop.run_in_executor(None, threading.current_thread)
    await asyncio.sleep(0)
    return "left a mess"


@pytest.fixture(autouse=True)
def registered() -> None:
    SEEN.clear()
    from lime_task.registry import _REGISTRY

    for t in (double, fails, not_json, soft, soft_gather, litter):
        _REGISTRY[t.name] = t


def test_the_decorator_takes_an_async_function() -> None:
    assert isinstance(double, Task) and double.name == "async_tests.double"
    assert asyncio.run(double("app", 4)) == 8  # called directly, it is the coroutine function


def test_run_eager_runs_the_coroutine_to_completion() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        status = run_eager("async_tests.double", "app", 21)
    assert status.status == SUCCESS and status.result == 42


def test_an_exception_is_a_failure_with_its_type() -> None:
    status = run_eager("async_tests.fails", "app")
    assert status.status == FAILURE and status.error is not None
    assert (status.error.type, status.error.message, status.error.reason) == ("LookupError", "deal 7 is gone",
                                                                              "TaskRaised")


def test_a_result_that_is_not_json_is_still_refused() -> None:
    verdict = execute("async_tests.not_json", "app", import_modules=False)
    assert verdict.state == FAILURE and verdict.error["reason"] == "ResultNotJSON"


def test_the_soft_time_limit_is_raised_inside_the_coroutine_and_can_be_caught() -> None:
    caught = execute("async_tests.soft", "app", [True], import_modules=False)
    assert caught.state == SUCCESS and caught.result == "cleaned up"  # not "answered": the limit stopped it
    assert SEEN == {"frame": True, "cancelling": 0}


def test_an_uncaught_soft_time_limit_is_the_tasks_failure() -> None:
    raised = execute("async_tests.soft", "app", [False], import_modules=False)
    assert raised.state == FAILURE and raised.error["type"] == "SoftTimeLimitExceeded"
    assert raised.error["message"] == "the task passed its soft time limit of 0.3 seconds"


def test_what_the_coroutine_awaited_is_cancelled_at_the_soft_limit() -> None:
    verdict = execute("async_tests.soft_gather", "app", import_modules=False)
    assert verdict.state == SUCCESS and verdict.result == "child cancelled: True"


def test_a_soft_limit_past_before_the_call_never_starts_the_coroutine() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        late = execute("async_tests.soft", "app", [True], import_modules=False, started_at=time.time() - 30)
    assert late.state == FAILURE and late.error["type"] == "SoftTimeLimitExceeded"
    assert "before the task was called" in late.error["message"] and SEEN == {}


def test_the_loop_is_closed_as_asyncio_run_closes_it() -> None:
    verdict = execute("async_tests.litter", "app", import_modules=False)
    assert verdict.state == SUCCESS and verdict.result == "left a mess"
    assert SEEN["loop"].is_closed()
    assert SEEN["cancelled"] is True and SEEN["leftover"].cancelled()
    assert SEEN["generator closed"] is True
    SEEN["thread"].join(timeout=10)  # the default executor was shut down: its thread has ended
    assert not SEEN["thread"].is_alive()


def test_each_run_has_a_loop_of_its_own() -> None:
    execute("async_tests.litter", "app", import_modules=False)
    first = SEEN["loop"]
    execute("async_tests.litter", "app", import_modules=False)
    assert SEEN["loop"] is not first and first.is_closed()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # none is left running or set in this thread


def test_run_eager_inside_a_running_loop() -> None:
    """Eager mode called from async code: the coroutine runs on a loop of its own (another
    thread), and the caller's loop is left alone."""
    async def caller() -> Any:
        return run_eager("async_tests.double", "app", 5), asyncio.get_running_loop()

    status, loop = asyncio.run(caller())
    assert status.status == SUCCESS and status.result == 10
    assert loop.is_closed()  # asyncio.run closed its own; the task's was another
    assert not SEEN


def test_run_coroutine_soft_limit_outside_the_main_thread() -> None:
    """Signals reach only the main thread, but the loop delivers an async task's soft limit anywhere."""
    out: dict[str, Any] = {}

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except SoftTimeLimitExceeded:
            return "stopped"
        return "slept"

    def body() -> None:
        out["result"] = run_coroutine(slow(), soft_time_limit=0.2)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(timeout=20)
    assert out == {"result": "stopped"}


# --- in the runner -------------------------------------------------------------------------

SOLUTION = '''
import asyncio
from lime_task import SoftTimeLimitExceeded, task

@task
async def fetch(app, deal):
    await asyncio.sleep(0.01)
    return {"deal": deal, "app": app.name}

@task
async def broken(app):
    await asyncio.sleep(0)
    raise TimeoutError("the CRM did not answer")

@task
async def odd(app):
    return object()

@task(soft_time_limit=1, timeout=120)
async def soft(app):
    try:
        await asyncio.sleep(60)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0)
        return "cleaned up"
    return "slept"
'''


@pytest.fixture
def solution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"async_solution_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOLUTION))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def runner_env(module: str, task_name: str, *args: object) -> dict[str, str]:
    return {"LIMETASK_TASK_ID": "t-1", "LIMETASK_TASK": f"{module}.{task_name}", "LIMETASK_APP": "acme",
            "LIMETASK_ARGS": json.dumps(list(args)), "LIMETASK_KWARGS": "{}", "LIMETASK_ATTEMPT": "1",
            "LIMETASK_IMPORTS": module}


def test_the_runner_runs_async_tasks(solution: str) -> None:
    assert runner.run(runner_env(solution, "fetch", 7)).result == {"deal": 7, "app": "acme"}
    broken = runner.run(runner_env(solution, "broken"))
    assert broken.state == FAILURE and broken.error["type"] == "TimeoutError"
    odd = runner.run(runner_env(solution, "odd"))
    assert odd.state == FAILURE and odd.error["reason"] == "ResultNotJSON"


def test_python_m_limetask_runner_with_an_async_task(solution: str, tmp_path: Path) -> None:
    """The real process: the soft limit reaches the coroutine in the runner's main thread (where
    the sync variant's signal also lands), and the verdict and exit status are as for any task."""
    path = tmp_path / "termination-log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LIMETASK_")}
    child_env.update(runner_env(solution, "soft"), LIMETASK_VERDICT_PATH=str(path),
                     PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "limetask_runner"], env=child_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text()) == {"state": "SUCCESS", "result": "cleaned up"}
    child_env.update(runner_env(solution, "broken"))
    failed = subprocess.run([sys.executable, "-m", "limetask_runner"], env=child_env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(path.read_text())["error"] == {"type": "TimeoutError", "message": "the CRM did not answer",
                                                     "reason": "TaskRaised"}


def test_the_example_solutions_async_task() -> None:
    status = run_eager("acme_solution.tasks.lime.fetch_deals", "acme", 4, 0.01)
    assert status.status == SUCCESS and status.result == "fetched 4 deals of acme at once"


@task(name="async_tests.exits")
async def exits(app: Any, interrupt: bool = False) -> None:
    await asyncio.sleep(0)
    if interrupt:
        raise KeyboardInterrupt
    sys.exit(3)


@pytest.mark.parametrize("interrupt, kind", [(False, "SystemExit"), (True, "KeyboardInterrupt")])
def test_exit_and_interrupt_in_a_coroutine_are_the_tasks_own_failure(interrupt: bool, kind: str) -> None:
    from lime_task.registry import _REGISTRY

    _REGISTRY[exits.name] = exits
    verdict = execute("async_tests.exits", "app", [interrupt], import_modules=False)
    assert verdict.state == FAILURE and verdict.error["type"] == kind and verdict.error["reason"] == "TaskRaised"
