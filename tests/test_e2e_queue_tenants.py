"""A queue's namespaceSelector end to end on the local cluster: the operator as the chart deploys it
(its ClusterRole lists and watches namespaces) holds a task of a namespace the selector does not
match, with reason QueueForbidden and no pod, and admits it once the namespace is labelled; the
CRD refuses a selector that is not one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Cluster, wait_until
from kubernetes import client

from lime_task import SUCCESS, TaskClient
from lime_task.resource import GROUP, QUEUE_PLURAL, VERSION

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"


@pytest.fixture
def queue_api(api_client: Any) -> Iterator[tuple[client.CustomObjectsApi, list[str]]]:
    api = client.CustomObjectsApi(api_client)
    made: list[str] = []
    yield api, made
    for name in made:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, name)
        except client.ApiException:
            pass


def make_queue(api: client.CustomObjectsApi, made: list[str], dry_run: bool = False, **spec: Any) -> str:
    name = f"tenants-{uuid.uuid4().hex[:8]}"
    api.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": name}, "spec": spec},
        **({"dry_run": "All"} if dry_run else {}))
    if not dry_run:
        made.append(name)
    return name


def pods_of(api_client: Any, namespace: str) -> list[str]:
    return [p.metadata.name for p in client.CoreV1Api(api_client).list_namespaced_pod(namespace).items]


def test_a_namespace_the_selector_does_not_match_waits_until_it_is_labelled(
        cluster: Cluster, api_client: Any, namespace: str, tasks: TaskClient,
        queue_api: tuple[client.CustomObjectsApi, list[str]]) -> None:
    api, made = queue_api
    q = make_queue(api, made, namespaceSelector={"matchLabels": {"team": "a"}})
    sent = tasks.send(f"{T}.add", "my-app", [1, 2], qos=q)

    def forbidden() -> Any:
        status = tasks.get_status(sent.id, "my-app")
        return status if status.queued and status.queue_reason == "QueueForbidden" else None

    held = wait_until(forbidden, timeout=60, message="the task to wait with reason QueueForbidden")
    assert held.status == "PENDING" and held.queue == q and held.queue_position is None
    assert held.queue_message.startswith(f"namespace {namespace} may not use queue {q}: its labels do not match "
                                         f"LimeTaskQueue {q}'s namespaceSelector (team=a)"), held.queue_message
    # The queue has room: still no pod while the namespace does not match (the operator's pass runs
    # every second), and the queue's status (written within 5 s of a change) does not count it.
    time.sleep(6)
    assert pods_of(api_client, namespace) == []
    assert forbidden() is not None
    status = wait_until(lambda: api.get_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, q).get("status"),
                        timeout=30, message="the queue's status")
    assert status["waiting"] == 0, "a forbidden task is not counted among the queue's waiting"

    cluster.run_kubectl("label", "namespace", namespace, "team=a")
    done = wait_until(lambda: (s := tasks.get_status(sent.id, "my-app")).is_completed() and s, timeout=120,
                      message="the task to run once its namespace is labelled")
    assert done.status == SUCCESS and done.result == 3

    # And back: relabelled, the namespace's new tasks wait again.
    cluster.run_kubectl("label", "--overwrite", "namespace", namespace, "team=b")
    time.sleep(2)  # the operator's watch of Namespaces sees the label first
    later = tasks.send(f"{T}.add", "my-app", [3, 4], qos=q)
    wait_until(lambda: (s := tasks.get_status(later.id, "my-app")).queued and s.queue_reason == "QueueForbidden",
               timeout=60, message="a task of the relabelled namespace to wait with reason QueueForbidden")


@pytest.mark.parametrize("selector, words", [
    ({"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]},
     'supported values: "In", "NotIn", "Exists", "DoesNotExist"'),
    ({"matchExpressions": [{"key": "team", "operator": "In"}]}, "operators In and NotIn need values"),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": []}]}, "operators In and NotIn need values"),
    ({"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]},
     "operators Exists and DoesNotExist take no values"),
    ({"matchExpressions": [{"key": "bad key", "operator": "Exists"}]},
     "spec.namespaceSelector.matchExpressions[0].key"),
    ({"matchLabels": {"team": "not a value"}}, "spec.namespaceSelector.matchLabels.team"),
])
def test_the_crd_refuses_a_selector_that_is_not_one(crd: None, queue_api: tuple[client.CustomObjectsApi, list[str]],
                                                    selector: dict[str, Any], words: str) -> None:
    api, made = queue_api
    with pytest.raises(client.ApiException) as refused:
        make_queue(api, made, dry_run=True, namespaceSelector=selector)
    message = json.loads(refused.value.body)["message"]  # the API server's words, unescaped
    assert refused.value.status == 422 and words in message, message
    # A good one is taken.
    make_queue(api, made, dry_run=True, namespaceSelector={
        "matchLabels": {"team": "a"}, "matchExpressions": [{"key": "frozen", "operator": "DoesNotExist"},
                                                          {"key": "tier", "operator": "In", "values": ["gold"]}]})
