"""Talking to Kubernetes: creating LimeTasks and reading them back.

Works from inside a cluster (the pod's service account) and from outside (a kubeconfig:
`LIMETASK_KUBECONFIG`, else `KUBECONFIG` or `~/.kube/config`). The namespace comes from
`LIMETASK_NAMESPACE`, else the pod's own namespace, else the kubeconfig context, else
`default`.

Finished tasks leave the cluster for the archive after a while; with `LIMETASK_RESULTS_URL`
(the HTTP endpoint's results API, see lime_task.results) they are read from there, so that
`get_status`, `wait`, `list` and `cancel` see live and archived tasks alike.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import idempotency, safejson
from .application import app_name_of
from .errors import (
    ClusterError,
    InvalidTaskError,
    NotFoundError,
    TaskAlreadyFinishedError,
    WaitTimeoutError,
)
from .quota import quota_refusal
from .registry import TaskOptions, resolve_task
from .resource import (
    ANNOTATION_CANCEL,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_APP,
    LABEL_QUEUE,
    MAX_ATTEMPTS_CEILING,
    PLURAL,
    QUEUE_PLURAL,
    STATES,
    VERSION,
)
from .results import (
    AUDIENCE_ENV,
    CA_FILE_ENV,
    DEFAULT_AUDIENCE,
    KUBERNETES_TOKEN_FILE_ENV,
    SERVICE_ACCOUNT_ENV,
    KubernetesTokens,
    ResultsClient,
    ResultsUnavailableError,
    expiry_of,
    service_account_of,
    tokens_from_env,
)
from .status import TaskStatus, wait_with
from .tracing import trace_annotations
from .validation import (
    check_app_name,
    check_arguments,
    check_memory_on_oom,
    check_priority,
    check_queue,
    check_task_name,
    check_timing,
)

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TASK_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Every API call gives up after (connect, read) seconds: without it, a call to an API server that
# stopped answering waits forever (urllib3's default), and so does whoever called (an HTTP worker).
REQUEST_TIMEOUT = (5.0, 30.0)
# `list_page`: the objects one listing request asks for, and the requests one page may make.
LIST_CHUNK = 500
PAGE_READS = 4
# A cursor of `list_page`: which listing (l: labelled with the application, u: unlabelled), then the
# cluster's own `continue` token (base64url).
PAGE_CURSOR_RE = re.compile(r"^[lu][A-Za-z0-9_=-]{0,2000}$")
NOT_INSTALLED = ("the LimeTask resource is not installed in this cluster (no limetasks.limetask.io): install "
                 "the CRDs from crds/ or the Helm chart")


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SA_NAMESPACE_FILE.exists()


class TaskClient:
    """A connection to one namespace of one cluster. The module functions use a shared one."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None = None, namespace: str | None = None,
                 context: str | None = None, results_url: str | None = None,
                 results_tokens: Mapping[str, str] | None = None,
                 results_token_file: str | os.PathLike[str] | None = None,
                 results_service_account: str | None = None) -> None:
        """`results_url`, `results_tokens`: the HTTP endpoint's results API and the tokens of
        applications there (default: LIMETASK_RESULTS_URL and LIMETASK_RESULTS_TOKENS[_FILE]);
        "" turns archived reads off. Without an application's token, a Kubernetes token for the
        endpoint's audience: from `results_token_file` (default:
        LIMETASK_RESULTS_KUBERNETES_TOKEN_FILE), else made by the TokenRequest API for the
        ServiceAccount `results_service_account` of the namespace (default:
        LIMETASK_RESULTS_SERVICE_ACCOUNT, else this client's own when it is a ServiceAccount).
        Never this client's token for the API server (see lime_task.results)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        path = str(kubeconfig) if kubeconfig else os.environ.get("LIMETASK_KUBECONFIG")
        ns = namespace or os.environ.get("LIMETASK_NAMESPACE")
        try:
            if path or not _in_cluster():
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
                if not ns:
                    _, active = config.list_kube_config_contexts(config_file=path)
                    if context:
                        contexts, _ = config.list_kube_config_contexts(config_file=path)
                        active = next((c for c in contexts if c["name"] == context), active)
                    ns = (active or {}).get("context", {}).get("namespace")
            else:
                config.load_incluster_config(client_configuration=cfg)
                ns = ns or SA_NAMESPACE_FILE.read_text().strip()
        except (config.ConfigException, OSError) as exc:
            raise ClusterError(f"no Kubernetes configuration found: {exc}. Set LIMETASK_KUBECONFIG "
                               f"or KUBECONFIG, or run inside a cluster") from exc
        cfg.connection_pool_maxsize = 16
        self.namespace: str = ns or "default"
        self.api_client = client.ApiClient(cfg)
        self.api = client.CustomObjectsApi(self.api_client)
        account = results_service_account or os.environ.get(SERVICE_ACCOUNT_ENV) or None
        self.endpoint_tokens = KubernetesTokens(
            os.environ.get(AUDIENCE_ENV) or DEFAULT_AUDIENCE,
            results_token_file or os.environ.get(KUBERNETES_TOKEN_FILE_ENV) or None,
            (self.namespace, account) if account else None, self._request_token,
            lambda: service_account_of(self._api_server_token()))
        self.results: ResultsClient | None
        if results_url == "":
            self.results = None
        elif results_url is not None:
            # (No tokens given: the environment's, as without a URL.)
            tokens = results_tokens if results_tokens is not None else tokens_from_env()
            self.results = ResultsClient(results_url, tokens, self.endpoint_tokens.get,
                                         os.environ.get(CA_FILE_ENV) or None)
        else:
            self.results = ResultsClient.from_env(self.endpoint_tokens.get)
            if self.results is not None and results_tokens:
                self.results.tokens = ResultsClient(self.results.url, results_tokens).tokens

    def _request_token(self, namespace: str, name: str, audience: str, seconds: int) -> tuple[str, float]:
        """A token of the ServiceAccount for `audience`, from the TokenRequest API."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience], "expirationSeconds": seconds}}
        try:
            core = client.CoreV1Api(self.api_client)
            made = self._call("request a token", core.create_namespaced_service_account_token, name, namespace, body)
        except ApiException as exc:
            what = f"a token for the results API (audience {audience!r}) of ServiceAccount {namespace}/{name}"
            if exc.status == 403:
                raise ResultsUnavailableError(
                    f"not allowed to request {what} (create serviceaccounts/token): set {KUBERNETES_TOKEN_FILE_ENV} "
                    f"to a projected token for that audience, or give the application's token", refused=True) from None
            if exc.status == 404:
                raise ResultsUnavailableError(f"cannot request {what}: no such ServiceAccount", refused=True) from None
            raise ClusterError(f"requesting {what} failed: {exc.status} {_api_message(exc)}") from exc
        return str(made.status.token), expiry_of(made.status.expiration_timestamp)

    def _api_server_token(self) -> str | None:
        """This client's own bearer token for the API server (None with client certificates):
        only read to learn whose it is, never sent to anyone else."""
        cfg = self.api_client.configuration
        for identifier in ("BearerToken", "authorization"):  # the client's name for it, newer and older
            try:
                # (through the client, which refreshes a pod's rotated token first)
                value = cfg.get_api_key_with_prefix(identifier)
            except Exception:  # noqa: BLE001 - no token: the results API needs an application token then
                value = None
            if value:
                return str(value).removeprefix("Bearer ").strip() or None
        return None

    # -- low level ----------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call with a few retries on connection trouble; errors become ours."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        delay = 0.2
        for attempt in range(5):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status in (429, 500, 502, 503, 504) and attempt < 4:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise
            except HTTPError as exc:
                if attempt < 4:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ClusterError(f"{what}: the Kubernetes API is unreachable: {exc}") from exc
        raise AssertionError("unreachable")

    def _read(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`_call` for a read, parsed here: one object nested too deeply for Python's json must
        not make a whole listing (or the caller) fail (see safejson)."""
        response = self._call(what, fn, *args, _preload_content=False, **kwargs)
        try:
            return safejson.loads(response.data)
        except ValueError as exc:
            raise ClusterError(f"{what}: the Kubernetes API answered with something that is not JSON: {exc}") from exc

    def _read_checked(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`_read`, with every API error as a `ClusterError` (or `NotFoundError` for a 404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._read(what, fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"{what}: not found ({_api_message(exc)})") from None
            raise ClusterError(f"{what} failed: {exc.status} {_api_message(exc)}") from exc

    def _read_or_none(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`_read_checked`, with a 404 as None."""
        try:
            return self._read_checked(what, fn, *args, **kwargs)
        except NotFoundError:
            return None

    def _get(self, task_id: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        if not isinstance(task_id, str) or not TASK_ID_RE.match(task_id):
            raise NotFoundError(f"task {task_id!r} not found")
        try:
            body: dict[str, Any] = self._read(
                "get task", self.api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, task_id)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"task {task_id!r} not found") from None
            raise ClusterError(f"reading task {task_id!r} failed: {exc.status} {exc.reason}") from exc
        return body

    def _get_for_app(self, task_id: str, app_name: str) -> dict[str, Any]:
        check_app_name(app_name)
        body = self._get(task_id)
        if (body.get("spec") or {}).get("app") != app_name:
            # Another application's task looks exactly like a missing one.
            raise NotFoundError(f"task {task_id!r} not found")
        return body

    # -- the API ------------------------------------------------------------------------
    def send(self, name: str, app: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
             *, task_id: str | None = None, options: TaskOptions | None = None, check: bool = True,
             image: str | None = None, resources: Mapping[str, Any] | None = None, countdown: Any = None,
             eta: Any = None, expires: Any = None, qos: str | None = None, priority: int | None = None,
             idempotency_key: str | None = None, fingerprint: str | None = None,
             memory_on_oom: Sequence[str] | None = None) -> TaskStatus:
        """Create a LimeTask. With `check`, the name must resolve to a registered task here.

        `countdown` (seconds) or `eta` (an aware datetime): start no earlier than that; until
        then the task waits with no Job and no pod. `expires` (seconds from now, or an aware
        datetime): a task not started by then ends as FAILURE, reason `Expired`, and never runs.
        `qos` (a queue's name) and `priority` override the task's own (`@task(qos=, priority=)`):
        while its queue has no free slot, the task stays PENDING with a `Queued` condition.
        `memory_on_oom` (memory sizes, e.g. ["1Gi", "2Gi"]) overrides the task's own
        `@task(memory_on_oom=)` ([] for none): the memory of the attempts after OOMKilled ones.

        `idempotency_key`: the same key (for the same application) starts one task however often
        the call is retried, from any process (lime_task.idempotency); the task that was started
        answers the retry, with `replayed` true. The key used again for another request (another
        `fingerprint`, by default a hash of this call's arguments) is `IdempotencyKeyReusedError`.
        """
        from kubernetes.client.exceptions import ApiException

        check_task_name(name)
        app_name = app_name_of(app)
        clean_args, clean_kwargs = check_arguments(args, kwargs or {})
        timing = check_timing(countdown, eta, expires)
        check_queue(qos)
        if priority is not None:
            check_priority(priority)
        if check:
            options = options or resolve_task(name).options
        options = options or TaskOptions()
        queue = qos if qos is not None else options.qos
        rank = priority if priority is not None else options.priority
        steps = options.memory_on_oom if memory_on_oom is None else memory_on_oom
        if isinstance(steps, (list, tuple)) and not steps:
            steps = ()
        else:
            steps = check_memory_on_oom(steps, resources if isinstance(resources, Mapping) else None)
        annotations: dict[str, str] = {}
        if idempotency_key is not None:
            fingerprint = fingerprint or idempotency.fingerprint({
                "task": name, "args": clean_args, "kwargs": clean_kwargs, "countdown": countdown, "eta": eta,
                "expires": expires, "qos": qos, "priority": priority,
                # (only when given: a key sent before memory_on_oom existed keeps its fingerprint)
                **({"memory_on_oom": list(steps)} if memory_on_oom is not None else {})})
            task_id = idempotency.task_id_for(self.namespace, app_name, idempotency_key)
            annotations = {idempotency.KEY_ANNOTATION: idempotency_key,
                           idempotency.FINGERPRINT_ANNOTATION: fingerprint}
        task_id = task_id or str(uuid.uuid4())
        if not TASK_ID_RE.match(task_id) or len(task_id) > 63:
            raise InvalidTaskError(f"invalid task id {task_id!r}: lower-case letters, digits and '-'")
        spec: dict[str, Any] = {
            "task": name, "app": app_name, "args": clean_args, "kwargs": clean_kwargs,
            "acksLate": options.acks_late,
        }
        if options.acks_late:
            spec["maxAttempts"] = min(options.max_attempts, MAX_ATTEMPTS_CEILING)
        if options.timeout:
            spec["timeoutSeconds"] = options.timeout
        if image:
            spec["image"] = image
        if resources:
            spec["resources"] = dict(resources)
        if steps:
            spec["memoryOnOOM"] = list(steps)
        spec.update(timing)
        labels = {LABEL_APP: app_name}
        # No queue named: the default queue, and the LimeTask says nothing (as Kubernetes' own defaults).
        if queue is not None:
            spec["queue"] = queue
            labels[LABEL_QUEUE] = queue  # for `kubectl get lt -l limetask.io/queue=NAME`; spec.queue decides
        if rank:
            spec["priority"] = rank
        metadata: dict[str, Any] = {"name": task_id, "labels": labels}
        # the caller's trace context, which the task's spans join (tracing.py)
        annotations = {**trace_annotations(), **annotations}
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
        try:
            created = self._call("create task", self.api.create_namespaced_custom_object,
                                 GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                # A retried call whose first try went through: the same task, not a new one.
                existing = self._get(task_id)
                if idempotency_key is not None and fingerprint is not None:
                    idempotency.check_replay(existing, idempotency_key, fingerprint)
                    return dataclasses.replace(TaskStatus.from_resource(existing, self), replayed=True)
                if existing.get("spec", {}).get("task") == name and existing["spec"].get("app") == app_name:
                    return TaskStatus.from_resource(existing, self)
                raise InvalidTaskError(f"a different task with id {task_id!r} already exists") from exc
            if exc.status in (400, 422):
                # The API server's words, without the object's name (made up here, unless given).
                why = _api_message(exc).replace(f'{KIND}.{GROUP} "{task_id}" is invalid: ', "")
                raise InvalidTaskError(f"the cluster refused the task: {why}") from exc
            refused = quota_refusal(exc.status, _api_message(exc), self.namespace)
            if refused is not None:
                raise refused from exc
            if exc.status == 404:
                raise ClusterError(
                    f"the LimeTask resource is not installed in this cluster (or namespace "
                    f"{self.namespace!r} does not exist): install the CRD from crds/ or the Helm chart"
                ) from exc
            raise ClusterError(f"creating the task failed: {exc.status} {_api_message(exc)}") from exc
        return TaskStatus.from_resource(created, self)

    def _archived(self, task_id: str, app_name: str) -> TaskStatus | None:
        """The task from the archive (the results API), or None: not archived, or no archive."""
        if self.results is None or not isinstance(task_id, str) or not TASK_ID_RE.match(task_id):
            return None
        found = self.results.get(app_name, task_id, self.namespace)
        return TaskStatus.from_dict(found, self) if found is not None else None

    def get_status(self, task_id: str, app_name: str, archive: bool = True) -> TaskStatus:
        """The task's status, live, or archived once it has left the cluster (`archive`)."""
        try:
            return TaskStatus.from_resource(self._get_for_app(task_id, app_name), self)
        except NotFoundError:
            found = self._archived(task_id, app_name) if archive else None
            if found is None:
                raise
            return found

    def cancel(self, task_id: str, app_name: str, archive: bool = True) -> TaskStatus:
        """Ask the operator to stop the task; it ends as FAILURE with reason `Cancelled`."""
        try:
            body = self._get_for_app(task_id, app_name)
        except NotFoundError:
            if not archive or self._archived(task_id, app_name) is None:
                raise
            raise TaskAlreadyFinishedError(f"task {task_id!r} has already finished (archived)") from None
        status = TaskStatus.from_resource(body, self)
        if status.is_completed():
            raise TaskAlreadyFinishedError(f"task {task_id!r} has already finished ({status.status})")
        patch = {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}}
        updated = self._read_checked("cancel task", self.api.patch_namespaced_custom_object,
                                GROUP, VERSION, self.namespace, PLURAL, task_id, patch)
        return TaskStatus.from_resource(updated, self)

    def list(self, app_name: str | None = None, state: str | None = None, limit: int | None = None,
             archive: bool = True, *, queued: bool = False, queue: str | None = None) -> builtins.list[TaskStatus]:
        """The tasks in the namespace, of one application if `app_name` is given: the live ones,
        then (with the results API, `archive`) the archived ones, newest first.

        An application's tasks are those whose spec.app names it: the ones `send_task` made
        (labelled with the application) and those made some other way, e.g. with kubectl,
        without the label. The label is only a filter on the server; spec.app decides.

        `queued`: only the tasks waiting in a queue for a slot (PENDING, with a `Queued`
        condition that is True). Those are never archived, so only live tasks are listed.
        `queue`: only the tasks of that queue ("default": those that name none).
        """
        check_queue(queue)
        items = self._list_live(app_name, state, limit, queued=queued, queue=queue)
        if queued or not archive or self.results is None or (limit and len(items) >= limit):
            return items
        seen = {s.id for s in items}
        cursor: str | None = None
        while True:
            want = min(1000, limit - len(items)) if limit else 1000
            try:
                page, cursor = self.results.list(app_name, state, want, cursor, namespace=self.namespace)
            except ResultsUnavailableError as exc:
                if app_name or not exc.refused:
                    raise
                # Every application's archived tasks are listed for a Kubernetes identity only.
                warnings.warn(f"archived tasks are not listed: {exc}; name the application to list its "
                              f"archived tasks with its token", stacklevel=2)
                return items
            for found in page:
                st = TaskStatus.from_dict(found, self)
                if queue is not None and st.queue != queue:
                    continue
                if st.id not in seen:
                    items.append(st)
                    if limit and len(items) >= limit:
                        return items
            if not cursor:
                return items

    def _list_live(self, app_name: str | None, state: str | None, limit: int | None, *, queued: bool = False,
                   queue: str | None = None) -> builtins.list[TaskStatus]:
        _check_list_filters(state, limit)
        selectors = [f"{LABEL_APP}={check_app_name(app_name)}", f"!{LABEL_APP}"] if app_name else [""]
        items: list[TaskStatus] = []
        for selector in selectors:
            token = None
            while True:
                page = self._list_tasks(selector, LIST_CHUNK, token)
                for body in page.get("items", []):
                    st = TaskStatus.from_resource(body, self)
                    if not _wanted(st, app_name, state, queued, queue):
                        continue
                    items.append(st)
                    if limit and len(items) >= limit:
                        return items
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        return items

    def list_page(self, app_name: str, state: str | None = None, limit: int = 100, cursor: str | None = None, *,
                  queued: bool = False, queue: str | None = None) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """One page of an application's live tasks (their LimeTasks, in the cluster's order), and
        the cursor of the next page (None: no more).

        The cluster's own `continue` tokens page it: a page reads on from where the last one
        stopped, never from the start, and makes at most a few requests. Filters apply here, so a
        page may hold fewer than `limit` (even none) and still have a next one. An invalid or
        expired cursor is an `InvalidTaskError`.
        """
        _check_list_filters(state, limit)
        check_app_name(app_name)
        check_queue(queue)
        if cursor is not None and (not isinstance(cursor, str) or not PAGE_CURSOR_RE.match(cursor)):
            raise InvalidTaskError(f"invalid cursor {str(cursor)[:80]!r}")
        phase, token = (cursor[0], cursor[1:] or None) if cursor else ("l", None)
        selectors = {"l": f"{LABEL_APP}={app_name}", "u": f"!{LABEL_APP}"}
        items: list[dict[str, Any]] = []
        for _ in range(PAGE_READS):
            page = self._list_tasks(selectors[phase], min(LIST_CHUNK, limit - len(items)), token, cursor=True)
            items += [body for body in page.get("items", [])
                      if _wanted(TaskStatus.from_resource(body, self), app_name, state, queued, queue)]
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                if phase == "u":
                    return items, None
                phase = "u"  # the labelled ones are done; then those made without the label
            if len(items) >= limit:
                break
        return items, phase + (token or "")

    def _list_tasks(self, selector: str, limit: int, token: str | None, cursor: bool = False) -> dict[str, Any]:
        """One listing request; a `continue` token the cluster refuses is an invalid cursor when
        it came from one (`cursor`)."""
        from kubernetes.client.exceptions import ApiException

        try:
            page: dict[str, Any] = self._read("list tasks", self.api.list_namespaced_custom_object, GROUP, VERSION,
                                              self.namespace, PLURAL, label_selector=selector, limit=limit,
                                              **({"_continue": token} if token else {}))
        except ApiException as exc:
            if exc.status == 404:
                # Listing a namespace that does not exist gives an empty list: 404 is the resource.
                raise ClusterError(NOT_INSTALLED) from None
            if cursor and token and exc.status == 410:
                raise InvalidTaskError("the cursor has expired (the cluster keeps a listing for a few minutes): "
                                       "list again from the start") from None
            if cursor and token and exc.status == 400:
                raise InvalidTaskError("invalid cursor: the cluster does not know it") from None
            raise ClusterError(f"list tasks failed: {exc.status} {_api_message(exc)}") from exc
        return page

    def list_queues(self) -> builtins.list[dict[str, Any]]:
        """The cluster's LimeTaskQueues as the API gives them (cluster-scoped), by name.

        A `ClusterError` that says what to do when queues are not installed (404) or this
        identity may not list them (403).
        """
        from kubernetes.client.exceptions import ApiException

        items: list[dict[str, Any]] = []
        token = None
        while True:
            try:
                page = self._read("list queues", self.api.list_cluster_custom_object, GROUP, VERSION, QUEUE_PLURAL,
                                  limit=500, **({"_continue": token} if token else {}))
            except ApiException as exc:
                if exc.status == 404:
                    raise ClusterError(f"queues are not installed in this cluster (no {QUEUE_PLURAL}.{GROUP} "
                                       f"resource): install the CRDs from crds/ or the Helm chart") from None
                if exc.status == 403:
                    raise ClusterError(f"not allowed to list {QUEUE_PLURAL}.{GROUP} (cluster-scoped): a "
                                       f"ClusterRole with list on them is needed ({_api_message(exc)})") from None
                raise ClusterError(f"listing queues failed: {exc.status} {_api_message(exc)}") from exc
            items += [item for item in page.get("items") or [] if isinstance(item, dict)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return sorted(items, key=lambda item: str((item.get("metadata") or {}).get("name", "")))

    def watch(self, task_id: str, app_name: str, timeout: float | None = None) -> Iterator[TaskStatus]:
        """Every new status of one task until it finishes (first the current one)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        try:
            body = self._get_for_app(task_id, app_name)
        except NotFoundError:
            archived = self._archived(task_id, app_name)
            if archived is None:
                raise
            yield archived  # finished, and archived: nothing to wait for
            return
        current = TaskStatus.from_resource(body, self)
        yield current
        deadline = None if timeout is None else time.monotonic() + timeout
        version = body["metadata"]["resourceVersion"]
        while not current.is_completed():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeoutError(f"task {task_id!r} still {current.status} after {timeout}s")
            window = int(min(left, 60)) + 1 if left is not None else 60
            w = watch.Watch()
            try:
                for event in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                      PLURAL, field_selector=f"metadata.name={task_id}",
                                      resource_version=version, timeout_seconds=window,
                                      _request_timeout=window + 10):
                    obj = event["object"]
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] == "DELETED":
                        # Archived and removed from the cluster (only a finished task is), or deleted.
                        archived = self._archived(task_id, app_name)
                        if archived is None or archived.id != current.id:
                            raise NotFoundError(f"task {task_id!r} was deleted")
                        w.stop()
                        yield archived
                        return
                    if event["type"] == "ERROR":
                        break
                    new = TaskStatus.from_resource(obj, self)
                    if new != current:
                        current = new
                        yield current
                    if current.is_completed():
                        w.stop()
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        w.stop()
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise ClusterError(f"watching task {task_id!r} failed: {exc.status} {_api_message(exc)}") from exc
                body = self._get_for_app(task_id, app_name)
                version = body["metadata"]["resourceVersion"]
                new = TaskStatus.from_resource(body, self)
                if new != current:
                    current = new
                    yield current
            except Exception as exc:  # noqa: BLE001 - a dropped watch: read again and go on
                from urllib3.exceptions import HTTPError

                # RecursionError: an event too deep for the watch's own json (see safejson).
                if not isinstance(exc, (HTTPError, RecursionError)):
                    raise
                if isinstance(exc, HTTPError):
                    time.sleep(0.5)
                body = self._get_for_app(task_id, app_name)
                version = body["metadata"]["resourceVersion"]
                new = TaskStatus.from_resource(body, self)
                if new != current:
                    current = new
                    yield current

    def wait(self, task_id: str, app_name: str, timeout: float | None = None,
             on_change: Callable[[TaskStatus], Any] | None = None) -> TaskStatus:
        last = None
        for last in self.watch(task_id, app_name, timeout=timeout):
            if on_change is not None:
                on_change(last)
        assert last is not None
        return last


def _check_list_filters(state: str | None, limit: int | None) -> None:
    if state is not None and state not in STATES:
        raise InvalidTaskError(f"unknown state {state!r}: one of {', '.join(STATES)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidTaskError(f"limit must be a whole number of at least 1, got {limit!r}")


def _wanted(st: TaskStatus, app_name: str | None, state: str | None, queued: bool, queue: str | None) -> bool:
    """Whether a listed task passes the filters the cluster cannot apply (spec.app decides, not
    the label)."""
    return ((not app_name or st.app == app_name) and (not state or st.status == state)
            and (not queued or st.queued) and (queue is None or st.queue == queue))


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


_default: TaskClient | None = None
_default_lock = threading.Lock()


def default_client() -> TaskClient:
    """The shared client, configured from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TaskClient()
        return _default


wait_with(default_client)


def configure(kubeconfig: str | os.PathLike[str] | None = None, namespace: str | None = None,
              context: str | None = None, results_url: str | None = None,
              results_tokens: Mapping[str, str] | None = None,
              results_token_file: str | os.PathLike[str] | None = None,
              results_service_account: str | None = None) -> TaskClient:
    """Point the module functions (`send_task`, `get_status`, ...) at a cluster and namespace,
    and at the results API that serves archived tasks (see `TaskClient`)."""
    global _default
    with _default_lock:
        _default = TaskClient(kubeconfig=kubeconfig, namespace=namespace, context=context,
                              results_url=results_url, results_tokens=results_tokens,
                              results_token_file=results_token_file,
                              results_service_account=results_service_account)
        return _default


def send_task(name: str, app: Any, /, *args: Any, countdown: Any = None, eta: Any = None, expires: Any = None,
              qos: str | None = None, priority: int | None = None, memory_on_oom: Sequence[str] | None = None,
              **kwargs: Any) -> TaskStatus:
    """Start the task `name` for `app` with JSON arguments; returns its PENDING status.

    As Celery's: `countdown` (seconds) or `eta` (an aware datetime) delays the start, `expires`
    (seconds or an aware datetime) is when a task that has not started is given up (FAILURE,
    reason `Expired`). As Lime's: `qos` (a queue's name) and `priority` (-1000 to 1000, higher
    first) override the task's own `@task(qos=, priority=)`, and `memory_on_oom` (memory sizes)
    its `@task(memory_on_oom=)`. These six names are therefore not passed on as the task's
    arguments.
    """
    return default_client().send(name, app, args, kwargs, countdown=countdown, eta=eta, expires=expires, qos=qos,
                                 priority=priority, memory_on_oom=memory_on_oom)


def get_status(task_id: str, app_name: str) -> TaskStatus:
    """The status of a task of `app_name`; `NotFoundError` if missing or another app's."""
    return default_client().get_status(task_id, app_name)


def cancel_task(task_id: str, app_name: str) -> TaskStatus:
    """Cancel a pending or running task; `TaskAlreadyFinishedError` once it has finished."""
    return default_client().cancel(task_id, app_name)


def list_tasks(app_name: str | None = None, state: str | None = None, limit: int | None = None, *,
               queued: bool = False, queue: str | None = None) -> list[TaskStatus]:
    """The tasks in the namespace (see `TaskClient.list`); `queued=True`: those waiting in a queue."""
    return default_client().list(app_name, state, limit, queued=queued, queue=queue)
