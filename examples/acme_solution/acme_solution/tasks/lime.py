"""Example tasks. A task returns a short summary, never the data itself."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from lime_task import task


def die_as_if_killed() -> None:
    """End the process as SIGKILL would. A process cannot SIGKILL itself when it is process 1 of
    its container (the kernel spares a namespace's init from signals sent from inside), so it
    then leaves with the exit status a SIGKILL gives."""
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(128 + signal.SIGKILL)


@task
def get_lime_company(app: Any, id: int, props: list[str]) -> str:
    """Pretend to refresh a company and its deals."""
    time.sleep(0.2)
    return f"company {id} of {app.name}: updated {len(props)} properties on 50 deals"


@task
def add(app: Any, a: float, b: float) -> float:
    return a + b


@task
def fail(app: Any, message: str = "the CRM said no") -> None:
    raise ValueError(message)


@task
def sleep(app: Any, seconds: float = 30, marker: str | None = None) -> str:
    """Sleeps; writes its pid to `marker` first, so tests can find the process."""
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(seconds)
    return f"slept {seconds}s"


@task(acks_late=True, max_attempts=3)
def flaky(app: Any, state_file: str | None = None, crash_times: int = 1) -> str:
    """Kills its own worker the first `crash_times` attempts (a lost worker), then succeeds.

    It counts earlier crashes in `state_file` when given (a file every attempt can reach),
    else by the attempt number the runner passes (LIMETASK_ATTEMPT)."""
    if state_file is None:
        count = int(os.environ.get("LIMETASK_ATTEMPT", "1")) - 1
    else:
        count = 0
        if os.path.exists(state_file):
            with open(state_file) as f:
                count = int(f.read() or 0)
        with open(state_file, "w") as f:
            f.write(str(count + 1))
    if count < crash_times:
        die_as_if_killed()
    return f"succeeded after {count} crash(es)"


@task(acks_late=True, max_attempts=3)
def sleep_first(app: Any, seconds: float = 60) -> str:
    """Sleeps on its first attempt only: a first attempt long enough for a fault to cut short,
    and a quick re-run."""
    attempt = int(os.environ.get("LIMETASK_ATTEMPT", "1"))
    if attempt == 1:
        time.sleep(seconds)
    return f"attempt {attempt} done"


@task
def hog(app: Any, megabytes: int = 256, hold: float = 30) -> str:
    """Takes `megabytes` of memory, a mebibyte at a time, and holds it (for memory limits)."""
    chunks = []
    for _ in range(megabytes):
        chunks.append(bytearray(b"\x01") * (1024 * 1024))  # written, so really resident
    time.sleep(hold)
    return f"held {len(chunks)} MiB"


@task
def crash(app: Any) -> None:
    """Dies without a verdict, as a lost worker does."""
    die_as_if_killed()


@task
def huge(app: Any, size: int = 10000) -> str:
    return "x" * size


@task
def not_json(app: Any) -> Any:
    return {1, 2, 3}


@task(timeout=2)
def slow(app: Any, seconds: float = 60) -> str:
    time.sleep(seconds)
    return "done"


@task(acks_late=True, max_attempts=3)
def exits(app: Any, code: int | None = 0, interrupt: bool = False) -> None:
    """Leaves the way a script would: sys.exit() (or KeyboardInterrupt) instead of returning."""
    if interrupt:
        raise KeyboardInterrupt
    sys.exit(code)


def undecorated(app: Any) -> str:
    return "I am not a task"


@task
def noop(app: Any) -> str:
    """Does nothing: for measuring what the system itself costs."""
    return "ok"


@task(autoretry_for=(ConnectionError,), max_retries=2, retry_backoff=1, retry_jitter=False)
def unreliable(app: Any, failures: int = 1) -> str:
    """The CRM hangs up on the first `failures` attempts (ConnectionError, which the task retries
    with a backoff of 1, 2, ... seconds, twice at most), then answers."""
    attempt = int(os.environ.get("LIMETASK_ATTEMPT", "1"))
    if attempt <= failures:
        raise ConnectionError(f"the CRM hung up on attempt {attempt}")
    return f"synced on attempt {attempt}"


@task(soft_time_limit=15, timeout=90)
def soft_limited(app: Any, seconds: float = 45) -> str:
    """Works past its soft time limit, is told so (SoftTimeLimitExceeded), and cleans up. The
    limit counts from the attempt's Job start (as the timeout does), so it leaves room for the
    pod to start."""
    from lime_task import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "stopped at the soft time limit and cleaned up"
    return f"slept {seconds}s"


@task(soft_time_limit=60, timeout=120)
def soft_limited_minute(app: Any, seconds: float = 0) -> str:
    """Sleeps within a soft time limit far longer than any start-up: the limit never fires."""
    time.sleep(seconds)
    return f"slept {seconds}s"


@task
async def fetch_deals(app: Any, count: int = 3, seconds: float = 0.1) -> str:
    """An async task: fetches `count` deals at once (each takes `seconds`), as an async CRM
    client would."""
    async def fetch(deal: int) -> int:
        await asyncio.sleep(seconds)
        return deal

    deals = await asyncio.gather(*(fetch(d) for d in range(count)))
    return f"fetched {len(deals)} deals of {app.name} at once"


@task(soft_time_limit=15, timeout=90)
async def soft_limited_async(app: Any, seconds: float = 45) -> str:
    """soft_limited, async: SoftTimeLimitExceeded arrives at the await, and the cleanup awaits too."""
    from lime_task import SoftTimeLimitExceeded

    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0.1)  # e.g. save progress
        return "stopped at the soft time limit and cleaned up (async)"
    return f"slept {seconds}s"


@task
def whoami(app: Any, note: str = "") -> str:
    """Says which application and session (a scheduled task's TaskSession) it runs with."""
    session = getattr(app, "session", None)
    who = f"{session.user_name} ({session.language})" if session is not None else "no session"
    return f"{app.name} as {who}{': ' + note if note else ''}"
