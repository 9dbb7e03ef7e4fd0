"""What the routers share: the cluster client, the archive reader, the namespace served, the
dashboard's watch, and the error answers. `create_app` makes one `Services` per application and
keeps it in `app.state`; a route takes it with `services: ServicesDep`. Below every router and
`auth.py`: nothing here imports them.
"""

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from ..archive import ArchiveError, ArchiveReader
from ..status import TaskStatus
from ..tokens import TokenStore
from .contract import ErrorBody
from .dashboard.counts import ArchiveCounts
from .dashboard.watch import TaskWatch
from .kubeauth import KubernetesAuth
from .readiness import ArchiveProbe

LOG = logging.getLogger("limetask.web")

UNAUTHORIZED = "a valid bearer token of this application is required"
CLUSTER_DOWN = "the task service cannot reach its Kubernetes cluster; try again later"


# -- error answers --------------------------------------------------------------------------

class ErrorAnswer(Exception):
    """An HTTP error answer: status, code, detail (the application's error mapping sends it)."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, dict(headers or {})


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None,
                   errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """An error answer as /openapi.json describes it."""
    return {status: {"model": ErrorBody, "description": description}}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    **doc(400, "WrongNamespace: the request names a namespace this endpoint does not serve"),
    **doc(401, "no valid token of this application"),
    **doc(422, "invalid request: not JSON, wrong shape, invalid names"),
    **doc(429, "too many new Kubernetes tokens to check at once: try again after Retry-After seconds"),
    **doc(503, "the cluster cannot be reached"),
}


# -- the archive, as the routers read it ----------------------------------------------------

def archive_call(fn: Callable[..., Any], *args: Any) -> Any:
    """A read of the archive; 503 ArchiveUnavailable when it cannot be read."""
    try:
        return fn(*args)
    except ArchiveError as exc:
        # The reader's messages never hold the database's own words (host, user): see ArchiveReader.
        raise ErrorAnswer(503, "ArchiveUnavailable", f"{exc}; try again later", {"Retry-After": "5"}) from None


def archived_dict(body: dict[str, Any]) -> dict[str, Any]:
    """An archived task as the API answers it."""
    return TaskStatus.from_resource(body, archived=True).to_dict()


def live_dict(body: dict[str, Any], client: Any) -> dict[str, Any]:
    """A live task as the API answers it."""
    return TaskStatus.from_resource(body, client).to_dict()


def _takes_archive(fn: Any) -> bool:
    try:
        return "archive" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# -- the services ---------------------------------------------------------------------------

class Services:
    """What every route of one application shares, made once by `create_app`.

    `client`: a `TaskClient` (None: the shared one, configured from the environment on first
    use). `reader`: the archive (None: live tasks only). `store`, `platform`: the applications'
    and the dashboard's platform tokens. `kubernetes_auth`: whether Kubernetes tokens are taken,
    or the `KubernetesAuth` that checks them (else one is made on first use, for `audience` and
    `reviews_per_second`). `watch`: the dashboard's `TaskWatch` (None: one made on first use).
    """

    def __init__(self, *, client: Any, reader: ArchiveReader | None, store: TokenStore, platform: TokenStore,
                 kubernetes_auth: "bool | KubernetesAuth", audience: str, reviews_per_second: float,
                 watch: TaskWatch | None = None) -> None:
        self._client, self.reader, self.store, self.platform = client, reader, store, platform
        self._kubernetes_on = bool(kubernetes_auth)
        self._kube_auth: list[KubernetesAuth] = [kubernetes_auth] if isinstance(kubernetes_auth,
                                                                                KubernetesAuth) else []
        self._kube_lock = threading.Lock()
        self._audience, self._reviews_per_second = audience, reviews_per_second
        self._watches: list[TaskWatch] = [watch] if watch is not None else []
        self._watch_lock = threading.Lock()
        self.archive_probe = ArchiveProbe(reader.ping if reader is not None else None)
        self.archive_counts = ArchiveCounts()

    def client(self) -> Any:
        if self._client is not None:
            return self._client
        from ..client import default_client

        return default_client()

    def namespace(self) -> str:
        return str(getattr(self.client(), "namespace", "default"))

    def served(self, asked: str | None) -> None:
        """The endpoint serves its own namespace: a client that means another is told so (an
        archived task of this namespace is never answered as another namespace's)."""
        if asked is not None and asked != self.namespace():
            raise ErrorAnswer(400, "WrongNamespace", f"this endpoint serves namespace {self.namespace()!r}, not "
                                                     f"{asked!r}: ask the endpoint of namespace {asked!r}")

    def live(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A call to the client that reads the cluster only (the archive is read here)."""
        fn = getattr(self.client(), method)
        return fn(*args, archive=False, **kwargs) if _takes_archive(fn) else fn(*args, **kwargs)

    def archived(self, task_id: str, app: str) -> dict[str, Any] | None:
        """An archived task of `app` as the API answers it, or None."""
        reader = self.reader
        if reader is None:
            return None
        body = archive_call(reader.get, self.namespace(), task_id, app)
        return archived_dict(body) if body is not None else None

    def kubernetes(self) -> KubernetesAuth | None:
        """What checks Kubernetes tokens (None: they are not taken, or there is no cluster client)."""
        if not self._kubernetes_on:
            return None
        with self._kube_lock:
            if not self._kube_auth:
                c = self.client()
                if not hasattr(c, "api_client"):
                    return None
                self._kube_auth.append(KubernetesAuth(c.api_client, c.namespace, audience=self._audience,
                                                      reviews_per_second=self._reviews_per_second))
            return self._kube_auth[0]

    def task_watch(self) -> TaskWatch:
        """The process's one watch of the namespace's tasks (the dashboard's live view), started
        on first use; 503 while it cannot list them."""
        with self._watch_lock:
            if not self._watches:
                c = self.client()
                if not hasattr(c, "api_client"):
                    raise ErrorAnswer(503, "ClusterUnavailable", "the live view needs a Kubernetes client")
                self._watches.append(TaskWatch(c.api_client, self.namespace()))
            current = self._watches[0].start()
        if not current.wait_ready(10):
            raise ErrorAnswer(503, "ClusterUnavailable", "the live view of tasks is not ready: the task service "
                              f"cannot list tasks ({current.error or 'still listing'}); try again later",
                              {"Retry-After": "5"})
        return current


async def services(request: Request) -> Services:
    """The application's `Services` (async: taken on the event loop, never a worker thread)."""
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]
