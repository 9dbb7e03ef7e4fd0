"""A real `TaskClient` whose Kubernetes API is a fake in memory: what the client sends, and what a
cluster answers, without a cluster (for the client, the command line and the HTTP endpoint)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException

from lime_task import TaskClient
from lime_task.results import DEFAULT_AUDIENCE


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
        self.tasks_error: ApiException | None = None
        self.schedules = list(schedules or [])
        self.missing = set(missing)
        self.created: list[dict[str, Any]] = []
        self.listed = 0
        self.timeouts: list[Any] = []  # the `_request_timeout` of each call

    def _objects(self, plural: str) -> list[dict[str, Any]]:
        if plural in self.missing:
            raise api_error(404, "the server could not find the requested resource")
        return self.schedules if plural == "limetaskschedules" else self.tasks

    @staticmethod
    def _answer(obj: Any, preload: bool) -> Any:
        return obj if preload else SimpleNamespace(data=json.dumps(obj).encode())

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.timeouts.append(kwargs.get("_request_timeout"))
        objects = self._objects(plural)
        created = copy.deepcopy(body)
        created["metadata"].update(namespace=namespace, creationTimestamp="2026-05-01T10:00:00Z",
                                   resourceVersion="1")
        self.created.append(copy.deepcopy(body))
        objects.append(created)
        return created

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     _preload_content: bool = True, **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("_request_timeout"))
        for t in self._objects(plural):
            if t["metadata"]["name"] == name:
                return self._answer(t, _preload_content)
        raise api_error(404, f"{plural}.limetask.io {name!r} not found")

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      _preload_content: bool = True, label_selector: str = "",
                                      limit: int | None = None, _continue: str | None = None, **kwargs: Any) -> Any:
        """Pages as the API server's do: `limit`, and a `continue` token for the rest (here, the
        position of the next object); `listed` counts the objects answered."""
        self.timeouts.append(kwargs.get("_request_timeout"))
        if self.tasks_error is not None and plural == "limetasks":
            raise self.tasks_error
        items = [t for t in self._objects(plural) if selected(t, label_selector)]
        start = 0
        if _continue:
            if not _continue.startswith("at-") or not _continue[3:].isdigit():
                raise api_error(400, "continue key is not valid")
            start = int(_continue[3:])
        end = len(items) if not limit else min(len(items), start + limit)
        self.listed += end - start
        metadata = {"continue": f"at-{end}"} if end < len(items) else {}
        return self._answer({"items": items[start:end], "metadata": metadata}, _preload_content)

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


# -- TokenReviews and SubjectAccessReviews (the HTTP endpoint's Kubernetes tokens) ------------

def jwt(subject: str = "", audience: str = DEFAULT_AUDIENCE) -> str:
    """A token shaped like a ServiceAccount token (the fake API server reads its claims unsigned)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject or uuid.uuid4().hex, 'aud': [audience]})}.c2ln"


def claims(token: str) -> dict[str, Any]:
    middle = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(middle + "=" * (-len(middle) % 4)))  # type: ignore[no-any-return]


class FakeApiServer:
    """TokenReviews and SubjectAccessReviews: a token is valid when its subject is in `users`
    and its audience among those asked for; `allowed` holds (user, verb) pairs."""

    def __init__(self) -> None:
        self.users = {"system:serviceaccount:solutions:crm"}
        self.allowed = {("system:serviceaccount:solutions:crm", "get"),
                        ("system:serviceaccount:solutions:crm", "list")}
        self.token_reviews: list[dict[str, Any]] = []
        self.access_reviews: list[dict[str, Any]] = []
        self.timeouts: list[Any] = []
        self.down = False

    def create_token_review(self, body: dict[str, Any], **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("_request_timeout"))
        self.token_reviews.append(body)
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")
        token = body["spec"]["token"]
        asked = body["spec"].get("audiences") or ["https://kubernetes.default.svc"]
        subject, audiences = claims(token)["sub"], claims(token)["aud"]
        good = [a for a in audiences if a in asked]
        if subject not in self.users or not good:
            return SimpleNamespace(status=SimpleNamespace(authenticated=False, user=None, audiences=None))
        user = SimpleNamespace(username=subject, groups=["system:serviceaccounts"], uid="u-1", extra=None)
        return SimpleNamespace(status=SimpleNamespace(authenticated=True, user=user, audiences=good))

    def create_subject_access_review(self, body: dict[str, Any], **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("_request_timeout"))
        self.access_reviews.append(body)
        spec = body["spec"]
        return SimpleNamespace(status=SimpleNamespace(
            allowed=(spec["user"], spec["resourceAttributes"]["verb"]) in self.allowed))
