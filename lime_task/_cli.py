"""`limetask`: start, watch, list and cancel tasks from the shell."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from . import safejson
from .errors import LimeTaskError, NotFoundError, WaitTimeoutError
from .resource import DEFAULT_QUEUE, MAX_ARGUMENT_DEPTH
from .status import TaskStatus
from .validation import parse_time

# An error is one line: a hostile value (40 KiB of ARGS, say) is cut, not echoed whole.
MAX_ERROR_CHARS = 500
# What --imports may name: dotted module names, never a path or a relative import.
MODULE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Libraries whose errors mean "the cluster or the broker said no", never a bug here.
EXTERNAL_MODULES = ("kubernetes", "urllib3", "yaml", "aio_pika", "aiormq", "pamqp", "psycopg", "psycopg_pool",
                    "sqlalchemy", "alembic")


def _reader_gone() -> int:
    """The reader of the output has gone (`limetask list | head -5`): the exit code of a Unix
    tool killed by SIGPIPE, and no word about it. Whatever is still written (the flush at exit
    too) goes nowhere instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


class _Group(TyperGroup):
    """Usage errors as one `error:` line and a hint, with or without rich (no box, no usage block)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        def run() -> Any:
            return super(_Group, self).main(args, prog_name, complete_var, False, windows_expand_args, **extra)

        if not standalone_mode:
            return run()
        try:
            code = run()
            sys.stdout.flush()  # output still buffered meets a closed pipe here, if anywhere
        except BrokenPipeError:
            sys.exit(_reader_gone())
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:
            # click's own exceptions (newer typer vendors click): matched by their shape.
            exit_code = getattr(exc, "exit_code", None)
            if not (hasattr(exc, "format_message") and isinstance(exit_code, int)):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":
                if exc.format_message():  # with rich, the help is printed already
                    typer.echo(exc.format_message(), err=True)
            else:
                typer.secho(f"error: {_one_line(exc.format_message())}", fg=typer.colors.RED, err=True)
                if ctx is not None:
                    typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
            sys.exit(exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="limetask", no_args_is_help=True, add_completion=False, cls=_Group, pretty_exceptions_enable=False,
    help="Lime Task: background tasks that run as Kubernetes Jobs.",
)


class Output(str, Enum):
    text = "text"
    json = "json"


Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="namespace (default: from config)")]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: LIMETASK_KUBECONFIG)")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, or json for scripts")]


ResultsUrl = Annotated[str | None, typer.Option(
    "--results-url", envvar="LIMETASK_RESULTS_URL", show_envvar=True,
    help="the HTTP endpoint whose results API serves archived tasks")]


def _client(kubeconfig: str | None, namespace: str | None, results_url: str | None = None) -> Any:
    from .client import TaskClient

    return TaskClient(kubeconfig=kubeconfig, namespace=namespace, results_url=results_url)


def _positive_seconds(value: float | None) -> float | None:
    """A zero, negative or NaN timeout is a mistake, not "give up at once" or "never"."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of seconds above 0, got {value}")
    return value


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {_one_line(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _describe(exc: BaseException) -> str:
    """One line for an error from a library: the Kubernetes client's own text spans many lines."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if type(exc).__module__.startswith("kubernetes") and status is not None:
        return f"{type(exc).__name__}: {status} {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _external(exc: BaseException) -> bool:
    """An error of the network, the cluster or the broker: reported in one line, never a traceback."""
    return isinstance(exc, OSError) or any(c.__module__.split(".")[0] in EXTERNAL_MODULES for c in type(exc).__mro__)


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = safejson.loads(text)  # never RecursionError, however deep
    except ValueError as exc:
        _fail(f"{what} must be JSON: {exc}")
    if not isinstance(value, kind):
        _fail(f"{what} must be a JSON {'array' if kind is list else 'object'}, got {text!r}")
    if safejson.depth(value, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
        _fail(f"{what} nests deeper than {MAX_ARGUMENT_DEPTH} levels: pass flatter data, or identifiers "
              f"that the task looks up")
    return value


def _print(status: TaskStatus, output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps(status.to_dict()))
        return
    line = f"{status.id}  {status.status:8}  {status.task}  app={status.app}  attempts={status.attempts}"
    if status.queue != DEFAULT_QUEUE or status.priority:
        line += f"  queue={status.queue}" + (f"  priority={status.priority}" if status.priority else "")
    if status.archived:
        line += "  (archived)"
    typer.echo(line)
    if status.queued:
        place = f"position {status.queue_position} of {_dash(status.queue_waiting)}, " \
            if status.queue_position is not None else ""
        why = f" ({_why_queued(status)})" if _why_queued(status) else ""
        typer.echo(f"  queued: {place}waited {_age(status.queued_since)}{why}")
    if status.result is not None:
        typer.echo(f"  result: {json.dumps(status.result)}")
    if status.error is not None:
        typer.echo(f"  error:  {status.error}")


def _age(since: Any, now: dt.datetime | None = None) -> str:
    """How long ago, as kubectl says it (45s, 5m3s, 2h5m, 3d4h); "-" for no time."""
    if since is None:
        return "-"
    seconds = max(0, int(((now or dt.datetime.now(dt.timezone.utc)) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _why_queued(s: TaskStatus) -> str:
    """Why a task waits, unless it merely waits its turn: the reason and its message."""
    if not s.queued or s.queue_reason == "Waiting":
        return ""
    return f"{s.queue_reason}: {_one_line(s.queue_message)[:160]}" if s.queue_message else str(s.queue_reason)


def _queued_note(s: TaskStatus) -> str:
    """Where a waiting task stands in its queue ("" when it does not wait)."""
    if not s.queued:
        return ""
    place = f", position {s.queue_position} of {_dash(s.queue_waiting)}" if s.queue_position is not None else ""
    why = f"; {_why_queued(s)}" if _why_queued(s) else ""
    return f" (queue {s.queue}{place}{why})"


def _wait(client: Any, status: TaskStatus, timeout: float | None, output: Output) -> TaskStatus:
    started = time.monotonic()

    def progress(s: TaskStatus) -> None:
        if output is Output.text:
            typer.echo(f"  {time.monotonic() - started:7.1f}s  {s.status}{_queued_note(s)}", err=True)

    return client.wait(status.id, status.app, timeout=timeout, on_change=progress)  # type: ignore[no-any-return]


def _guard(fn: Any) -> Any:
    """Every error a user, the cluster or the broker can cause, as one line with its documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            raise typer.Exit(_reader_gone()) from None
        except WaitTimeoutError as exc:
            _fail(_describe(exc), code=3)
        except NotFoundError as exc:
            _fail(_describe(exc), code=1)
        except LimeTaskError as exc:
            _fail(_describe(exc))
        except RecursionError:
            _fail("the input nests too deeply")
        except Exception as exc:
            if not _external(exc):
                raise
            _fail(_describe(exc))
    return wrapper


@app.command()
@_guard
def send(
    task: Annotated[str, typer.Argument(help="dotted name of a @task function")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    args: Annotated[str | None, typer.Argument(help="positional arguments as a JSON array")] = None,
    kwargs: Annotated[str | None, typer.Option("--kwargs", "-k", help="keyword arguments as a JSON object")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait until it finishes")] = False,
    timeout: Annotated[float | None, typer.Option(callback=_positive_seconds,
                                                  help="with --wait: give up after this many seconds (exit 3)")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="do not require the task to be importable here")] = False,
    countdown: Annotated[float | None, typer.Option(help="start no earlier than this many seconds from now")] = None,
    eta: Annotated[str | None, typer.Option(help="start no earlier than this time (RFC 3339, e.g. "
                                                 "2026-12-01T07:30:00Z)")] = None,
    expires: Annotated[str | None, typer.Option(help="seconds from now, or an RFC 3339 time: a task not started "
                                                     "by then ends as FAILURE, reason Expired")] = None,
    qos: Annotated[str | None, typer.Option(metavar="QUEUE", help="the queue to wait in for a slot (default: the "
                                                                   "task's @task(qos=), else 'default')")] = None,
    priority: Annotated[int | None, typer.Option(help="order among the tasks waiting in the queue, higher first "
                                                      "(-1000 to 1000; default: the task's, else 0)")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """Start a task, now or later.

    Example: limetask send acme_solution.tasks.lime.get_lime_company my-app '[1001, ["name"]]' --wait
    Later:   limetask send acme_solution.tasks.lime.add my-app '[1, 2]' --countdown 60 --expires 600
    Queued:  limetask send acme_solution.tasks.lime.add my-app '[1, 2]' --qos background --priority -10
    """
    positional, keywords = _json_arg(args, "ARGS", list), _json_arg(kwargs, "--kwargs", dict)
    expiry: float | str | None = expires
    if expires is not None:
        try:
            expiry = float(expires)
        except ValueError:
            pass
    client = _client(kubeconfig, namespace)
    status = client.send(task, app_name, positional, keywords, check=not no_check, countdown=countdown, eta=eta,
                         expires=expiry, qos=qos, priority=priority)
    if wait:
        status = _wait(client, status, timeout, output)
    _print(status, output)
    if wait and status.status != "SUCCESS":
        raise typer.Exit(1)


@app.command()
@_guard
def status(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Show a task's status, live or archived. Example: limetask status 6f1c... my-app -o json"""
    _print(_client(kubeconfig, namespace, results_url).get_status(task_id, app_name), output)


@app.command()
@_guard
def wait(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    timeout: Annotated[float | None, typer.Option(callback=_positive_seconds,
                                                  help="give up after this many seconds (exit 3)")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Wait until a task finishes; exit 0 on SUCCESS, 1 on FAILURE, 3 on timeout.

    Example: limetask wait 6f1c... my-app --timeout 600
    """
    client = _client(kubeconfig, namespace, results_url)
    final = _wait(client, client.get_status(task_id, app_name), timeout, output)
    _print(final, output)
    raise typer.Exit(0 if final.status == "SUCCESS" else 1)


@app.command("list")
@_guard
def list_(
    app_name: Annotated[str | None, typer.Option("--app", "-a", help="only this application's tasks")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s", help="PENDING, STARTED, SUCCESS or FAILURE")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many")] = None,
    queued: Annotated[bool, typer.Option("--queued", help="only the tasks waiting in a queue for a slot, by queue "
                                                          "and position")] = False,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="only this queue's tasks ('default': those "
                                                                    "that name none)")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """List tasks, live then archived (newest first).

    Example: limetask list --app my-app --state FAILURE
    Waiting: limetask list --queued --queue background
    """
    items = _client(kubeconfig, namespace, results_url).list(app_name, state.upper() if state else None, limit,
                                                             queued=queued, queue=queue)
    if queued:
        _print_queued(items, output)
        return
    if output is Output.json:
        typer.echo(json.dumps([s.to_dict() for s in items]))
        return
    typer.echo(f"{'ID':38} {'STATE':8} {'ATTEMPTS':8} {'APP':20} TASK")
    for s in items:
        note = "  (archived)" if s.archived else ""
        typer.echo(f"{s.id:38} {s.status:8} {s.attempts:<8} {s.app:20} {s.task}{note}")


def _print_queued(items: list[TaskStatus], output: Output) -> None:
    """Waiting tasks by queue, then place in it (the next to start first)."""
    def place(s: TaskStatus) -> tuple[Any, ...]:
        since = s.queued_since.timestamp() if s.queued_since else math.inf
        return (s.queue, s.queue_position is None, s.queue_position or 0, since, s.id)

    items = sorted(items, key=place)
    if output is Output.json:
        typer.echo(json.dumps([s.to_dict() for s in items]))
        return
    now = dt.datetime.now(dt.timezone.utc)
    typer.echo(f"{'QUEUE':20} {'POSITION':8} {'WAITING':7} {'PRIORITY':8} {'WAITED':7} {'ID':38} {'APP':20} TASK")
    for s in items:
        why = f"  ({_why_queued(s)})" if _why_queued(s) else ""
        typer.echo(f"{s.queue:20} {_dash(s.queue_position):8} {_dash(s.queue_waiting):7} {s.priority:<8} "
                   f"{_age(s.queued_since, now):7} {s.id:38} {s.app:20} {s.task}{why}")


@app.command()
@_guard
def queues(kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text) -> None:
    """List the cluster's queues (LimeTaskQueues): their limits, and how many of their tasks run and wait.

    Example: limetask queues
    """
    items = [_queue_row(item) for item in _client(kubeconfig, None).list_queues()]
    if output is Output.json:
        typer.echo(json.dumps(items))
        return
    now = dt.datetime.now(dt.timezone.utc)
    typer.echo(f"{'NAME':24} {'MAX RUNNING':11} {'PER NAMESPACE':13} {'PER APP':7} {'RUNNING':7} {'WAITING':7} "
               f"{'ADMISSION':9} OLDEST WAITING")
    for q in items:
        oldest = _age(parse_time(q["oldest_waiting_since"]), now) if q["oldest_waiting_since"] else "-"
        typer.echo(f"{q['name']:24} {_dash(q['max_running']):11} {_dash(q['max_running_per_namespace']):13} "
                   f"{_dash(q['max_running_per_app']):7} {_dash(q['running']):7} {_dash(q['waiting']):7} "
                   f"{_dash(q['admission']):9} {oldest}")


def _queue_row(item: dict[str, Any]) -> dict[str, Any]:
    """A LimeTaskQueue in the plain form of `limetask queues -o json` (None: absent)."""
    spec, st = item.get("spec") or {}, item.get("status") or {}

    def number(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    return {"name": str((item.get("metadata") or {}).get("name", "")),
            "max_running": number(spec.get("maxRunning")),
            "max_running_per_namespace": number(spec.get("maxRunningPerNamespace")),
            "max_running_per_app": number(spec.get("maxRunningPerApp")),
            "admission": text(spec.get("admission")),
            "running": number(st.get("running")), "waiting": number(st.get("waiting")),
            "oldest_waiting_since": text(st.get("oldestWaitingSince"))}


@app.command()
@_guard
def cancel(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Cancel a pending or running task (it ends as FAILURE, reason Cancelled).

    Example: limetask cancel 6f1c... my-app
    """
    _print(_client(kubeconfig, namespace, results_url).cancel(task_id, app_name), output)


@app.command("run-local")
@_guard
def run_local(
    task: Annotated[str, typer.Argument(help="dotted name of a @task function")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    args: Annotated[str | None, typer.Argument(help="positional arguments as a JSON array")] = None,
    kwargs: Annotated[str | None, typer.Option("--kwargs", "-k", help="keyword arguments as a JSON object")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Run one task in this process, with no cluster, to debug the task function.

    Example: limetask run-local acme_solution.tasks.lime.add my-app '[1, 2]'
    """
    from ._run import run_eager

    result = run_eager(task, app_name, *_json_arg(args, "ARGS", list), **_json_arg(kwargs, "--kwargs", dict))
    _print(result, output)
    raise typer.Exit(0 if result.status == "SUCCESS" else 1)


class _OneLineFormatter(logging.Formatter):
    """A library's log record as one `warning:` line: no traceback in the middle of a tail."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message} ({_describe(record.exc_info[1])})"
        return f"warning: {_one_line(message)}"


@contextlib.contextmanager
def _one_line_logs() -> Iterator[None]:
    """Warnings (a lost connection, an event that is not JSON) on stderr, one line each.

    aiormq also logs every failed connection attempt as an error; the CLI reports the failure
    itself (and aio-pika warns about reconnections), so that one is kept quiet.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLineFormatter())
    root, aiormq = logging.getLogger(), logging.getLogger("aiormq")
    level = aiormq.level
    root.addHandler(handler)
    aiormq.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        aiormq.setLevel(level)


def _check_amqp_name(name: str, what: str) -> None:
    """AMQP names are at most 255 bytes; the client library would raise a bare ValueError."""
    if len(name.encode()) > 255:
        _fail(f"{what} {name[:40]!r}... is longer than 255 bytes")


@app.command()
@_guard
def events(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    pattern: Annotated[list[str] | None, typer.Option("--pattern", "-p", help="routing-key pattern; repeat for "
                                                      "several (default core.task.#)")] = None,
    broker: Annotated[str | None, typer.Option(envvar="LIMETASK_BROKER_URL", help="amqp:// URL of the broker",
                                               show_envvar=True)] = None,
    exchange: Annotated[str | None, typer.Option(help="exchange (default lime.APP)")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    timeout: Annotated[float | None, typer.Option(callback=_positive_seconds,
                                                  help="stop after this many seconds")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Tail the completion events of an application.

    Example: limetask events my-app -p 'core.task.#.failure.v1' --broker amqp://guest:guest@localhost/
    """
    import asyncio

    from .events import check_broker_url, consume, exchange_name, redact
    from .validation import check_app_name

    if not broker:
        _fail("no broker: pass --broker or set LIMETASK_BROKER_URL")
    check_broker_url(broker)
    check_app_name(app_name)
    patterns = pattern or ["core.task.#"]
    exchange = exchange or exchange_name(app_name)
    if exchange.startswith("amq."):
        _fail(f"exchange {exchange!r}: names starting with 'amq.' are reserved by RabbitMQ; "
              f"the operator publishes to lime.APP unless configured otherwise")
    _check_amqp_name(exchange, "exchange")
    for p in patterns:
        _check_amqp_name(p, "pattern")
    try:
        import aio_pika  # noqa: F401 - only to say which extra is missing
    except ImportError:
        _fail("the events consumer is not installed: pip install 'limetask[events]'")
    url, seen = broker, 0

    async def main() -> None:
        stop = asyncio.Event()
        ready = asyncio.Event()

        async def show(event: dict[str, Any]) -> None:
            nonlocal seen
            seen += 1
            if output is Output.json:
                typer.echo(json.dumps(event))
            else:
                detail = json.dumps(event.get("result")) if event.get("state") == "SUCCESS" else event.get("error")
                typer.echo(f"{event.get('completed_at')}  {event.get('state')!s:7}  {event.get('task')}  "
                           f"{event.get('id')}  {detail}")
            if count and seen >= count:
                stop.set()

        consumer = asyncio.create_task(consume(url, app_name, show, patterns=patterns, exchange=exchange,
                                               stop=stop, ready=ready))
        await asyncio.wait([consumer, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()
        typer.echo(f"listening on {exchange} at {redact(url)}  ({', '.join(patterns)}); Ctrl-C to stop", err=True)
        try:
            await asyncio.wait_for(consumer, timeout)
        except asyncio.TimeoutError:
            pass

    try:
        with _one_line_logs():
            asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if isinstance(exc, LimeTaskError) or not _external(exc):
            raise
        _fail(f"the broker at {redact(url)} (exchange {exchange!r}): {_describe(exc)}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_guard
def operator(ctx: typer.Context) -> None:
    """Run the operator (same options as `python -m limetask_operator --help`).

    Example: limetask operator --all-namespaces
    """
    try:
        from limetask_operator.main import main as operator_main
    except ImportError:
        _fail("the operator is not installed: pip install 'limetask[operator]'")
    raise typer.Exit(operator_main(list(ctx.args)))


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


@app.command()
@_guard
def web(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=0, max=65535)] = 8000,
    imports: Annotated[str | None, typer.Option(
        "--imports", envvar="LIMETASK_IMPORTS", show_envvar=True,
        help="comma-separated modules whose @task functions may be started")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None,
    log_level: Annotated[str, typer.Option(callback=_log_level, help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP endpoint: start, read and cancel tasks with per-application tokens.

    Tokens (app → token) come from LIMETASK_WEB_TOKENS_FILE (a JSON object, app=token lines,
    or a directory with one file per app, such as a mounted Secret) or LIMETASK_WEB_TOKENS (JSON).
    Kubernetes tokens bound to the audience LIMETASK_WEB_AUDIENCE (default limetask-web) work
    too (LIMETASK_WEB_KUBERNETES_AUTH=false turns them off). With
    LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE, archived tasks are served too (the results API).
    The read-only dashboard is at /dashboard/; platform tokens, which see every application's
    tasks there, come from LIMETASK_WEB_PLATFORM_TOKENS_FILE or LIMETASK_WEB_PLATFORM_TOKENS.

    Example: LIMETASK_WEB_TOKENS='{"my-app": "s3cret"}' limetask web --port 8000 --imports acme_solution.tasks.lime
    """
    try:
        import uvicorn

        from .tokens import TokenStore
        from .web import create_app
    except ImportError as exc:
        _fail(f"the web server is not installed ({exc.name}): pip install 'limetask[web]'")
    client = _client(kubeconfig, namespace, results_url="")  # the archive is read here, not through itself
    from .dashboard.routes import PLATFORM_TOKENS_ENV, PLATFORM_TOKENS_FILE_ENV

    try:
        tokens = TokenStore.from_env()
        platform = TokenStore.from_env(file_var=PLATFORM_TOKENS_FILE_ENV, var=PLATFORM_TOKENS_ENV)
    except ValueError as exc:
        _fail(str(exc))
    from .archive import ArchiveReader, redact, url_from_env

    archive_url = url_from_env()  # an invalid URL is one line (a LimeTaskError)
    modules = [m.strip() for m in (imports or "").split(",") if m.strip()]
    for module in modules:
        if not MODULE_RE.fullmatch(module):
            _fail(f"--imports: {module!r} is not a dotted module name")
    try:
        server = create_app(client=client, tokens=tokens, imports=modules, platform_tokens=platform,
                            archive=ArchiveReader(archive_url) if archive_url else None)
    except ImportError as exc:
        _fail(f"--imports: {exc}")
    if not tokens.apps():
        typer.secho("warning: no tokens (LIMETASK_WEB_TOKENS_FILE or LIMETASK_WEB_TOKENS): every request "
                    "to /v1 is refused", fg=typer.colors.YELLOW, err=True)
    if not modules:
        typer.secho("warning: no --imports: only tasks registered by this process can be started",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"serving namespace {client.namespace} on http://{host}:{port} "
               f"(applications: {', '.join(tokens.apps()) or 'none'}; archive: "
               f"{redact(archive_url) if archive_url else 'none, live tasks only'}); "
               f"dashboard: http://{host}:{port}/dashboard/ (platform tokens: {len(platform.apps())})", err=True)
    try:
        uvicorn.run(server, host=host, port=port, log_level=log_level)
    except SystemExit as exc:
        # uvicorn exits 3 when it cannot start, which here would read as "the wait timed out".
        raise typer.Exit(2 if exc.code else 0) from None


schedules_app = typer.Typer(no_args_is_help=True, help="Scheduled tasks: LimeTaskSchedules and their runs.")
app.add_typer(schedules_app, name="schedules")
AppsOpt = Annotated[list[str], typer.Option("--app", "-a", help="an application the solution serves (repeat)")]
ModuleOpt = Annotated[str | None, typer.Option(
    "--module", "-m", help="the module with register_scheduled_tasks() (default: the 'limetask.scheduled_tasks' "
                           "entry points of installed packages)")]


def _scheduled(module: str | None, apps: list[str]) -> tuple[list[dict[str, Any]], str]:
    from .schedule import load_registered, schedule_resources

    if not apps:
        _fail("name the applications the solution serves: --app my-app (repeat for each)")
    scheduled, source = load_registered(module)
    return schedule_resources(scheduled, apps, source), source


@schedules_app.command("render")
@_guard
def schedules_render(apps: AppsOpt = [], module: ModuleOpt = None,  # noqa: B006 - typer's list default
                     namespace: Namespace = None) -> None:
    """Print the LimeTaskSchedules of a solution's register_scheduled_tasks() as YAML, one per
    application and scheduled task (for GitOps: commit it, or kubectl apply -f it).

    Example: limetask schedules render -m acme_solution.scheduled_tasks -a app-one -a app-two > schedules.yaml
    """
    from .schedule import to_yaml

    resources, _ = _scheduled(module, apps)
    typer.echo(to_yaml(resources, namespace), nl=False)


@schedules_app.command("apply")
@_guard
def schedules_apply(apps: AppsOpt = [], module: ModuleOpt = None,  # noqa: B006 - typer's list default
                    prune: Annotated[bool, typer.Option(
                        "--prune", help="delete this source's schedules of these applications that the code no "
                                        "longer has")] = False,
                    force: Annotated[bool, typer.Option(
                        "--force", help="apply even schedules whose session cannot work for their app")] = False,
                    app_factory: Annotated[str | None, typer.Option(
                        "--app-factory", envvar="LIMETASK_APP_FACTORY", show_envvar=True,
                        help="the runner's application factory (module:callable), asked whether each schedule's "
                             "session can work")] = None,
                    namespace: Namespace = None, kubeconfig: Kubeconfig = None) -> None:
    """Create or update the LimeTaskSchedules of a solution's register_scheduled_tasks() in the cluster.

    Each schedule's application is built with the application factory first, and its session
    checked (lime_task.session_check): a schedule that cannot work refuses the whole apply, each
    named, unless --force.

    Example: limetask schedules apply -m acme_solution.scheduled_tasks -a app-one -a app-two --prune
    """
    from .schedule import apply_resources
    from .session_check import app_factory as load_factory
    from .session_check import session_problems

    resources, source = _scheduled(module, apps)
    problems = session_problems(resources, load_factory(app_factory))
    for problem in problems:
        typer.secho(f"{'warning' if force else 'error'}: {problem}", fg=typer.colors.YELLOW if force else
                    typer.colors.RED, err=True)
    if problems and not force:
        _fail(f"{len(problems)} schedule(s) cannot work for their application, nothing was applied (listed "
              f"above); fix them, or apply them anyway with --force")
    client = _client(kubeconfig, namespace)
    for line in apply_resources(client, resources, source, apps if prune else None):
        typer.echo(line)


@schedules_app.command("list")
@_guard
def schedules_list(app_name: Annotated[str | None, typer.Option("--app", "-a", help="only this application's")] = None,
                   namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text) -> None:
    """List schedules, with their last tick and active runs. Example: limetask schedules list -a my-app"""
    from .schedule import list_schedules

    items = list_schedules(_client(kubeconfig, namespace), app_name)
    if output is Output.json:
        typer.echo(json.dumps(items))
        return
    typer.echo(f"{'NAME':40} {'SCHEDULE':16} {'TIMEZONE':18} {'ACTIVE':6} {'LAST SCHEDULE':22} TASK")
    for s in items:
        zone = s["time_zone"] or "(default)"  # the installation's default zone, else UTC
        note = " (INVALID: no runs are made)" if s["problem"] else " (suspended)" if s["suspend"] else \
            " (scheduled tasks are turned off: no runs are made)" if s["disabled"] else ""
        typer.echo(f"{s['name']:40} {s['schedule']:16} {zone:18} {s['active']:<6} {s['last_schedule_time'] or '-':22} "
                   f"{s['task']}{note}")
        if s["problem"]:
            typer.echo(f"  problem: {_one_line(s['problem'])}")


@schedules_app.command("runs")
@_guard
def schedules_runs(name: Annotated[str, typer.Argument(help="the schedule's name")],
                   limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 100,
                   namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
                   results_url: ResultsUrl = None) -> None:
    """List a schedule's runs, live then archived, newest first (exit 1 when there is no such
    schedule). Example: limetask schedules runs nightly-sync"""
    from .schedule import schedule_runs

    items = schedule_runs(_client(kubeconfig, namespace, results_url), name, limit=limit)
    if output is Output.json:
        typer.echo(json.dumps([s.to_dict() for s in items]))
        return
    typer.echo(f"{'ID':40} {'STATE':8} {'ATTEMPTS':8} CREATED")
    for s in items:
        note = "  (archived)" if s.archived else ""
        typer.echo(f"{s.id:40} {s.status:8} {s.attempts:<8} {s.created_at.isoformat() if s.created_at else '-'}{note}")


archive_app = typer.Typer(no_args_is_help=True, help="The archive of finished tasks (PostgreSQL).")
app.add_typer(archive_app, name="archive")


def _archive_url() -> str:
    from .archive import url_from_env

    url = url_from_env()
    if url is None:
        _fail("no archive configured: set LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE "
              "(postgresql://user:password@host:port/database)")
    return url


@archive_app.command("migrate")
@_guard
def archive_migrate() -> None:
    """Bring the archive's schema to this release's version (the operator does it at start too).

    Example: LIMETASK_ARCHIVE_URL_FILE=/etc/limetask/archive-url limetask archive migrate
    """
    import os

    from .archive import LOCK_TIMEOUT_ENV, migrate, redact

    url = _archive_url()
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    try:
        lock_timeout = float(raw) if raw else 5.0
    except ValueError:
        _fail(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, not {raw[:40]!r}")
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("limetask.archive.migrate").addHandler(progress)
    logging.getLogger("limetask.archive.migrate").setLevel(logging.INFO)
    typer.echo(f"migrating the archive at {redact(url)}", err=True)
    typer.echo(f"schema at version {migrate(url, lock_timeout=lock_timeout)}")


@archive_app.command("status")
@_guard
def archive_status(output: OutputOpt = Output.text) -> None:
    """Show the archive's schema version, tasks, size and daily partitions.

    Example: limetask archive status -o json
    """
    from .archive import describe

    info = describe(_archive_url())
    if output is Output.json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"schema version {info['version'] or 'none (run: limetask archive migrate)'}")
    typer.echo(f"tasks {info['tasks']}  size {info['bytes'] / 2**20:.1f} MiB  partitions {len(info['partitions'])}")
    if info["partitions"]:
        typer.echo(f"oldest day {info['partitions'][0]}, newest {info['partitions'][-1]}")


generate_app = typer.Typer(no_args_is_help=True, help="Add Lime Task files to a solution package.")
app.add_typer(generate_app, name="generate")


def _report(outcomes: list[Any], root: Any, dry_run: bool) -> None:
    """What `generate` wrote, kept or would write, a line per file."""
    from .generate import KEPT, UNCHANGED

    prefix = "would be " if dry_run else ""
    for outcome in outcomes:
        note = "  (--force to overwrite)" if outcome.action == KEPT else ""
        action = outcome.action if outcome.action in (KEPT, UNCHANGED) else prefix + outcome.action
        typer.echo(f"{action:24} {outcome.path.relative_to(root)}{note}")


@generate_app.command("scheduled-tasks")
@_guard
def generate_scheduled_tasks(
    package: Annotated[str | None, typer.Option(help="the package to add them to (default: the only one)")] = None,
    directory: Annotated[str, typer.Option("--directory", "-C", help="the package directory")] = ".",
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be written")] = False,
) -> None:
    """Add a scheduled tasks module (register_scheduled_tasks) and its test, and declare it in
    pyproject.toml as a 'limetask.scheduled_tasks' entry point.

    Example: cd my-solution && limetask generate scheduled-tasks
    """
    from .generate import GenerateError, find_project, next_steps_scheduled, plan_scheduled, register_scheduled, write

    try:
        project = find_project(directory, package)
        register_scheduled(project, dry_run=True)  # a pyproject.toml it cannot declare in: say so first
        outcomes = write(plan_scheduled(project), force=force, dry_run=dry_run)
        registered = register_scheduled(project, dry_run=dry_run)
    except GenerateError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write: {exc}", code=1)
    _report([*outcomes, *([registered] if registered else [])], project.root, dry_run)
    if registered is None:
        typer.echo("no pyproject.toml: declare the module as a 'limetask.scheduled_tasks' entry point yourself, "
                   "or pass --module to limetask schedules")
    if dry_run:
        typer.echo("dry run: nothing was written")
    typer.echo("")
    typer.echo(next_steps_scheduled(project))


@generate_app.command("tasks")
@_guard
def generate_tasks(
    package: Annotated[str | None, typer.Option(help="the package to add tasks to (default: the only one)")] = None,
    directory: Annotated[str, typer.Option("--directory", "-C", help="the package directory")] = ".",
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be written")] = False,
) -> None:
    """Add a tasks package, its test, an HTTP endpoint and a runner image to a package directory.

    Run it where pyproject.toml (or setup.py) is. Files that exist are kept unless --force.

    Example: cd my-solution && limetask generate tasks
    """
    from .generate import KEPT, UNCHANGED, GenerateError, find_project, next_steps, plan, write

    try:
        project = find_project(directory, package)
        outcomes = write(plan(project), force=force, dry_run=dry_run)
    except GenerateError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write: {exc}", code=1)
    _report(outcomes, project.root, dry_run)
    written = [o for o in outcomes if o.action not in (KEPT, UNCHANGED)]
    if dry_run:
        typer.echo("dry run: nothing was written")
    elif not written:
        typer.echo("nothing changed: every file exists (use --force to overwrite)")
    if written:
        typer.echo("")
        typer.echo(next_steps(project))


if __name__ == "__main__":
    sys.exit(app())
