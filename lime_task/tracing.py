"""OpenTelemetry, optional: the W3C trace context a task carries, and the SDK set up from OTEL_*.

`send_task` writes the caller's trace context into the LimeTask's annotations
`limetask.io/traceparent` (and `limetask.io/tracestate`); the operator's spans join that trace,
and the runner's span links to it (a link, not a parent: the task runs later, maybe more than
once, as OpenTelemetry's guidance for messaging says).

Everything here is a no-op without the `opentelemetry` packages (`pip install
'limetask[tracing]'`), and without configuration: a process exports only when its environment
asks for it (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER`), or when the application installed a tracer provider of its own.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

LOG = logging.getLogger("limetask.tracing")

ANNOTATION_TRACEPARENT = "limetask.io/traceparent"
ANNOTATION_TRACESTATE = "limetask.io/tracestate"
# W3C Trace Context: version 00 as written (a later version may add fields after these); the
# all-zero ids are invalid. Checked before anything goes into a Job's environment.
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[-0-9a-f]*)?$")
# At most 32 list members of printable ASCII (W3C); longer or stranger is dropped, not cut.
TRACESTATE_MAX = 512
TRACESTATE_RE = re.compile(r"^[\x20-\x7e]*$")

_UNSET: Any = object()
_api: Any = _UNSET


def otel_trace() -> Any:
    """`opentelemetry.trace`, or None when the package is not installed (looked up once)."""
    global _api
    if _api is _UNSET:
        try:
            from opentelemetry import trace as found
        except ImportError:
            found = None  # type: ignore[assignment]
        _api = found
    return _api


def _propagator() -> Any:
    # Always W3C, whatever OTEL_PROPAGATORS says: the annotations are named for it.
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def trace_annotations() -> dict[str, str]:
    """The current span's context as the LimeTask's annotations; {} when there is none."""
    trace = otel_trace()
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    try:
        _propagator().inject(carrier)
    except Exception as exc:  # noqa: BLE001 - tracing never fails a send
        LOG.debug("no trace context for the task: %s", exc)
        return {}
    found = {ANNOTATION_TRACEPARENT: carrier.get("traceparent", "")}
    if carrier.get("tracestate"):
        found[ANNOTATION_TRACESTATE] = carrier["tracestate"]
    return {k: v for k, v in found.items() if v}


def carried(traceparent: str | None, tracestate: str | None = None) -> tuple[str, str] | None:
    """(traceparent, tracestate) when `traceparent` is a valid W3C one, else None; a tracestate
    that is too long or not printable ASCII is dropped ("")."""
    if not isinstance(traceparent, str) or len(traceparent) > 256 or not TRACEPARENT_RE.match(traceparent.strip()):
        return None
    state = tracestate.strip() if isinstance(tracestate, str) else ""
    if len(state) > TRACESTATE_MAX or not TRACESTATE_RE.match(state):
        state = ""
    return traceparent.strip(), state


def remote_context(traceparent: str | None, tracestate: str | None = None) -> Any:
    """The sender's span context (an `opentelemetry.trace.SpanContext`), or None when there is
    none, it is malformed, or OpenTelemetry is not installed."""
    trace = otel_trace()
    found = carried(traceparent, tracestate)
    if trace is None or found is None:
        return None
    carrier = {"traceparent": found[0]}
    if found[1]:
        carrier["tracestate"] = found[1]
    try:
        context = trace.get_current_span(_propagator().extract(carrier)).get_span_context()
    except Exception:  # noqa: BLE001 - a bad header is no trace, never a failure
        return None
    return context if context.is_valid else None


# -- the SDK, set up from the environment ------------------------------------------------------

def export_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether OTEL_* settings ask this process to export spans."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        return exporters != ["none"]
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    found: list[Any] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf").strip().lower()
            if protocol == "grpc":
                try:
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                except ImportError:
                    LOG.warning("OTEL_EXPORTER_OTLP_PROTOCOL=grpc, but opentelemetry-exporter-otlp-proto-grpc is "
                                "not installed: no spans are exported (http/protobuf needs nothing more)")
                    continue
                found.append(OTLPSpanExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                found.append(HttpExporter())
        else:
            LOG.warning("OTEL_TRACES_EXPORTER=%s: only otlp, console and none are known here", name)
    return found


def configure_from_env(service_name: str, env: Mapping[str, str] | None = None) -> Any:
    """Set up the SDK's tracer provider as the global one, from OTEL_* settings, and return it
    (for `shutdown`); None when nothing is asked, the SDK is missing, or the application has
    installed a provider of its own (which is then used as it is)."""
    env = os.environ if env is None else env
    trace = otel_trace()
    if trace is None or not export_requested(env):
        return None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # set up already (opentelemetry-instrument, the application): not ours to change
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        LOG.warning("OTEL_* settings ask for traces, but the OpenTelemetry SDK is not installed: "
                    "pip install 'limetask[tracing]'")
        return None
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    try:
        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the default only.
        # No exit hook of the SDK's own: it would wait for an unreachable collector without a bound (see shutdown).
        provider = TracerProvider(resource=Resource.create({} if named else {"service.name": service_name}),
                                  shutdown_on_exit=False)
        for exporter in _exporters(env):
            provider.add_span_processor(BatchSpanProcessor(exporter))
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* setting costs the traces, never the work
        LOG.warning("OpenTelemetry could not be set up from OTEL_* (%s: %s): no spans are exported",
                    type(exc).__name__, exc)
        return None
    trace.set_tracer_provider(provider)
    return provider


def shutdown(provider: Any, timeout_seconds: float = 5.0) -> None:
    """Export what is left and stop the provider's exporters, waiting at most `timeout_seconds`:
    an exporter retries an unreachable collector for longer (its own timeout, with backoff), and
    a runner's pod, whose verdict is written, should not wait for that. What is not exported by
    then is dropped (the export threads are daemons)."""
    if provider is None:
        return

    def stop() -> None:
        try:
            provider.force_flush(int(timeout_seconds * 1000))
            provider.shutdown()
        except Exception as exc:  # noqa: BLE001 - tracing never fails a task or the operator
            LOG.warning("exporting the last spans failed: %s", exc)

    worker = threading.Thread(target=stop, name="limetask-tracing-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    if worker.is_alive():
        LOG.warning("the trace collector did not take the last spans within %gs: they are dropped", timeout_seconds)
