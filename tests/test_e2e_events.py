"""Completion events on the real RabbitMQ: contract, filtering, outages and operator restarts."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from conftest import Cluster, Operator, broker_url, wait_until

from lime_task import FAILURE, SUCCESS, TaskClient
from lime_task.events import consume

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

T = "acme_solution.tasks.lime"


class Collector:
    """A consumer on its own thread (through lime_task.events.consume), collecting events."""

    def __init__(self, app: str, patterns: list[str] | None = None) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.stop_event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(patterns,), daemon=True)
        self.thread.start()
        assert self.ready.wait(15), f"the consumer did not start: {self.error}"

    def _run(self, patterns: list[str] | None) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            ready = asyncio.Event()

            async def handler(event: dict[str, Any]) -> None:
                self.events.append(event)

            task = asyncio.create_task(consume(broker_url(), self.app, handler, patterns=patterns,
                                               stop=self.stop_event, ready=ready))
            await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            self.ready.set()
            await task
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.ready.set()

    def ids(self) -> set[str]:
        """The task ids events arrived for, each checked to carry its incarnation's message id."""
        for e in self.events:
            assert e["message_id"] == f"{e['uid']}.{e['state']}", e
        return {f"{e['id']}.{e['state']}" for e in self.events}

    def stop(self) -> None:
        if self.loop and self.stop_event:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture
def app() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def collector(app: str) -> Any:
    c = Collector(app)
    yield c
    c.stop()


def test_success_and_failure_events(tasks: TaskClient, app: str, collector: Collector) -> None:
    ok = tasks.send(f"{T}.add", app, [40, 2])
    bad = tasks.send(f"{T}.fail", app, ["the CRM said no"])
    for s in (ok, bad):
        tasks.wait(s.id, app, timeout=60)
    wait_until(lambda: len(collector.events) >= 2, timeout=30, message="two events")
    time.sleep(0.5)
    assert len(collector.events) == 2, collector.events
    by_id = {e["id"]: e for e in collector.events}
    s = by_id[ok.id]
    assert s["routing_key"] == f"core.task.{T}.add.success.v1"
    assert s["message_id"] == f"{s['uid']}.SUCCESS" and s["namespace"] == ok.namespace
    assert (s["state"], s["result"], s["task"], s["app"], s["attempts"]) == (SUCCESS, 42, f"{T}.add", app, 1)
    assert s["created_at"] and s["started_at"] and s["completed_at"] and "error" not in s
    f = by_id[bad.id]
    assert f["routing_key"] == f"core.task.{T}.fail.failure.v1"
    assert f["message_id"] == f"{f['uid']}.FAILURE" and f["uid"] != s["uid"]
    assert f["state"] == FAILURE and "result" not in f
    assert f["error"] == {"type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}
    for t in (ok, bad):
        st = wait_until(lambda t=t: (x := tasks.get_status(t.id, app)).event_confirmed and x, timeout=30,
                        message="the event to be confirmed in status")
        assert st.event_confirmed


def test_failure_binding_sees_failures_only(tasks: TaskClient, app: str) -> None:
    failures = Collector(app, ["core.task.#.failure.v1"])
    try:
        sent = [tasks.send(f"{T}.add", app, [1, 1]), tasks.send(f"{T}.fail", app, ["x"]),
                tasks.send(f"{T}.add", app, [2, 2]), tasks.send(f"{T}.crash", app)]
        for s in sent:
            tasks.wait(s.id, app, timeout=60)
        wait_until(lambda: len(failures.events) >= 2, timeout=30, message="the failure events")
        for s in sent:
            wait_until(lambda s=s: tasks.get_status(s.id, app).event_confirmed, timeout=30, message="confirmed")
        time.sleep(0.5)
        assert sorted(e["id"] for e in failures.events) == sorted([sent[1].id, sent[3].id])
        assert all(e["routing_key"].endswith(".failure.v1") for e in failures.events)
    finally:
        failures.stop()


def test_broker_outage_then_all_events_arrive(tasks: TaskClient, app: str, collector: Collector,
                                              broker_proxy: Any) -> None:
    broker_proxy.disable()
    try:
        sent = [tasks.send(f"{T}.add", app, [i, 0]) for i in range(50)]
        for s in sent:
            final = tasks.wait(s.id, app, timeout=120)
            assert final.status == SUCCESS  # tasks go on while the broker is down
        unconfirmed = [tasks.get_status(s.id, app) for s in sent]
        assert not any(s.event_confirmed for s in unconfirmed)
        assert collector.events == []
    finally:
        broker_proxy.enable()
    wait_until(lambda: len(collector.ids()) >= 50, timeout=120, message="all 50 events")
    assert collector.ids() == {f"{s.id}.SUCCESS" for s in sent}
    for s in sent:
        wait_until(lambda s=s: tasks.get_status(s.id, app).event_confirmed, timeout=60,
                   message=f"event of {s.id} confirmed")


def outbox(cluster: Cluster, namespace: str) -> dict[str, int]:
    """Delivery attempts recorded in status.event, per task UID."""
    import json

    listed = json.loads(cluster.run_kubectl("get", "lt", "-o", "json", namespace=namespace).stdout)
    return {t["metadata"]["uid"]: int(((t.get("status") or {}).get("event") or {}).get("deliveryAttempts") or 0)
            for t in listed["items"]}


def test_event_retries_back_off_during_an_outage(tasks: TaskClient, app: str, broker_proxy: Any,
                                                 running_operator: Operator, cluster: Cluster,
                                                 namespace: str) -> None:
    """With the broker down, an unconfirmed event is tried no more often than the backoff says,
    although each outbox write comes back through the watch. (The outbox is written at most every
    events.statusWriteSeconds, 5 s here, and carries the count of tries; tests/unit/
    test_event_bounds.py counts the writes themselves over a day.)"""
    retry_max = 2.0  # broker.retryMaxSeconds in the session's chart values
    window = 10.0
    broker_proxy.disable()
    try:
        sent = [tasks.send(f"{T}.add", app, [i, 0]) for i in range(20)]
        for s in sent:
            assert tasks.wait(s.id, app, timeout=120).status == SUCCESS
        # From the third failure on, the delay is the longest (0.5, 1, then 2 s).
        wait_until(lambda: len(a := outbox(cluster, namespace)) == len(sent) and min(a.values()) >= 3,
                   timeout=60, message="three recorded failures per task")
        log_start = running_operator.log_path.stat().st_size
        before = outbox(cluster, namespace)
        time.sleep(window)
        after = outbox(cluster, namespace)
        with running_operator.log_path.open("rb") as log:
            log.seek(log_start)
            lines = log.read().decode(errors="replace")
    finally:
        broker_proxy.enable()
    publishes = sum(lines.count(f"event {uid}.SUCCESS not confirmed") for uid in before)
    writes = sum(after[uid] - before[uid] for uid in before)
    # One try per task every retry_max seconds, and one more at the window's edge.
    bound = len(sent) * (int(window / retry_max) + 1)
    assert len(sent) <= publishes <= bound, (publishes, bound)
    assert len(sent) <= writes <= bound, (writes, bound)


def test_event_survives_operator_kill(tasks: TaskClient, app: str, collector: Collector, broker_proxy: Any,
                                      running_operator: Operator, cluster: Cluster, namespace: str) -> None:
    broker_proxy.disable()
    try:
        sent = [tasks.send(f"{T}.add", app, [i, 1]) for i in range(5)]
        for s in sent:
            assert tasks.wait(s.id, app, timeout=60).status == SUCCESS
        # The outbox shows what is owed, with the last error and no credentials (written within
        # events.statusWriteSeconds of the task's completion).
        raw = wait_until(lambda: (r := cluster.run_kubectl(
            "get", "lt", sent[0].id, "-o", "jsonpath={.status.event}", namespace=namespace).stdout)
            and "lastError" in r and r, timeout=30, message="a recorded delivery failure")
        assert '"confirmed":false' in raw
        assert "guest:guest" not in raw
        running_operator.kill(9)  # finished, not yet confirmed: the event lives in the status only
    finally:
        broker_proxy.enable()
    running_operator.start()
    wait_until(lambda: collector.ids() >= {f"{s.id}.SUCCESS" for s in sent}, timeout=60,
               message="the events after the restart")
    for s in sent:
        wait_until(lambda s=s: tasks.get_status(s.id, app).event_confirmed, timeout=30, message="confirmed")


def test_no_broker_events_go_to_log_and_kubernetes_events(
        cluster: Cluster, namespace: str, running_operator: Operator, tmp_path: Any, app: str) -> None:
    running_operator.stop()
    alone = Operator(cluster, tmp_path, args=("--namespace", namespace))
    try:
        alone.start()
        client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
        s = client.send(f"{T}.add", app, [2, 2])
        assert client.wait(s.id, app, timeout=60).result == 4
        st = wait_until(lambda: (x := client.get_status(s.id, app)).event_confirmed and x, timeout=30,
                        message="the logged event to count as delivered")
        assert st.event_confirmed
        events = cluster.run_kubectl("get", "events", "--field-selector", f"involvedObject.name={s.id}",
                                     "-o", "jsonpath={range .items[*]}{.reason} {.message}{'\\n'}{end}",
                                     namespace=namespace).stdout
        assert f"TaskSucceeded core.task.{T}.add.success.v1" in events, events
        log = alone.log_path.read_text()
        assert log.count("no broker configured") == 1
        uid = cluster.run_kubectl("get", "lt", s.id, "-o", "jsonpath={.metadata.uid}", namespace=namespace).stdout
        assert f"event core.task.{T}.add.success.v1 {uid}.SUCCESS" in log
    finally:
        alone.stop()
        running_operator.start()


def test_unreachable_broker_is_a_warning_not_a_crash(cluster: Cluster, namespace: str,
                                                     running_operator: Operator, tmp_path: Any, app: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    running_operator.stop()
    alone = Operator(cluster, tmp_path, args=("--namespace", namespace), extra_env={
        "LIMETASK_BROKER_URL": f"amqp://guest:{secret}@127.0.0.1:{dead_port}/",
        "LIMETASK_EVENT_RETRY_MAX_SECONDS": "1", "LIMETASK_EVENT_STATUS_WRITE_SECONDS": "2"})
    try:
        alone.start()
        client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
        s = client.send(f"{T}.add", app, [1, 2])
        assert client.wait(s.id, app, timeout=60).result == 3
        raw = wait_until(lambda: (r := cluster.run_kubectl(
            "get", "lt", s.id, "-o", "jsonpath={.status.event}", namespace=namespace).stdout) and "lastError" in r
            and r, timeout=30, message="a recorded delivery failure")
        time.sleep(3)
        assert alone.alive()
        log = alone.log_path.read_text()
        assert "not confirmed" in log
        assert secret not in log and secret not in raw
        assert client.get_status(s.id, app).event_confirmed is False
    finally:
        alone.stop()
        running_operator.start()


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:5672/", "must start with amqp:// or amqps://"),
    ("amqp://", "has no host"),
    ("amqp://guest:pw@127.0.0.1:99999/", "malformed broker URL"),
])
def test_malformed_broker_url_is_a_clear_startup_error(cluster: Cluster, crd: None, tmp_path: Any,
                                                       url: str, words: str) -> None:
    op = Operator(cluster, tmp_path, extra_env={"LIMETASK_BROKER_URL": url})
    with pytest.raises(AssertionError, match="exited at start"):
        op.start()
    assert op.proc is not None and op.proc.returncode == 2
    log = op.log_path.read_text()
    assert words in log and "invalid settings" in log
    assert ":pw@" not in log


def test_a_forged_status_is_never_acted_on(tasks: TaskClient, app: str, collector: Collector, api_client: Any,
                                           namespace: str) -> None:
    """A status written by someone else (here a cluster admin's forged SUCCESS) neither stops the
    running pod nor gets published: the operator derives the status again from the Job."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    status = tasks.send(f"{T}.sleep", app, [6])
    wait_until(lambda: tasks.get_status(status.id, app).status == "STARTED", timeout=60, message="STARTED")
    uid = api.get_namespaced_custom_object("limetask.io", "v1alpha1", namespace, "limetasks", status.id)[
        "metadata"]["uid"]
    api.patch_namespaced_custom_object_status("limetask.io", "v1alpha1", namespace, "limetasks", status.id, {
        "status": {"state": "SUCCESS", "result": "forged", "completedAt": "2020-01-01T00:00:00Z",
                   "event": {"confirmed": False, "messageId": f"{uid}.SUCCESS"}}})
    final = wait_until(lambda: (s := tasks.get_status(status.id, app)).result == "slept 6s" and s, timeout=60,
                       message="the true result")
    assert final.status == SUCCESS and final.attempts == 1
    wait_until(lambda: collector.events, timeout=30, message="the completion event")
    time.sleep(2)
    assert [e.get("result") for e in collector.events] == ["slept 6s"]
    warnings = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "StatusOverwritten" and e.involved_object.name == status.id for e in warnings)


def test_a_consumer_drops_messages_that_are_not_events(tasks: TaskClient, app: str, collector: Collector) -> None:
    """Anyone may publish to the exchange: a body that is not a task event is dropped (not
    requeued for ever), and the consumer goes on."""
    import aio_pika

    async def publish() -> None:
        connection = await aio_pika.connect(broker_url())
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(f"lime.{app}", aio_pika.ExchangeType.TOPIC, durable=True)
            for body in (b"not json", b"[1, 2]", b"[" * 5000 + b"]" * 5000):
                await exchange.publish(aio_pika.Message(body=body, message_id=uuid.uuid4().hex),
                                       routing_key="core.task.x.success.v1")
        finally:
            await connection.close()

    asyncio.run(publish())
    status = tasks.send(f"{T}.add", app, [1, 1])
    assert tasks.wait(status.id, app, timeout=60).status == SUCCESS
    wait_until(lambda: collector.events, timeout=30, message="the task's event")
    assert [e["id"] for e in collector.events] == [status.id]
    assert collector.error is None
