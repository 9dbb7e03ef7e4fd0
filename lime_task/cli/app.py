"""The `limetask` command: every command group, registered in the order `--help` lists them."""

from __future__ import annotations

import typer

from . import archive, dev, events, generate, operator, queues, schedules, tasks, web
from .failures import CommandGroup

app = typer.Typer(
    name="limetask", no_args_is_help=True, add_completion=False, cls=CommandGroup, pretty_exceptions_enable=False,
    help="Lime Task: background tasks that run as Kubernetes Jobs.",
)

app.command()(tasks.send)
app.command()(tasks.status)
app.command()(tasks.wait)
app.command("list")(tasks.list_)
app.command()(queues.queues)
app.command()(tasks.cancel)
app.command("run-local")(tasks.run_local)
app.command()(events.events)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(operator.operator)
app.command()(web.web)
app.add_typer(schedules.app, name="schedules")
app.add_typer(archive.app, name="archive")
app.add_typer(generate.app, name="generate")
app.command()(dev.dev)
