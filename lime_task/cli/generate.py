"""Generate: add Lime Task files to a solution package."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .failures import fail, guard

app = typer.Typer(no_args_is_help=True, help="Add Lime Task files to a solution package.")


def _report(outcomes: list[Any], root: Any, dry_run: bool) -> None:
    """What `generate` wrote, kept or would write, a line per file."""
    from ..generate import KEPT, UNCHANGED

    prefix = "would be " if dry_run else ""
    for outcome in outcomes:
        note = "  (--force to overwrite)" if outcome.action == KEPT else ""
        action = outcome.action if outcome.action in (KEPT, UNCHANGED) else prefix + outcome.action
        typer.echo(f"{action:24} {outcome.path.relative_to(root)}{note}")


@app.command("scheduled-tasks")
@guard
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
    from ..generate import GenerateError, find_project, next_steps_scheduled, plan_scheduled, register_scheduled, write

    try:
        project = find_project(directory, package)
        register_scheduled(project, dry_run=True)  # a pyproject.toml it cannot declare in: say so first
        outcomes = write(plan_scheduled(project), force=force, dry_run=dry_run)
        registered = register_scheduled(project, dry_run=dry_run)
    except GenerateError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write: {exc}", code=1)
    _report([*outcomes, *([registered] if registered else [])], project.root, dry_run)
    if registered is None:
        typer.echo("no pyproject.toml: declare the module as a 'limetask.scheduled_tasks' entry point yourself, "
                   "or pass --module to limetask schedules")
    if dry_run:
        typer.echo("dry run: nothing was written")
    typer.echo("")
    typer.echo(next_steps_scheduled(project))


@app.command("tasks")
@guard
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
    from ..generate import KEPT, UNCHANGED, GenerateError, find_project, next_steps, plan, write

    try:
        project = find_project(directory, package)
        outcomes = write(plan(project), force=force, dry_run=dry_run)
    except GenerateError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write: {exc}", code=1)
    _report(outcomes, project.root, dry_run)
    written = [o for o in outcomes if o.action not in (KEPT, UNCHANGED)]
    if dry_run:
        typer.echo("dry run: nothing was written")
    elif not written:
        typer.echo("nothing changed: every file exists (use --force to overwrite)")
    if written:
        typer.echo("")
        typer.echo(next_steps(project))
