"""Tasks: send, status, wait, list, cancel, and run-local (one task in this process, no cluster)."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Any

import typer

from ..status import TaskStatus
from . import options
from .failures import guard
from .options import Kubeconfig, Namespace, Output, OutputOpt, ResultsUrl, json_arg, positive_seconds
from .output import age, dash, print_status, wait_for, why_queued


@guard
def send(
    task: Annotated[str, typer.Argument(help="dotted name of a @task function")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    args: Annotated[str | None, typer.Argument(help="positional arguments as a JSON array")] = None,
    kwargs: Annotated[str | None, typer.Option("--kwargs", "-k", help="keyword arguments as a JSON object")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait until it finishes")] = False,
    timeout: Annotated[float | None, typer.Option(callback=positive_seconds,
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
    memory_on_oom: Annotated[list[str] | None, typer.Option(
        "--memory-on-oom", metavar="SIZE", help="memory of the attempt after an OOMKilled one, once per size in "
                                                "order, e.g. --memory-on-oom 1Gi --memory-on-oom 2Gi (default: the "
                                                "task's @task(memory_on_oom=))")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
) -> None:
    """Start a task, now or later.

    Example: limetask send acme_solution.tasks.lime.get_lime_company my-app '[1001, ["name"]]' --wait
    Later:   limetask send acme_solution.tasks.lime.add my-app '[1, 2]' --countdown 60 --expires 600
    Queued:  limetask send acme_solution.tasks.lime.add my-app '[1, 2]' --qos background --priority -10
    """
    positional, keywords = json_arg(args, "ARGS", list), json_arg(kwargs, "--kwargs", dict)
    expiry: float | str | None = expires
    if expires is not None:
        try:
            expiry = float(expires)
        except ValueError:
            pass
    client = options.task_client(kubeconfig, namespace)
    status = client.send(task, app_name, positional, keywords, check=not no_check, countdown=countdown, eta=eta,
                         expires=expiry, qos=qos, priority=priority, memory_on_oom=memory_on_oom or None)
    if wait:
        status = wait_for(client, status, timeout, output)
    print_status(status, output)
    if wait and status.status != "SUCCESS":
        raise typer.Exit(1)


@guard
def status(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Show a task's status, live or archived. Example: limetask status 6f1c... my-app -o json"""
    print_status(options.task_client(kubeconfig, namespace, results_url).get_status(task_id, app_name), output)


@guard
def wait(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    timeout: Annotated[float | None, typer.Option(callback=positive_seconds,
                                                  help="give up after this many seconds (exit 3)")] = None,
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Wait until a task finishes; exit 0 on SUCCESS, 1 on FAILURE, 3 on timeout.

    Example: limetask wait 6f1c... my-app --timeout 600
    """
    client = options.task_client(kubeconfig, namespace, results_url)
    final = wait_for(client, client.get_status(task_id, app_name), timeout, output)
    print_status(final, output)
    raise typer.Exit(0 if final.status == "SUCCESS" else 1)


@guard
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
    client = options.task_client(kubeconfig, namespace, results_url)
    items = client.list(app_name, state.upper() if state else None, limit, queued=queued, queue=queue)
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
        why = f"  ({why_queued(s)})" if why_queued(s) else ""
        typer.echo(f"{s.queue:20} {dash(s.queue_position):8} {dash(s.queue_waiting):7} {s.priority:<8} "
                   f"{age(s.queued_since, now):7} {s.id:38} {s.app:20} {s.task}{why}")


@guard
def cancel(
    task_id: Annotated[str, typer.Argument(help="the task id")],
    app_name: Annotated[str, typer.Argument(metavar="APP", help="application name")],
    namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
    results_url: ResultsUrl = None,
) -> None:
    """Cancel a pending or running task (it ends as FAILURE, reason Cancelled).

    Example: limetask cancel 6f1c... my-app
    """
    print_status(options.task_client(kubeconfig, namespace, results_url).cancel(task_id, app_name), output)


@guard
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
    from .._run import run_eager

    result = run_eager(task, app_name, *json_arg(args, "ARGS", list), **json_arg(kwargs, "--kwargs", dict))
    print_status(result, output)
    raise typer.Exit(0 if result.status == "SUCCESS" else 1)
