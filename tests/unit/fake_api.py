"""A real `TaskClient` whose Kubernetes API is a fake in memory: what the client sends, and what a
cluster answers, without a cluster (for the client, the command line and the HTTP endpoint)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException

from lime_task import TaskClient


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 404: "Not Found"}.get(status, "Error"))
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


class FakeCustomObjects:
    """The few calls of `CustomObjectsApi` the client makes, over lists of objects: LimeTasks in
    `tasks`, LimeTaskSchedules in `schedules`; the resources named in `missing` are not installed."""

    def __init__(self, tasks: list[dict[str, Any]] | None = None, queues: list[dict[str, Any]] | None = None,
                 queues_error: ApiException | None = None, schedules: list[dict[str, Any]] | None = None,
                 missing: tuple[str, ...] = ()) -> None:
        self.tasks = list(tasks or [])
        self.queues = list(queues or [])
        self.queues_error = queues_error
        self.schedules = list(schedules or [])
        self.missing = set(missing)
        self.created: list[dict[str, Any]] = []

    def _objects(self, plural: str) -> list[dict[str, Any]]:
        if plural in self.missing:
            raise api_error(404, "the server could not find the requested resource")
        return self.schedules if plural == "limetaskschedules" else self.tasks

    @staticmethod
    def _answer(obj: Any, preload: bool) -> Any:
        return obj if preload else SimpleNamespace(data=json.dumps(obj).encode())

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any], **_: Any) -> dict[str, Any]:
        objects = self._objects(plural)
        created = copy.deepcopy(body)
        created["metadata"].update(namespace=namespace, creationTimestamp="2026-05-01T10:00:00Z",
                                   resourceVersion="1")
        self.created.append(copy.deepcopy(body))
        objects.append(created)
        return created

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     _preload_content: bool = True, **_: Any) -> Any:
        for t in self._objects(plural):
            if t["metadata"]["name"] == name:
                return self._answer(t, _preload_content)
        raise api_error(404, f"{plural}.limetask.io {name!r} not found")

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      _preload_content: bool = True, label_selector: str = "", **_: Any) -> Any:
        items = [t for t in self._objects(plural) if selected(t, label_selector)]
        return self._answer({"items": items, "metadata": {}}, _preload_content)

    def list_cluster_custom_object(self, group: str, version: str, plural: str, _preload_content: bool = True,
                                   **_: Any) -> Any:
        if self.queues_error is not None:
            raise self.queues_error
        return self._answer({"items": self.queues, "metadata": {}}, _preload_content)


def selected(obj: dict[str, Any], selector: str) -> bool:
    """A label selector of the forms the client uses: "", "key=value" or "!key"."""
    labels = obj["metadata"].get("labels") or {}
    if not selector:
        return True
    if selector.startswith("!"):
        return selector[1:] not in labels
    key, _, value = selector.partition("=")
    return bool(labels.get(key) == value)


def kubeconfig(directory: Path) -> Path:
    """A kubeconfig that points nowhere: the fake answers instead."""
    path = directory / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "solutions"}}],
    }))
    return path


def fake_client(directory: Path, api: FakeCustomObjects) -> TaskClient:
    client = TaskClient(kubeconfig=kubeconfig(directory), results_url="")
    client.api = api  # type: ignore[assignment]
    return client


def live_task(name: str, *, app: str = "my-app", task: str = "acme_solution.tasks.lime.add",
              queue: str | None = None, priority: int | None = None, state: str = "PENDING",
              waiting: dict[str, Any] | None = None, reason: str = "Waiting", message: str = "",
              admitted: bool = False) -> dict[str, Any]:
    """A LimeTask as the operator leaves it: `waiting` is its status.queue (with a Queued condition
    that is True, unless `admitted`)."""
    spec: dict[str, Any] = {"task": task, "app": app, "args": [], "kwargs": {}}
    if queue is not None:
        spec["queue"] = queue
    if priority is not None:
        spec["priority"] = priority
    status: dict[str, Any] = {"state": state, "attempts": 0}
    if waiting is not None:
        status["queue"] = waiting
    if admitted:  # its slot given (a status.queue may be left behind: not a wait)
        status["conditions"] = [{"type": "Queued", "status": "False", "reason": "Admitted"}]
    elif waiting is not None:
        condition = {"type": "Queued", "status": "True", "reason": reason}
        status["conditions"] = [{**condition, "message": message} if message else condition]
    return {"apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
            "metadata": {"name": name, "namespace": "solutions", "creationTimestamp": "2026-05-01T10:00:00Z",
                         "resourceVersion": "1", "labels": {"limetask.io/app": app}},
            "spec": spec, "status": status}
