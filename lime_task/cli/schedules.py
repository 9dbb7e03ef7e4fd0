"""Schedules: render or apply a solution's LimeTaskSchedules, list them and their runs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from . import options
from .failures import fail, guard, one_line
from .options import Kubeconfig, Namespace, Output, OutputOpt, ResultsUrl

app = typer.Typer(no_args_is_help=True, help="Scheduled tasks: LimeTaskSchedules and their runs.")
AppsOpt = Annotated[list[str], typer.Option("--app", "-a", help="an application the solution serves (repeat)")]
ModuleOpt = Annotated[str | None, typer.Option(
    "--module", "-m", help="the module with register_scheduled_tasks() (default: the 'limetask.scheduled_tasks' "
                           "entry points of installed packages)")]


def _scheduled(module: str | None, apps: list[str]) -> tuple[list[dict[str, Any]], str]:
    from ..schedule import load_registered, schedule_resources

    if not apps:
        fail("name the applications the solution serves: --app my-app (repeat for each)")
    scheduled, source = load_registered(module)
    return schedule_resources(scheduled, apps, source), source


@app.command("render")
@guard
def schedules_render(apps: AppsOpt = [], module: ModuleOpt = None,  # noqa: B006 - typer's list default
                     namespace: Namespace = None) -> None:
    """Print the LimeTaskSchedules of a solution's register_scheduled_tasks() as YAML, one per
    application and scheduled task (for GitOps: commit it, or kubectl apply -f it).

    Example: limetask schedules render -m acme_solution.scheduled_tasks -a app-one -a app-two > schedules.yaml
    """
    from ..schedule import to_yaml

    resources, _ = _scheduled(module, apps)
    typer.echo(to_yaml(resources, namespace), nl=False)


@app.command("apply")
@guard
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
    from ..schedule import apply_resources
    from ..session_check import app_factory as load_factory
    from ..session_check import session_problems

    resources, source = _scheduled(module, apps)
    problems = session_problems(resources, load_factory(app_factory))
    for problem in problems:
        typer.secho(f"{'warning' if force else 'error'}: {problem}", fg=typer.colors.YELLOW if force else
                    typer.colors.RED, err=True)
    if problems and not force:
        fail(f"{len(problems)} schedule(s) cannot work for their application, nothing was applied (listed "
             f"above); fix them, or apply them anyway with --force")
    client = options.task_client(kubeconfig, namespace)
    for line in apply_resources(client, resources, source, apps if prune else None):
        typer.echo(line)


@app.command("list")
@guard
def schedules_list(app_name: Annotated[str | None, typer.Option("--app", "-a", help="only this application's")] = None,
                   namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text) -> None:
    """List schedules, with their last tick and active runs. Example: limetask schedules list -a my-app"""
    from ..schedule import list_schedules

    items = list_schedules(options.task_client(kubeconfig, namespace), app_name)
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
            typer.echo(f"  problem: {one_line(s['problem'])}")


@app.command("runs")
@guard
def schedules_runs(name: Annotated[str, typer.Argument(help="the schedule's name")],
                   limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 100,
                   namespace: Namespace = None, kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text,
                   results_url: ResultsUrl = None) -> None:
    """List a schedule's runs, live then archived, newest first (exit 1 when there is no such
    schedule). Example: limetask schedules runs nightly-sync"""
    from ..schedule import schedule_runs

    items = schedule_runs(options.task_client(kubeconfig, namespace, results_url), name, limit=limit)
    if output is Output.json:
        typer.echo(json.dumps([s.to_dict() for s in items]))
        return
    typer.echo(f"{'ID':40} {'STATE':8} {'ATTEMPTS':8} CREATED")
    for s in items:
        note = "  (archived)" if s.archived else ""
        typer.echo(f"{s.id:40} {s.status:8} {s.attempts:<8} {s.created_at.isoformat() if s.created_at else '-'}{note}")
