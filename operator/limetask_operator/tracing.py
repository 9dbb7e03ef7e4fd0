"""The operator's spans, in the trace of the task's sender (OpenTelemetry, optional).

A LimeTask sent inside a trace carries its context (annotation `limetask.io/traceparent`,
lime_task.tracing). What the operator does for such a task joins that trace as children of the
sender's span: the admission (from the task's creation to its slot, so the wait in line shows),
the creation of each attempt's Job, and the publishing of the completion event. The trace
context also goes to the attempt's runner (`runner_env`), whose span links to it.

Off unless OTEL_* settings ask for export (`configure`, at start) or the process has a tracer
provider of its own; a task without a (valid) trace context gets no spans. Off, `span` is a
context manager that does nothing, and `runner_env` still passes the context on (it is only text).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from lime_task.tracing import (
    ANNOTATION_TRACEPARENT,
    ANNOTATION_TRACESTATE,
    carried,
    configure_from_env,
    otel_trace,
    remote_context,
)
from lime_task.tracing import shutdown as shutdown_provider

from .model import TaskView

SERVICE_NAME = "limetask-operator"
_provider: Any = None  # the SDK provider `configure` set up (exported at `shutdown`)
_tracer: Any = None  # None: tracing is off


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on when OTEL_* asks for it, or a tracer provider is installed already."""
    global _provider, _tracer
    trace = otel_trace()
    if trace is None:
        return False
    _provider = configure_from_env(SERVICE_NAME, env)
    if _provider is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    _tracer = trace.get_tracer("limetask.operator")
    return True


def use(tracer_provider: Any) -> None:
    """Trace with this provider (tests), or not at all (None)."""
    global _tracer
    trace = otel_trace()
    _tracer = None if tracer_provider is None or trace is None else trace.get_tracer(
        "limetask.operator", tracer_provider=tracer_provider)


def shutdown() -> None:
    global _provider, _tracer
    shutdown_provider(_provider)
    _provider = _tracer = None


def runner_env(annotations: Mapping[str, str]) -> dict[str, str]:
    """The task's trace context for its runner's environment: only a valid W3C traceparent,
    and `$` escaped as `$$` (Kubernetes expands `$(VAR)` in env values)."""
    found = carried(annotations.get(ANNOTATION_TRACEPARENT), annotations.get(ANNOTATION_TRACESTATE))
    if found is None:
        return {}
    env = {"LIMETASK_TRACEPARENT": found[0]}
    if found[1]:
        env["LIMETASK_TRACESTATE"] = found[1].replace("$", "$$")
    return env


def _parent(task: TaskView) -> Any:
    trace = otel_trace()
    sender = remote_context(task.annotations.get(ANNOTATION_TRACEPARENT), task.annotations.get(ANNOTATION_TRACESTATE))
    return None if sender is None or trace is None else trace.set_span_in_context(trace.NonRecordingSpan(sender))


def _attributes(task: TaskView, extra: Mapping[str, Any]) -> dict[str, Any]:
    found = {"limetask.task.id": task.name, "limetask.namespace": task.namespace,
             "limetask.task.name": str(task.spec.get("task", "")), "limetask.app": str(task.spec.get("app", ""))}
    found.update({f"limetask.{k}": v for k, v in extra.items() if v is not None})
    return found


@contextlib.contextmanager
def span(name: str, task: TaskView, kind: str = "INTERNAL", **attributes: Any) -> Iterator[Any]:
    """A span of the task's trace around the block (None when off or the task is not traced).
    An exception leaving the block is recorded on it. `attributes` become `limetask.<name>`."""
    parent = _parent(task) if _tracer is not None else None
    if parent is None:
        yield None
        return
    trace = otel_trace()
    with _tracer.start_as_current_span(name, context=parent, kind=getattr(trace.SpanKind, kind),
                                       attributes=_attributes(task, attributes)) as current:
        yield current


def admitted(task: TaskView, attempt: int | None, **attributes: Any) -> None:
    """The attempt got its slot: a span of the wait, from the task's creation for a first
    attempt (the time in line), else of the moment."""
    parent = _parent(task) if _tracer is not None else None
    if parent is None:
        return
    start = None
    if attempt == 1 and task.created:
        try:
            start = int(dt.datetime.fromisoformat(task.created.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            start = None
    _tracer.start_span("limetask admit", context=parent, start_time=start,
                       attributes=_attributes(task, {"attempt": attempt, **attributes})).end()
