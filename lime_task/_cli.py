"""`limetask`: start, watch, list and cancel tasks from the shell."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Annotated, Any

import typer

from .errors import LimeTaskError
from .status import TaskStatus

app = typer.Typer(
    name="limetask", no_args_is_help=True, add_completion=False,
    help="Lime Task: background tasks that run as Kubernetes Jobs.",
)


class Output(str, Enum):
    text = "text"
    json = "json"


Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="namespace (default: from config)")]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: LIMETASK_KUBECONFIG)")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, or json for scripts")]


def _client(kubeconfig: str | None, namespace: str | None) -> Any:
    from .client import TaskClient

    return TaskClient(kubeconfig=kubeconfig, namespace=namespace)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        _fail(f"{what} must be JSON: {exc}")
    if not isinstance(value, kind):
        _fail(f"{what} must be a JSON {'array' if kind is list else 'object'}, got {text!r}")
    return value


def _print(status: TaskStatus, output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps(status.to_dict()))
        return
    line = f"{status.id}  {status.status:8}  {status.task}  app={status.app}  attempts={status.attempts}"
    typer.echo(line)
    if status.result is not None:
        typer.echo(f"  result: {json.dumps(status.result)}")
    if status.error is not None:
        typer.echo(f"  error:  {status.error}")


def _wait(client: Any, status: TaskStatus, timeout: float | None, output: Output) -> TaskStatus:
    started = time.monotonic()

    def progress(s: TaskStatus) -> None:
        if output is Output.text:
            typer.echo(f"  {time.monotonic() - started:7.1f}s  {s.status}", err=True)

    return client.wait(status.id, status.app, timeout=timeout, on_change=progress)  # type: ignore[no-any-return]


def _guard(fn: Any) -> Any:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LimeTaskError as exc:
            _fail(f"{type(exc).__name__}: {exc}", code=1 if "NotFound" in type(exc).__name__ else 2)
    return wrapper


@app.command()
@_guard
def send(
    task: Annotated[str, typer.Argument(help="dotted name of a @task function")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    args: Annotated[str | None, typer.Argument(help="positional arguments as a JSON array")] = None,
    kwargs: Annotated[str | None, typer.Option("--kwargs", "-k", help="keyword arguments as a JSON object")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait until it finishes")] = False,
    timeout: Annotated[float | None, typer.Option(help="with --wait: give up after this many seconds")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="do not require the task to be importable here")] = False,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """Start a task.

    Example: limetask send acme_solution.tasks.lime.get_lime_company my-app '[1001, ["name"]]' --wait
    """
    client = _client(kubeconfig, namespace)
    status = client.send(task, app_name, _json_arg(args, "ARGS", list), _json_arg(kwargs, "--kwargs", dict),
                         check=not no_check)
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
) -> None:
    """Show a task's status. Example: limetask status 6f1c... my-app -o json"""
    _print(_client(kubeconfig, namespace).get_status(task_id, app_name), output)


@app.command()
@_guard
def wait(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds (exit 3)")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """Wait until a task finishes; exit 0 on SUCCESS, 1 on FAILURE, 3 on timeout.

    Example: limetask wait 6f1c... my-app --timeout 600
    """
    from .errors import WaitTimeoutError

    client = _client(kubeconfig, namespace)
    current = client.get_status(task_id, app_name)
    try:
        final = _wait(client, current, timeout, output)
    except WaitTimeoutError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(3) from None
    _print(final, output)
    raise typer.Exit(0 if final.status == "SUCCESS" else 1)


@app.command("list")
@_guard
def list_(
    app_name: Annotated[str | None, typer.Option("--app", "-a", help="only this application's tasks")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s", help="PENDING, STARTED, SUCCESS or FAILURE")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """List tasks. Example: limetask list --app my-app --state FAILURE"""
    items = _client(kubeconfig, namespace).list(app_name, state.upper() if state else None, limit)
    if output is Output.json:
        typer.echo(json.dumps([s.to_dict() for s in items]))
        return
    typer.echo(f"{'ID':38} {'STATE':8} {'ATTEMPTS':8} {'APP':20} TASK")
    for s in items:
        typer.echo(f"{s.id:38} {s.status:8} {s.attempts:<8} {s.app:20} {s.task}")


@app.command()
@_guard
def cancel(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """Cancel a pending or running task (it ends as FAILURE, reason Cancelled).

    Example: limetask cancel 6f1c... my-app
    """
    _print(_client(kubeconfig, namespace).cancel(task_id, app_name), output)


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


@app.command()
def events(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    pattern: Annotated[list[str] | None, typer.Option("--pattern", "-p", help="routing-key pattern; repeat for "
                                                      "several (default core.task.#)")] = None,
    broker: Annotated[str | None, typer.Option(envvar="LIMETASK_BROKER_URL", help="amqp:// URL of the broker",
                                               show_envvar=True)] = None,
    exchange: Annotated[str | None, typer.Option(help="exchange (default lime.APP)")] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Tail the completion events of an application.

    Example: limetask events my-app -p 'core.task.#.failure.v1' --broker amqp://guest:guest@localhost/
    """
    import asyncio

    from .events import check_broker_url, consume, redact

    if not broker:
        _fail("no broker: pass --broker or set LIMETASK_BROKER_URL")
    try:
        check_broker_url(broker)  # type: ignore[arg-type]
    except LimeTaskError as exc:
        _fail(str(exc))
    seen = 0

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
                typer.echo(f"{event.get('completed_at')}  {event.get('state'):7}  {event.get('task')}  "
                           f"{event.get('id')}  {detail}")
            if count and seen >= count:
                stop.set()

        consumer = asyncio.create_task(consume(broker, app_name, show, patterns=pattern or None,  # type: ignore[arg-type]
                                               exchange=exchange, stop=stop, ready=ready))
        await asyncio.wait([consumer, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()
        typer.echo(f"listening on {exchange or 'lime.' + app_name} at {redact(broker)}  "  # type: ignore[arg-type]
                   f"({', '.join(pattern or ['core.task.#'])}); Ctrl-C to stop", err=True)
        try:
            await asyncio.wait_for(consumer, timeout)
        except asyncio.TimeoutError:
            pass

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _fail(f"cannot reach the broker at {redact(broker)}: {exc}")  # type: ignore[arg-type]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def operator(ctx: typer.Context) -> None:
    """Run the operator (same options as `python -m limetask_operator --help`).

    Example: limetask operator --all-namespaces
    """
    try:
        from limetask_operator.main import main as operator_main
    except ImportError:
        _fail("the operator is not installed: pip install 'limetask[operator]'")
    raise typer.Exit(operator_main(list(ctx.args)))


@app.command()
def web(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=0, max=65535)] = 8000,
    imports: Annotated[str | None, typer.Option(
        "--imports", envvar="LIMETASK_IMPORTS", show_envvar=True,
        help="comma-separated modules whose @task functions may be started")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP endpoint: start, read and cancel tasks with per-application tokens.

    Tokens (app → token) come from LIMETASK_WEB_TOKENS_FILE (a JSON object, app=token lines,
    or a directory with one file per app, such as a mounted Secret) or LIMETASK_WEB_TOKENS (JSON).

    Example: LIMETASK_WEB_TOKENS='{"my-app": "s3cret"}' limetask web --port 8000 --imports acme_solution.tasks.lime
    """
    try:
        import uvicorn

        from .web import TokenStore, create_app
    except ImportError as exc:
        _fail(f"the web server is not installed ({exc.name}): pip install 'limetask[web]'")
    try:
        client = _client(kubeconfig, namespace)
    except LimeTaskError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    try:
        tokens = TokenStore.from_env()
    except ValueError as exc:
        _fail(str(exc))
    modules = [m.strip() for m in (imports or "").split(",") if m.strip()]
    try:
        server = create_app(client=client, tokens=tokens, imports=modules)
    except ImportError as exc:
        _fail(f"--imports: {exc}")
    if not tokens.apps():
        typer.secho("warning: no tokens (LIMETASK_WEB_TOKENS_FILE or LIMETASK_WEB_TOKENS): every request "
                    "to /v1 is refused", fg=typer.colors.YELLOW, err=True)
    if not modules:
        typer.secho("warning: no --imports: only tasks registered by this process can be started",
                    fg=typer.colors.YELLOW, err=True)
    typer.echo(f"serving namespace {client.namespace} on http://{host}:{port} "
               f"(applications: {', '.join(tokens.apps()) or 'none'})", err=True)
    uvicorn.run(server, host=host, port=port, log_level=log_level)


generate_app = typer.Typer(no_args_is_help=True, help="Add Lime Task files to a solution package.")
app.add_typer(generate_app, name="generate")


@generate_app.command("tasks")
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
    prefix = "would be " if dry_run else ""
    for outcome in outcomes:
        note = "  (--force to overwrite)" if outcome.action == KEPT else ""
        action = outcome.action if outcome.action in (KEPT, UNCHANGED) else prefix + outcome.action
        typer.echo(f"{action:24} {outcome.path.relative_to(project.root)}{note}")
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
