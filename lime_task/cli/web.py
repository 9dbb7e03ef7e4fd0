"""The HTTP endpoint, served from the command line (the `web` extra)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from . import options
from .failures import fail, guard
from .options import Kubeconfig, Namespace

# What --imports may name: dotted module names, never a path or a relative import.
MODULE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


@guard
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

        from ..server.app import create_app
        from ..tokens import TokenStore
    except ImportError as exc:
        fail(f"the web server is not installed ({exc.name}): pip install 'limetask[web]'")
    client = options.task_client(kubeconfig, namespace, results_url="")  # the archive is read here, not through itself
    from ..server.auth import platform_tokens_from_env

    try:
        tokens = TokenStore.from_env()
        platform = platform_tokens_from_env()
    except ValueError as exc:
        fail(str(exc))
    from ..archive import ArchiveReader, redact, url_from_env

    archive_url = url_from_env()  # an invalid URL is one line (a LimeTaskError)
    modules = [m.strip() for m in (imports or "").split(",") if m.strip()]
    for module in modules:
        if not MODULE_RE.fullmatch(module):
            fail(f"--imports: {module!r} is not a dotted module name")
    try:
        server = create_app(client=client, tokens=tokens, imports=modules, platform_tokens=platform,
                            archive=ArchiveReader(archive_url) if archive_url else None)
    except ImportError as exc:
        fail(f"--imports: {exc}")
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
