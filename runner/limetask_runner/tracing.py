"""The span of one attempt, linked to the span that sent the task (OpenTelemetry, optional).

The operator passes the LimeTask's trace context as LIMETASK_TRACEPARENT and
LIMETASK_TRACESTATE. The attempt's span starts a trace of its own with a LINK to the sender's
span, not as its child: the task runs later, perhaps more than once, and a sender's trace
should not stay open for it (OpenTelemetry's guidance for messaging). The span is the current
one while the task runs, so the task's own instrumented calls become its children.

Nothing is imported, and nothing happens, unless the environment speaks of OpenTelemetry (an
OTEL_* variable) or the process has imported it already (an instrumentation wrapper); then the
SDK is set up from OTEL_* (lime_task.tracing), or the provider found is used. The last spans are
exported after the verdict is written (`flush`), so a slow collector never costs a verdict.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lime_task.resource import SUCCESS
from lime_task.verdict import Verdict

SERVICE_NAME = "limetask-runner"
FLUSH_SECONDS = 5.0
_provider: Any = None


def wanted(env: Mapping[str, str]) -> bool:
    return any(k.startswith("OTEL_") for k in env) or "opentelemetry.trace" in sys.modules


def attributes(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {"limetask.task.id": env.get("LIMETASK_TASK_ID", ""),
                             "limetask.task.name": env.get("LIMETASK_TASK", ""),
                             "limetask.app": env.get("LIMETASK_APP", "")}
    try:
        found["limetask.attempt"] = int(env.get("LIMETASK_ATTEMPT") or 1)
    except ValueError:
        pass
    if env.get("LIMETASK_NAMESPACE"):
        found["limetask.namespace"] = env["LIMETASK_NAMESPACE"]
    return found


@contextlib.contextmanager
def task_span(env: Mapping[str, str], tracer_provider: Any = None) -> Iterator[Callable[[Verdict], None]]:
    """The attempt's span, around running the task; call what it yields with the verdict.
    `tracer_provider`: the one to use (tests); else the global one, set up from OTEL_* if asked."""
    global _provider
    if tracer_provider is None and not wanted(env):
        yield lambda verdict: None
        return
    from lime_task.tracing import configure_from_env, otel_trace, remote_context

    trace = otel_trace()
    if trace is None:
        yield lambda verdict: None
        return
    if tracer_provider is None:
        _provider = configure_from_env(SERVICE_NAME, env)
    tracer = trace.get_tracer("limetask.runner", tracer_provider=tracer_provider)
    sender = remote_context(env.get("LIMETASK_TRACEPARENT"), env.get("LIMETASK_TRACESTATE"))
    links = [trace.Link(sender, {"limetask.link": "sender"})] if sender is not None else []
    name = env.get("LIMETASK_TASK") or "task"
    with tracer.start_as_current_span(f"run {name}", kind=trace.SpanKind.CONSUMER, links=links,
                                      attributes=attributes(env)) as span:
        def record(verdict: Verdict) -> None:
            span.set_attribute("limetask.outcome", verdict.state)
            if verdict.state != SUCCESS:
                span.set_attribute("error.type", verdict.error.get("type") or "Error")
                span.set_attribute("limetask.error.reason", verdict.error.get("reason") or "")
                span.set_status(trace.Status(trace.StatusCode.ERROR, (verdict.error.get("message") or "")[:200]))

        yield record


def flush() -> None:
    """Export the spans left, within FLUSH_SECONDS (after the verdict is written)."""
    if _provider is not None:
        from lime_task.tracing import shutdown

        shutdown(_provider, FLUSH_SECONDS)
