"""`@task`: the registry of functions that may run as tasks.

Only functions registered here can ever run. A task name resolves by importing its module
and looking the attribute up, and the result must be a registered task: `os.system`, a
module, a class or an undecorated function are refused (see Celery's CVE-2021-23727).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .errors import InvalidTaskError, UnknownTaskError
from .resource import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_CEILING
from .validation import check_memory_on_oom, check_priority, check_queue, check_task_name

P = ParamSpec("P")
R = TypeVar("R")


MAX_RETRIES_CEILING = 50
DEFAULT_RETRY_DELAY = 180  # seconds between retries without a backoff (Celery's default_retry_delay)


@dataclass(frozen=True)
class TaskOptions:
    """How a task runs: acknowledgement, attempts, time limits, its retry policy and its queue."""

    acks_late: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: int | None = None
    # Celery's retry policy: an exception of these types runs the task again as a new attempt,
    # after a delay, at most max_retries times; any other exception is never re-run.
    autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries: int = 3
    # False: default_retry_delay between tries; True or a number n: exponential, n * 2**k seconds
    # before retry k + 1 (True is 1), at most retry_backoff_max; retry_jitter picks a random
    # delay up to that (as Celery does, to spread a thundering herd).
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    default_retry_delay: float = DEFAULT_RETRY_DELAY
    # The task gets a SoftTimeLimitExceeded it can catch after this many seconds.
    soft_time_limit: float | None = None
    # The queue (Lime's quality of service, e.g. "asap" or "background") that limits how many such
    # tasks run at once; None is the default queue. Among waiting tasks, higher priority starts first.
    qos: str | None = None
    priority: int = 0
    # Memory for the attempts after OOMKilled ones: the attempt after j of them has step j as its
    # memory request and limit; after the last step is OOMKilled too, the task fails (OOMKilled).
    # Each step is a Kubernetes quantity, above the one before. Empty: an OOMKilled attempt is a
    # lost worker, as any other.
    memory_on_oom: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.acks_late, bool):
            raise InvalidTaskError(f"acks_late must be True or False, got {self.acks_late!r}")
        if (not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool)
                or not 1 <= self.max_attempts <= MAX_ATTEMPTS_CEILING):
            raise InvalidTaskError(
                f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS_CEILING}, got {self.max_attempts!r}"
            )
        if self.timeout is not None and (
            not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or self.timeout < 1
        ):
            raise InvalidTaskError(f"timeout must be a whole number of seconds >= 1, got {self.timeout!r}")
        kinds = self.autoretry_for
        if not isinstance(kinds, tuple) or not all(isinstance(k, type) and issubclass(k, BaseException)
                                                   for k in kinds):
            raise InvalidTaskError(f"autoretry_for must be a tuple of exception classes, got {kinds!r}")
        if (not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool)
                or not 0 <= self.max_retries <= MAX_RETRIES_CEILING):
            raise InvalidTaskError(f"max_retries must be an integer from 0 to {MAX_RETRIES_CEILING}, "
                                   f"got {self.max_retries!r}")
        for name in ("retry_backoff_max", "default_retry_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 7 * 86400:
                raise InvalidTaskError(f"{name} must be a number of seconds from 0 to a week, got {value!r}")
        backoff = self.retry_backoff
        if not isinstance(backoff, (bool, int, float)) or (not isinstance(backoff, bool)
                                                           and not 0 < backoff <= 86400):
            raise InvalidTaskError(f"retry_backoff must be True, False or a number of seconds, got {backoff!r}")
        if not isinstance(self.retry_jitter, bool):
            raise InvalidTaskError(f"retry_jitter must be True or False, got {self.retry_jitter!r}")
        soft = self.soft_time_limit
        if soft is not None and (isinstance(soft, bool) or not isinstance(soft, (int, float)) or not soft > 0):
            raise InvalidTaskError(f"soft_time_limit must be a number of seconds above 0, got {soft!r}")
        if soft is not None and self.timeout is not None and soft >= self.timeout:
            raise InvalidTaskError(f"soft_time_limit ({soft}) must be below timeout ({self.timeout}): the soft "
                                   f"limit warns the task before the hard one stops it")
        check_queue(self.qos)
        check_priority(self.priority)
        steps = self.memory_on_oom
        object.__setattr__(self, "memory_on_oom", () if isinstance(steps, (list, tuple)) and not steps
                           else check_memory_on_oom(steps))

    def retry_policy(self) -> dict[str, Any]:
        """The policy as the verdict carries it to the operator (which counts the retries)."""
        backoff = 1.0 if self.retry_backoff is True else float(self.retry_backoff or 0)
        return {"maxRetries": self.max_retries, "backoff": backoff, "backoffMax": float(self.retry_backoff_max),
                "delay": float(self.default_retry_delay), "jitter": self.retry_jitter}


class Task(Generic[P, R]):
    """A registered task function. Calling it calls the function, in this process."""

    def __init__(self, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name} {self.options}>"


_REGISTRY: dict[str, Task[Any, Any]] = {}


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *, acks_late: bool = False, max_attempts: int = DEFAULT_MAX_ATTEMPTS, timeout: int | None = None,
    name: str | None = None, autoretry_for: tuple[type[BaseException], ...] = (), max_retries: int = 3,
    retry_backoff: bool | float = False, retry_backoff_max: float = 600, retry_jitter: bool = True,
    default_retry_delay: float = DEFAULT_RETRY_DELAY, soft_time_limit: float | None = None,
    qos: str | None = None, priority: int = 0, memory_on_oom: Sequence[str] = (),
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[..., Any] | None = None, /, *, acks_late: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS, timeout: int | None = None, name: str | None = None,
    autoretry_for: tuple[type[BaseException], ...] = (), max_retries: int = 3, retry_backoff: bool | float = False,
    retry_backoff_max: float = 600, retry_jitter: bool = True, default_retry_delay: float = DEFAULT_RETRY_DELAY,
    soft_time_limit: float | None = None, qos: str | None = None, priority: int = 0,
    memory_on_oom: Sequence[str] = (),
) -> Any:
    """Register a function as a task. Its first argument is always the application.

    An `async def` function is a task too: the runner (and `run_eager`) runs its coroutine to
    completion on an event loop of its own, closed when the task ends (lime_task/coroutine.py).

    `acks_late=True` re-runs the task when its worker is lost, up to `max_attempts` times.
    `timeout` (seconds) ends the task with FAILURE `TimedOut`; `soft_time_limit` (seconds)
    raises `SoftTimeLimitExceeded` in the task first, which it may catch to clean up.
    `autoretry_for=(ConnectionError, ...)` runs the task again, as a new attempt, when it
    raised one of these: at most `max_retries` times, `default_retry_delay` seconds apart, or
    with `retry_backoff` exponentially (`retry_backoff_max`, `retry_jitter`), as Celery does.
    `qos="background"` puts the task in that queue (a LimeTaskQueue, which limits how many of
    its tasks run at once; None: the queue "default"); `priority` (-1000 to 1000, default 0)
    orders the tasks waiting there, higher first. `send_task(..., qos=, priority=)` overrides both.
    `memory_on_oom=["1Gi", "2Gi"]`: an attempt OOMKilled (out of memory) runs again with the next
    size as its memory request and limit, whatever the acknowledgement; once the last size is
    OOMKilled too, the task fails with reason OOMKilled. At most 5 sizes, each above the one
    before and not below the task's own memory; the installation may cap them.
    """
    options = TaskOptions(acks_late=acks_late, max_attempts=max_attempts, timeout=timeout,
                          autoretry_for=tuple(autoretry_for) if isinstance(autoretry_for, (list, tuple))
                          else autoretry_for, max_retries=max_retries, retry_backoff=retry_backoff,
                          retry_backoff_max=retry_backoff_max, retry_jitter=retry_jitter,
                          default_retry_delay=default_retry_delay, soft_time_limit=soft_time_limit,
                          qos=qos, priority=priority,
                          memory_on_oom=tuple(memory_on_oom) if isinstance(memory_on_oom, (list, tuple))
                          else memory_on_oom)  # type: ignore[arg-type]  # (anything else: refused, and said why)

    def register(f: Callable[P, R]) -> Task[P, R]:
        if not callable(f):
            raise InvalidTaskError(f"@task needs a function, got {f!r}")
        task_name = check_task_name(name or f"{f.__module__}.{f.__qualname__}")
        registered = Task(f, task_name, options)
        _REGISTRY[task_name] = registered
        return registered

    if fn is not None:
        return register(fn)
    return register


# Solution packages declare their task modules as entry points of this group, e.g. in
# pyproject.toml:  [project.entry-points."limetask.tasks"]  acme = "acme_solution.tasks.lime"
ENTRY_POINT_GROUP = "limetask.tasks"


def declared_task_modules() -> list[str]:
    """The task modules that installed packages declare (entry points `limetask.tasks`)."""
    from importlib.metadata import entry_points

    return sorted({ep.value.partition(":")[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)})


def registered_tasks() -> dict[str, Task[Any, Any]]:
    """Every task registered in this process, by name."""
    return dict(_REGISTRY)


def resolve_task(name: str, import_modules: bool = True) -> Task[Any, Any]:
    """The registered task called `name`, importing its module if needed: the module its name
    starts with, else the declared task modules (lime_task.solutions: LIMETASK_IMPORTS, entry
    points, solutions' get_task_modules()), so that a task registered under a name of its own is
    found too."""
    check_task_name(name)
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    if not import_modules:
        raise UnknownTaskError(f"unknown task {name!r}: no task of that name is registered")
    try:
        return _resolve_by_module(name)
    except UnknownTaskError as exc:
        from .errors import TaskModuleError
        from .solutions import import_task_modules, sources

        try:
            import_task_modules(*sources(os.environ))
        except TaskModuleError as declared_exc:
            raise UnknownTaskError(f"{exc}; and the declared task modules could not be imported: "
                                   f"{declared_exc}") from declared_exc
        found = _REGISTRY.get(name)
        if found is None:
            raise
        return found


def _resolve_by_module(name: str) -> Task[Any, Any]:
    parts = name.split(".")
    module = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing != module_name and not module_name.startswith(missing + "."):
                # The module exists but one of its own imports is missing: say so.
                raise UnknownTaskError(
                    f"task {name!r}: importing {module_name!r} failed: {exc}"
                ) from exc
            continue
        except Exception as exc:
            raise UnknownTaskError(f"task {name!r}: importing {module_name!r} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
        obj: Any = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        found = _REGISTRY.get(name)
        if found is not None:
            return found
        if obj is not None:
            raise UnknownTaskError(
                f"{name!r} is not a task: only functions decorated with @task can run "
                f"(found {type(obj).__name__})"
            )
        break
    if module is None:
        raise UnknownTaskError(f"unknown task {name!r}: no module of that name can be imported")
    raise UnknownTaskError(f"unknown task {name!r}: {module.__name__!r} has no task of that name")
