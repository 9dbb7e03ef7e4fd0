"""Queues: the cluster's LimeTaskQueues, their limits, the namespaces that may use them, and how
many of their tasks run and wait."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer

from ..validation import parse_time
from . import options
from .failures import guard
from .options import Kubeconfig, Output, OutputOpt
from .output import age, dash


@guard
def queues(kubeconfig: Kubeconfig = None, output: OutputOpt = Output.text) -> None:
    """List the cluster's queues (LimeTaskQueues): their limits, pace and priority ceiling, how many of their
    tasks run and wait, and the namespaces that may use each (its namespaceSelector, as `kubectl get
    namespaces -l` takes it; all: every namespace).

    Example: limetask queues
    """
    items = [_queue_row(item) for item in options.task_client(kubeconfig, None).list_queues()]
    if output is Output.json:
        typer.echo(json.dumps(items))
        return
    now = dt.datetime.now(dt.timezone.utc)
    typer.echo(f"{'NAME':24} {'MAX RUNNING':11} {'PER NAMESPACE':13} {'PER APP':7} {'STARTS/S':8} {'MAX PRIO':8} "
               f"{'RUNNING':7} {'WAITING':7} {'ADMISSION':9} {'OLDEST WAITING':14} NAMESPACES")
    for q in items:
        oldest = age(parse_time(q["oldest_waiting_since"]), now) if q["oldest_waiting_since"] else "-"
        typer.echo(f"{q['name']:24} {dash(q['max_running']):11} {dash(q['max_running_per_namespace']):13} "
                   f"{dash(q['max_running_per_app']):7} {dash(q['max_starts_per_second']):8} "
                   f"{dash(q['max_priority']):8} {dash(q['running']):7} {dash(q['waiting']):7} "
                   f"{dash(q['admission']):9} {oldest:14} {selector_text(q['namespace_selector'])}")


def selector_text(selector: dict[str, Any] | None) -> str:
    """A namespaceSelector as `kubectl get namespaces -l` takes it; "all" when every namespace may
    use the queue (no selector, or an empty one). What cannot be read is shown as it is."""
    if not selector:
        return "all"
    labels, exprs = selector.get("matchLabels"), selector.get("matchExpressions")
    parts = [f"{k}={v}" for k, v in labels.items()] if isinstance(labels, dict) else []
    for expr in exprs if isinstance(exprs, list) else []:
        if not isinstance(expr, dict):
            continue
        given = expr.get("values")
        values = ",".join(map(str, given)) if isinstance(given, list) else ""
        key, op = expr.get("key"), expr.get("operator")
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(str(op), f"{key} {op} ({values})"))
    return ",".join(parts) or "all"


def _queue_row(item: dict[str, Any]) -> dict[str, Any]:
    """A LimeTaskQueue in the plain form of `limetask queues -o json` (None: absent)."""
    spec, st = item.get("spec") or {}, item.get("status") or {}

    def number(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def rate(value: Any) -> float | int | None:
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    return {"name": str((item.get("metadata") or {}).get("name", "")),
            "max_running": number(spec.get("maxRunning")),
            "max_running_per_namespace": number(spec.get("maxRunningPerNamespace")),
            "max_running_per_app": number(spec.get("maxRunningPerApp")),
            "max_starts_per_second": rate(spec.get("maxStartsPerSecond")),
            "max_priority": number(spec.get("maxPriority")),
            "admission": text(spec.get("admission")),
            "running": number(st.get("running")), "waiting": number(st.get("waiting")),
            "oldest_waiting_since": text(st.get("oldestWaitingSince")),
            "namespace_selector": selector if isinstance(selector := spec.get("namespaceSelector"), dict) else None}
