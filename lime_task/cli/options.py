"""What many commands take: the cluster client, their common options, JSON arguments."""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Any

import typer

from .. import safejson
from ..resource import MAX_ARGUMENT_DEPTH
from .failures import fail


class Output(str, Enum):
    text = "text"
    json = "json"


Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="namespace (default: from config)")]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: LIMETASK_KUBECONFIG)")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text, or json for scripts")]


ResultsUrl = Annotated[str | None, typer.Option(
    "--results-url", envvar="LIMETASK_RESULTS_URL", show_envvar=True,
    help="the HTTP endpoint whose results API serves archived tasks")]


def task_client(kubeconfig: str | None, namespace: str | None, results_url: str | None = None) -> Any:
    """The cluster client of a command (commands call it through this module: a test replaces it here)."""
    from ..client import TaskClient

    return TaskClient(kubeconfig=kubeconfig, namespace=namespace, results_url=results_url)


def positive_seconds(value: float | None) -> float | None:
    """A zero, negative or NaN timeout is a mistake, not "give up at once" or "never"."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of seconds above 0, got {value}")
    return value


def json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    try:
        value = safejson.loads(text)  # never RecursionError, however deep
    except ValueError as exc:
        fail(f"{what} must be JSON: {exc}")
    if not isinstance(value, kind):
        fail(f"{what} must be a JSON {'array' if kind is list else 'object'}, got {text!r}")
    if safejson.depth(value, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
        fail(f"{what} nests deeper than {MAX_ARGUMENT_DEPTH} levels: pass flatter data, or identifiers "
              f"that the task looks up")
    return value
