"""OpenTelemetry, optional: send_task carries the caller's trace context in the LimeTask, the
runner's span links to it, the operator's spans join it; nothing happens without configuration,
and a malformed context is ignored."""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from limetask_operator import tracing as operator_tracing
from limetask_operator.manifests import build_job
from limetask_operator.model import TaskView
from limetask_operator.settings import OperatorSettings
from limetask_runner import tracing as runner_tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from lime_task import tracing
from tests.otlp_receiver import OtlpReceiver
from tests.unit.fake_api import FakeCustomObjects, fake_client

runner = importlib.import_module("limetask_runner.main")

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MALFORMED = ["", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
             "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an invalid trace id
             "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # an invalid span id
             "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
             "00-$(HOME)-00f067aa0ba902b7-01", TRACEPARENT + "x" * 5000, "\u00e9" * 55]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def sender(trace_state: TraceState | None = None) -> Any:
    """The caller's span, as the current one (a context received from elsewhere)."""
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(1),
                          trace_state=trace_state or TraceState())
    return trace.use_span(NonRecordingSpan(context))


# --- send_task ------------------------------------------------------------------------------

def test_send_carries_the_callers_trace_context(tmp_path: Path) -> None:
    api = FakeCustomObjects()
    client = fake_client(tmp_path, api)
    with sender(TraceState([("acme", "deal-7")])):
        client.send("acme_solution.tasks.lime.add", "my-app", [1, 2])
    annotations = api.created[-1]["metadata"]["annotations"]
    assert annotations == {"limetask.io/traceparent": TRACEPARENT, "limetask.io/tracestate": "acme=deal-7"}


def test_send_in_a_span_of_the_sdk(tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    api = FakeCustomObjects()
    client = fake_client(tmp_path, api)
    with spans[0].get_tracer("app").start_as_current_span("sync deals") as span:
        client.send("acme_solution.tasks.lime.add", "my-app", [1, 2])
    context = span.get_span_context()
    assert api.created[-1]["metadata"]["annotations"] == {
        "limetask.io/traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}


def test_send_without_a_trace_or_without_opentelemetry_adds_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeCustomObjects()
    client = fake_client(tmp_path, api)
    client.send("acme_solution.tasks.lime.add", "my-app", [1, 2])
    assert "annotations" not in api.created[-1]["metadata"]
    monkeypatch.setattr(tracing, "_api", None)  # as if the package were not installed
    with sender():
        client.send("acme_solution.tasks.lime.add", "my-app", [1, 2])
    assert "annotations" not in api.created[-1]["metadata"]


# --- the runner's span ----------------------------------------------------------------------

def runner_env(task: str, *args: object, **extra: str) -> dict[str, str]:
    return {"LIMETASK_TASK_ID": "t-1", "LIMETASK_TASK": task, "LIMETASK_APP": "acme",
            "LIMETASK_ARGS": json.dumps(list(args)), "LIMETASK_KWARGS": "{}", "LIMETASK_ATTEMPT": "2",
            "LIMETASK_NAMESPACE": "solutions", **extra}


def run_traced(env: dict[str, str], provider: TracerProvider) -> Any:
    with runner_tracing.task_span(env, tracer_provider=provider) as record:
        verdict = runner.run(env)
        record(verdict)
    return verdict


def test_the_runners_span_links_to_the_sender(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    env = runner_env("acme_solution.tasks.lime.add", 2, 3, LIMETASK_TRACEPARENT=TRACEPARENT,
                     LIMETASK_TRACESTATE="acme=deal-7")
    assert run_traced(env, spans[0]).result == 5
    [span] = spans[1].get_finished_spans()
    assert span.name == "run acme_solution.tasks.lime.add" and span.kind == SpanKind.CONSUMER
    # A link to the sender's span, in a trace of its own: not its child.
    assert span.parent is None and span.context.trace_id != TRACE_ID
    [link] = span.links
    assert (link.context.trace_id, link.context.span_id) == (TRACE_ID, SPAN_ID)
    assert link.context.trace_state.get("acme") == "deal-7"
    assert dict(span.attributes or {}) == {
        "limetask.task.id": "t-1", "limetask.task.name": "acme_solution.tasks.lime.add", "limetask.app": "acme",
        "limetask.attempt": 2, "limetask.namespace": "solutions", "limetask.outcome": "SUCCESS"}
    assert span.status.status_code == StatusCode.UNSET


def test_a_failure_is_the_spans_outcome(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    env = runner_env("acme_solution.tasks.lime.fail", "deal 7 is locked", LIMETASK_TRACEPARENT=TRACEPARENT)
    assert run_traced(env, spans[0]).state == "FAILURE"
    [span] = spans[1].get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["limetask.outcome"] == "FAILURE" and attributes["error.type"] == "ValueError"
    assert attributes["limetask.error.reason"] == "TaskRaised"
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "deal 7 is locked"


def test_the_task_runs_in_the_span(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """The task's own spans are children of the attempt's span."""
    from lime_task import task

    tracer = spans[0].get_tracer("solution")

    @task(name="tracing_tests.instrumented")
    def instrumented(app: Any) -> str:
        with tracer.start_as_current_span("call the CRM"):
            return "ok"

    run_traced(runner_env("tracing_tests.instrumented"), spans[0])
    inner, outer = spans[1].get_finished_spans()
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


@pytest.mark.parametrize("traceparent", MALFORMED)
def test_a_malformed_trace_context_is_ignored(traceparent: str, spans: tuple[TracerProvider,
                                                                             InMemorySpanExporter]) -> None:
    env = runner_env("acme_solution.tasks.lime.add", 1, 1, LIMETASK_TRACEPARENT=traceparent,
                     LIMETASK_TRACESTATE="\x00" * 3)
    assert run_traced(env, spans[0]).result == 2
    [span] = spans[1].get_finished_spans()
    assert span.links == () or list(span.links) == []
    task = TaskView.from_body({"metadata": {"name": "t1", "namespace": "ns", "uid": "u",
                                            "annotations": {"limetask.io/traceparent": traceparent}},
                               "spec": {"task": "acme.add", "app": "acme"}})
    assert operator_tracing.runner_env(task.annotations) == {}
    assert tracing.remote_context(traceparent) is None


def test_nothing_is_configured_without_otel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracing.export_requested({})
    assert not tracing.export_requested({"OTEL_SERVICE_NAME": "x"})
    assert not tracing.export_requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert not tracing.export_requested({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert tracing.export_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert tracing.export_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"})
    assert tracing.export_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.configure_from_env("x", {}) is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not operator_tracing.configure({})
    with operator_tracing.span("limetask publish", traced_task()) as current:
        assert current is None


SOLUTION = '''
import sys
from lime_task import task

@task
def modules(app):
    return sorted({m.split(".")[0] for m, module in sys.modules.items()
                   if m.startswith("opentelemetry") and module is not None})
'''


@pytest.fixture
def solution(tmp_path: Path) -> tuple[str, dict[str, str]]:
    name = f"tracing_solution_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOLUTION))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMETASK_", "OTEL_"))}
    env.update(runner_env(f"{name}.modules"), LIMETASK_IMPORTS=name, LIMETASK_VERDICT_PATH=str(tmp_path / "verdict"),
               LIMETASK_TRACEPARENT=TRACEPARENT, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    return name, env


def run_runner(env: dict[str, str], *before: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    code = "; ".join([*before, "import sys, limetask_runner.main as m; sys.exit(m.main())"])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    return json.loads(Path(env["LIMETASK_VERDICT_PATH"]).read_text()), done


def test_the_runner_does_not_even_import_opentelemetry_without_settings(solution: tuple[str, dict[str, str]]) -> None:
    verdict, done = run_runner(solution[1])
    assert done.returncode == 0, done.stderr
    assert verdict == {"state": "SUCCESS", "result": []}


def test_the_runner_works_without_the_packages(solution: tuple[str, dict[str, str]]) -> None:
    """OTEL_* set, but OpenTelemetry not installed: the task runs as ever."""
    env = {**solution[1], "OTEL_TRACES_EXPORTER": "console"}
    verdict, done = run_runner(env, "import sys", "sys.modules['opentelemetry'] = None")
    assert done.returncode == 0, done.stderr
    assert verdict == {"state": "SUCCESS", "result": []}


def test_the_runner_exports_to_the_console_when_asked(solution: tuple[str, dict[str, str]]) -> None:
    env = {**solution[1], "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "acme-tasks"}
    verdict, done = run_runner(env)
    assert done.returncode == 0 and verdict["state"] == "SUCCESS", done.stderr
    span = json.loads(done.stdout)
    assert span["name"] == f"run {solution[0]}.modules" and span["kind"] == "SpanKind.CONSUMER"
    assert span["links"][0]["context"]["trace_id"] == f"0x{TRACE_ID:032x}"
    assert span["resource"]["attributes"]["service.name"] == "acme-tasks"


def test_the_runner_exports_over_otlp_http(solution: tuple[str, dict[str, str]]) -> None:
    receiver = OtlpReceiver()
    try:
        env = {**solution[1], "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        verdict, done = run_runner(env)
        assert done.returncode == 0 and verdict["state"] == "SUCCESS", done.stderr
        [(resource, span)] = receiver.spans()  # exported before the process ended
    finally:
        receiver.close()
    assert span.name == f"run {solution[0]}.modules"
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [
        (f"{TRACE_ID:032x}", f"{SPAN_ID:016x}")]
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["limetask.outcome"].string_value == "SUCCESS"
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "limetask-runner"


# --- the operator ---------------------------------------------------------------------------

def traced_task(traceparent: str | None = TRACEPARENT, **status: Any) -> TaskView:
    meta: dict[str, Any] = {"name": "t1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5",
                            "creationTimestamp": "2026-05-01T10:00:00Z"}
    if traceparent is not None:
        meta["annotations"] = {"limetask.io/traceparent": traceparent, "limetask.io/tracestate": "acme=a$(HOME)"}
    return TaskView.from_body({"metadata": meta, "spec": {"task": "acme_solution.tasks.lime.add", "app": "my-app",
                                                          "args": [1, 2]}, "status": status})


@pytest.fixture
def operator_spans(spans: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    operator_tracing.use(spans[0])
    yield spans[1]
    operator_tracing.use(None)


def test_the_job_passes_the_trace_context_to_the_runner() -> None:
    env = {e["name"]: e["value"] for e in build_job(traced_task(), 1, OperatorSettings())["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    # Kubernetes would expand $(HOME) in an env value: written $$ so the runner reads it as sent.
    assert env["LIMETASK_TRACEPARENT"] == TRACEPARENT and env["LIMETASK_TRACESTATE"] == "acme=a$$(HOME)"
    untraced = build_job(traced_task(None), 1, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in untraced["env"] if e["name"].startswith("LIMETASK_TRACE")]


def test_the_operators_spans_join_the_senders_trace(operator_spans: InMemorySpanExporter) -> None:
    from limetask_operator.reconciler import Reconciler

    from tests.unit.test_reconciler import FakeKube

    async def main() -> list[Any]:
        kube = FakeKube(["ok"] * 3)
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        task = traced_task()
        body = {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
                "metadata": {**task.metadata, "annotations": task.annotations,
                             "creationTimestamp": task.created, "generation": 1},
                "spec": task.spec, "status": {}}
        rec.watches = []
        rec.task_event("ADDED", copy.deepcopy(body))
        await rec.reconcile(("ns", "t1"))
        return kube.calls

    calls = asyncio.run(main())
    [job] = [c[2] for c in calls if c[0] == "POST"]
    assert {"name": "LIMETASK_TRACEPARENT", "value": TRACEPARENT} in job["spec"]["template"]["spec"]["containers"][0][
        "env"]
    found = {s.name: s for s in operator_spans.get_finished_spans()}
    assert set(found) == {"limetask admit", "limetask create Job"}
    for span in found.values():
        assert span.context.trace_id == TRACE_ID and span.parent is not None and span.parent.span_id == SPAN_ID
        assert span.attributes is not None and span.attributes["limetask.task.id"] == "t1"
    # The admission spans the wait in line, from the task's creation.
    assert found["limetask admit"].start_time == 1777629600 * 10**9
    assert found["limetask create Job"].kind == SpanKind.CLIENT
    assert found["limetask create Job"].attributes["limetask.job"] == "t1-1"  # type: ignore[index]


def test_publishing_the_event_is_a_span_of_the_trace(operator_spans: InMemorySpanExporter) -> None:
    from limetask_operator.caches import Caches
    from limetask_operator.events import EventDispatcher

    from tests.unit.test_events import EchoingKube, FailingSink

    async def main() -> None:
        caches = Caches()
        dispatcher = EventDispatcher(EchoingKube(caches), OperatorSettings(), caches)  # type: ignore[arg-type]
        dispatcher.sink = FailingSink()
        body = {"metadata": {**traced_task().metadata, "annotations": {"limetask.io/traceparent": TRACEPARENT}},
                "spec": {"app": "acme", "task": "acme.add"},
                "status": {"state": "SUCCESS", "result": 3, "attempts": 1, "completedAt": "2024-01-01T00:00:00Z"}}
        caches.put_task(body, written=True)
        await dispatcher._deliver(("ns", "t1"))

    asyncio.run(main())
    [span] = operator_spans.get_finished_spans()
    assert span.name == "limetask publish" and span.kind == SpanKind.PRODUCER
    assert span.context.trace_id == TRACE_ID and span.parent is not None and span.parent.span_id == SPAN_ID
    assert span.status.status_code == StatusCode.ERROR  # the broker did not confirm: recorded on the span
    assert span.attributes is not None and span.attributes["limetask.routing_key"] == "core.task.acme.add.success.v1"


def test_a_task_without_a_trace_context_gets_no_operator_spans(operator_spans: InMemorySpanExporter) -> None:
    for traceparent in (None, *MALFORMED):
        with operator_tracing.span("limetask publish", traced_task(traceparent)) as current:
            assert current is None
        operator_tracing.admitted(traced_task(traceparent), 1)
    assert operator_spans.get_finished_spans() == ()


def test_an_unreachable_collector_costs_no_verdict(solution: tuple[str, dict[str, str]]) -> None:
    """The exporter would retry for its own timeout; the runner waits a bounded while, then ends
    with its verdict and exit status as ever."""
    env = {**solution[1], "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: refused
    verdict, done = run_runner(env)
    assert done.returncode == 0, done.stderr
    assert verdict["state"] == "SUCCESS"


def test_a_bad_otel_setting_costs_the_traces_not_the_task(solution: tuple[str, dict[str, str]]) -> None:
    env = {**solution[1], "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}  # gRPC: its exporter is not installed
    verdict, done = run_runner(env)
    assert done.returncode == 0 and verdict["state"] == "SUCCESS", done.stderr
    assert "opentelemetry-exporter-otlp-proto-grpc is not installed" in done.stderr


def test_the_operator_exports_when_asked() -> None:
    """configure() at start, from OTEL_*: the spans of a traced task go to the exporter, with the
    operator's service name, by shutdown() at the end."""
    code = textwrap.dedent('''
        from limetask_operator import tracing
        from limetask_operator.model import TaskView
        task = TaskView.from_body({"metadata": {"name": "t1", "namespace": "ns", "annotations": {
            "limetask.io/traceparent": "%s"}}, "spec": {"task": "acme.add", "app": "acme"}})
        assert tracing.configure()
        with tracing.span("limetask create Job", task, "CLIENT", attempt=1):
            pass
        tracing.shutdown()
    ''' % TRACEPARENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OTEL_TRACES_EXPORTER": "console"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    span = json.loads(done.stdout)
    assert span["name"] == "limetask create Job" and span["parent_id"] == f"0x{SPAN_ID:016x}"
    assert span["context"]["trace_id"] == f"0x{TRACE_ID:032x}"
    assert span["resource"]["attributes"]["service.name"] == "limetask-operator"
