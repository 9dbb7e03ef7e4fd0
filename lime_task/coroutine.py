"""`async def` tasks: their coroutine runs to completion on an event loop of its own.

The loop lives exactly as long as the task, as with `asyncio.run`: what the task leaves behind
(tasks it started and did not await, suspended async generators, the default executor's
threads) is cancelled, closed and joined before the verdict, and the loop is closed.

The soft time limit is raised INSIDE the coroutine, at the `await` where it waits, as
`SoftTimeLimitExceeded`, which it may catch to clean up (a sync task gets it from a signal, at
the line where it runs). The loop delivers it by cancelling the task (what it awaits is
cancelled as `asyncio.timeout` would cancel it) and throwing `SoftTimeLimitExceeded`, not
`CancelledError`, into the task's own frame; the cancellation is withdrawn (`uncancel`), so the
cleanup may await freely. A coroutine that blocks the loop (`time.sleep`) gets it when it next
awaits; the hard timeout stops it regardless.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Coroutine, Generator
from typing import Any

from .errors import SoftTimeLimitExceeded


def run_coroutine(coro: Coroutine[Any, Any, Any], soft_time_limit: float | None = None,
                  since: float | None = None) -> Any:
    """Run `coro` to completion and return its result (or raise what it raised).

    `soft_time_limit` (seconds) counts from `since` (epoch seconds; None: now). Called from a
    thread whose event loop is running (`run_eager` inside async code), the coroutine runs on a
    loop of its own in a thread of its own, with the caller's context, and the caller waits."""
    since = time.time() if since is None else since
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro, soft_time_limit, since)
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="limetask-async") as pool:
        return pool.submit(context.run, _run, coro, soft_time_limit, since).result()


def _run(coro: Coroutine[Any, Any, Any], seconds: float | None, since: float) -> Any:
    if seconds:
        waited = time.time() - since
        if seconds - waited <= 0:
            coro.close()  # never started: closed, so Python does not warn that it was never awaited
            raise SoftTimeLimitExceeded(
                f"the task passed its soft time limit of {seconds:g} seconds before the task was called: its "
                f"attempt started {waited:.0f} seconds ago (scheduling, image pull, imports)")
    # asyncio.Runner is asyncio.run: on the way out it cancels the tasks left running, shuts down
    # async generators and the default executor, and closes the loop.
    with asyncio.Runner() as runner:
        return runner.run(_limited(coro, seconds, since))


async def _limited(coro: Coroutine[Any, Any, Any], seconds: float | None, since: float) -> Any:
    task = asyncio.current_task()
    assert task is not None
    waiter = _Interruptible(coro, task)
    timer = None
    if seconds:
        expired = SoftTimeLimitExceeded(f"the task passed its soft time limit of {seconds:g} seconds")
        timer = asyncio.get_running_loop().call_later(seconds - (time.time() - since), waiter.interrupt, expired)
    try:
        return await waiter
    finally:
        if timer is not None:
            timer.cancel()


class _Interruptible:
    """Awaits a coroutine step by step (as `await coro` would), and can throw an exception into
    it at the point where it waits: `interrupt` cancels the task to wake it, and the
    cancellation that arrives is replaced by the exception."""

    def __init__(self, coro: Coroutine[Any, Any, Any], task: asyncio.Task[Any]) -> None:
        self._coro = coro
        self._task = task
        self._pending: BaseException | None = None

    def interrupt(self, exc: BaseException) -> None:
        self._pending = exc
        self._task.cancel()

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                yielded = self._coro.send(value) if thrown is None else self._coro.throw(thrown)
            except StopIteration as done:
                return done.value
            value, thrown = None, None
            try:
                value = yield yielded
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on into the coroutine
                thrown = exc
                if isinstance(exc, asyncio.CancelledError) and self._pending is not None:
                    # Our own cancellation: the coroutine gets the exception it stood for instead.
                    thrown, self._pending = self._pending, None
                    self._task.uncancel()
