"""Operating the operator: metrics, retention of finished tasks, clean shutdown."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Operator, wait_until

from lime_task import NotFoundError, TaskClient

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture
def alone(cluster: Cluster, namespace: str, running_operator: Operator, tmp_path: Path) -> Any:
    """An operator of the test's own, watching only its namespace (the session one pauses)."""
    running_operator.stop()
    started: list[Operator] = []

    def start(**env: str) -> Operator:
        op = Operator(cluster, tmp_path, args=("--namespace", namespace), extra_env=env)
        op.start()
        started.append(op)
        return op
    yield start
    for op in started:
        op.stop()
    running_operator.start()


def test_metrics(alone: Any, cluster: Cluster, namespace: str) -> None:
    port = free_port()
    alone(LIMETASK_METRICS_PORT=str(port))
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    ok = client.send(f"{T}.add", "my-app", [1, 2])
    bad = client.send(f"{T}.fail", "my-app", ["x"])
    client.wait(ok.id, "my-app", timeout=60)
    client.wait(bad.id, "my-app", timeout=60)
    wait_until(lambda: client.get_status(bad.id, "my-app").event_confirmed, timeout=30, message="events")
    m = wait_until(lambda: (x := scrape(port)).get('limetask_events_unconfirmed') == 0 and x, timeout=30,
                   message="metrics to settle")
    assert m['limetask_tasks{reason="",state="SUCCESS"}'] == 1
    assert m['limetask_tasks{reason="TaskRaised",state="FAILURE"}'] == 1
    assert m['limetask_tasks_finished_total{reason="TaskRaised",state="FAILURE"}'] == 1
    assert m["limetask_jobs_created_total"] == 2
    assert m["limetask_queue_latency_seconds_count"] == 2
    assert m["limetask_run_seconds_count"] == 2
    assert m['limetask_attempts_bucket{le="1.0"}'] == 2
    assert m["limetask_workqueue_depth"] == 0
    assert 'limetask_events_total{outcome="confirmed",sink="log"}' in m


def test_retention_deletes_finished_tasks_after_their_event(alone: Any, cluster: Cluster, namespace: str) -> None:
    alone(LIMETASK_RETENTION_SECONDS="2")
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    s = client.send(f"{T}.add", "my-app", [1, 2])
    assert client.wait(s.id, "my-app", timeout=60).result == 3
    running = client.send(f"{T}.sleep", "my-app", [8])

    def deleted() -> bool:
        try:
            client.get_status(s.id, "my-app")
        except NotFoundError:
            return True
        return False
    wait_until(deleted, timeout=30, message="the finished task to be deleted by retention")
    assert not client.get_status(running.id, "my-app").is_completed()  # unfinished work stays


def test_retention_keeps_tasks_whose_event_is_owed(alone: Any, cluster: Cluster, namespace: str) -> None:
    alone(LIMETASK_RETENTION_SECONDS="1", LIMETASK_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    s = client.send(f"{T}.add", "my-app", [1, 2])
    assert client.wait(s.id, "my-app", timeout=60).result == 3
    time.sleep(5)
    assert client.get_status(s.id, "my-app").event_confirmed is False  # still owed, still there


def test_operator_stops_cleanly_on_sigterm(alone: Any) -> None:
    op = alone()
    assert op.proc is not None
    op.proc.send_signal(signal.SIGTERM)
    assert op.proc.wait(timeout=20) == 0
    assert "Traceback" not in op.log_path.read_text()


def test_metrics_when_events_are_published_before_the_final_write(alone: Any, cluster: Cluster,
                                                                  namespace: str) -> None:
    from conftest import broker_url

    port = free_port()
    alone(LIMETASK_METRICS_PORT=str(port), LIMETASK_BROKER_URL=broker_url())
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    ids = []
    for i in range(3):  # the first opens the broker connection; later ones are confirmed inline
        s = client.send(f"{T}.add", "my-app", [i, 1])
        client.wait(s.id, "my-app", timeout=60)
        wait_until(lambda s=s: client.get_status(s.id, "my-app").event_confirmed, timeout=30, message="event")
        ids.append(s.id)
    m = scrape(port)
    assert m['limetask_attempts_bucket{le="1.0"}'] == 3  # a settled task is still counted with its attempts
    assert m["limetask_run_seconds_count"] == 3
    assert m["limetask_queue_latency_seconds_count"] == 3
    assert m['limetask_events_total{outcome="confirmed",sink="broker"}'] >= 3
