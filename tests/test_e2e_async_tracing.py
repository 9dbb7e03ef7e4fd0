"""End to end on the local cluster: `async def` tasks in a real runner pod, and one task's trace,
from the span that sent it to the runner's span (linked) and the operator's (joined), exported
over OTLP/HTTP to a receiver in this test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Cluster, Operator, wait_until
from otlp_receiver import OtlpReceiver

from lime_task import SUCCESS, TaskClient

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
APP = "my-app"


def test_an_async_task_runs_to_completion(tasks: TaskClient) -> None:
    final = tasks.send(f"{T}.fetch_deals", APP, [5, 0.2]).wait(timeout=90)
    assert final.status == SUCCESS and final.result == "fetched 5 deals of my-app at once", final
    assert final.attempts == 1


def test_an_async_tasks_soft_time_limit_reaches_it_at_its_await(tasks: TaskClient) -> None:
    """It sleeps 45 s in an await; 15 s into the attempt the runner throws SoftTimeLimitExceeded
    in there, and the task awaits its cleanup and returns, long before the 90 s timeout."""
    final = tasks.send(f"{T}.soft_limited_async", APP, [45]).wait(timeout=90)
    assert final.status == SUCCESS, final
    assert final.result == "stopped at the soft time limit and cleaned up (async)"


@pytest.fixture
def receiver(local: Cluster) -> Iterator[OtlpReceiver]:
    """On the node's bridge address, which both runner pods and the operator reach."""
    api_ip = json.loads((local.kubeconfig.parent / "cluster.json").read_text())["api_ip"]
    found = OtlpReceiver(api_ip)
    yield found
    found.close()


@pytest.fixture
def traced_operator(running_operator: Operator, receiver: OtlpReceiver) -> Iterator[Operator]:
    """The session operator, restarted with OTEL_* for itself and for its runners (the chart's
    operator.extraEnv and runner.env), and restarted as it was afterwards."""
    saved = dict(running_operator.extra_env)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "500"}
    runner_env = {**json.loads(saved.get("LIMETASK_RUNNER_ENV") or "{}"), **otel}
    running_operator.stop()
    running_operator.extra_env = {**saved, **otel, "LIMETASK_RUNNER_ENV": json.dumps(runner_env)}
    try:
        running_operator.start()
        yield running_operator
    finally:
        running_operator.stop()
        running_operator.extra_env = saved
        running_operator.start()


def attributes(span: Any) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return {a.key: value(a.value) for a in span.attributes}


def test_a_tasks_trace_reaches_the_collector(traced_operator: Operator, receiver: OtlpReceiver,
                                             tasks: TaskClient) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("solution").start_as_current_span("sync deals") as sender:
        sent = tasks.send(f"{T}.add", APP, [2, 3])
    final = sent.wait(timeout=90)
    assert final.status == SUCCESS and final.result == 5, final
    ids = sender.get_span_context()
    trace_id, span_id = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"

    def runner_span() -> Any:
        return next((s for r, s in receiver.spans() if attributes(s).get("limetask.task.id") == sent.id
                     and s.name.startswith("run ")), None)

    run = wait_until(runner_span, timeout=60, message="the runner's span at the receiver")
    # Its own trace, with a link to the span that sent the task.
    assert run.name == f"run {T}.add" and run.trace_id.hex() != trace_id and not run.parent_span_id
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in run.links] == [(trace_id, span_id)]
    assert {k: v for k, v in attributes(run).items() if k != "limetask.namespace"} == {
        "limetask.task.id": sent.id, "limetask.task.name": f"{T}.add", "limetask.app": APP,
        "limetask.attempt": 1, "limetask.outcome": "SUCCESS"}

    def operator_spans() -> dict[str, Any] | None:
        joined = {s.name: s for r, s in receiver.spans() if s.trace_id.hex() == trace_id}
        wanted = {"limetask admit", "limetask create Job", "limetask publish"}
        return joined if wanted <= set(joined) else None

    joined = wait_until(operator_spans, timeout=60, message="the operator's spans in the sender's trace")
    for name in ("limetask admit", "limetask create Job", "limetask publish"):
        assert joined[name].parent_span_id.hex() == span_id, name
        assert attributes(joined[name])["limetask.task.id"] == sent.id
    assert attributes(joined["limetask create Job"])["limetask.job"] == f"{sent.id}-1"
