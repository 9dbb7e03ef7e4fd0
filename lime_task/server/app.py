"""An HTTP endpoint for tasks: start, read and cancel an application's tasks.

    LIMETASK_WEB_TOKENS_FILE=/etc/limetask/tokens limetask web --imports my_package.tasks.tasks

    POST /v1/apps/{app}/tasks              {"task": ..., "args": [...], "kwargs": {...}} -> 202
                                           (and countdown, eta, expires, qos, priority); with an
                                           Idempotency-Key header, a retry is 200 with the same task
    GET  /v1/apps/{app}/tasks/{id}         -> 200, or 404 (missing, or another application's)
    GET  /v1/apps/{app}/tasks?state=&queue=&queued=&limit=&cursor=  live tasks, then archived
                                           ones (paged); queued=true: those waiting in a queue
    POST /v1/apps/{app}/tasks/{id}/cancel  -> 200, or 409 once it has finished
    GET  /v1/apps/{app}/results/{id}       the results API: an archived task only
    GET  /v1/apps/{app}/results?state=&limit=&cursor=  archived tasks, newest first (paged)
    GET  /v1/results?app=&state=&limit=&cursor=  every application's (Kubernetes identities only)
    GET  /dashboard/                       a read-only web dashboard (server/dashboard): the
                                           list, live; a task whole; charts; cancel
    GET  /v1/dashboard/...                 its API (tasks, stream, charts; see routes/dashboard.py)
    GET  /healthz                          liveness: 200 while the process answers, without a token
    GET  /readyz                           200, with the archive's and the tokens files' state
    GET  /metrics                          Prometheus metrics, without a token (metrics.py)
    GET  /openapi.json                     the API's description (no /docs page: see create_app)

Each application has its own bearer token (`Authorization: Bearer <token>`), from the file
named by LIMETASK_WEB_TOKENS_FILE (a mounted Secret: a JSON object, `app=token` lines, or a
directory with one file per application; re-read when it changes; a changed file that cannot
be read refuses every application token until it is fixed), else LIMETASK_WEB_TOKENS (a JSON
object). A token opens its own application only. A missing or wrong token, or a token of
another application, is 401, the same answer whether or not the application exists. A
Kubernetes token bound to the endpoint's audience works too (auth.py, kubeauth.py): its identity
may do over HTTP what it may do to LimeTasks in the endpoint's namespace (off with
LIMETASK_WEB_KUBERNETES_AUTH=false).

The endpoint serves its own namespace. A request may name the namespace it means
(`?namespace=`, as the client does): another one is refused, never answered from this one.

Finished tasks that the operator has moved to the archive (PostgreSQL) are read from it when
the endpoint is given the archive (LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE): a task
is found live or archived alike, with the same application scoping.

Only tasks registered with `@task` in this process can be started (import their modules with
`--imports` or LIMETASK_IMPORTS); a task name never makes this server import anything.

Errors are `{"code": ..., "detail": ...}`: 400 `WrongNamespace`; 401 `Unauthorized`; 404
`NotFound`; 409 `AlreadyFinished`; 413 `TooLarge` (a body over 64 KiB or arguments over
32 KiB); 422 `InvalidRequest` (not JSON, wrong shape, invalid application, task or queue name
or priority, invalid or expired cursor), `UnknownTask`, `InvalidArguments`, `InvalidTask`,
`InvalidIdempotencyKey`, `IdempotencyKeyReused`; 429 `TooManyRequests` (a token past its rate,
or too many new Kubernetes tokens at once) and `TooManyStreams` (limits.py), `QuotaExceeded`
(the namespace is at its ResourceQuota on LimeTasks), each with Retry-After; 503
`ClusterUnavailable`, `ArchiveUnavailable`. No other 5xx: an unexpected error is logged with
an id and answered 400 `RequestFailed`.

This module is the wiring only: the routes are in routes/, who may do what in auth.py, what
they share in deps.py, the guards around every request in middleware.py. Nothing imports it
but the entry points (`limetask web`, and the `lime_task.web` of earlier releases).

Needs the `web` extra (fastapi, uvicorn).
"""

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..archive import ArchiveReader, url_from_env
from ..errors import (
    ClusterError,
    InvalidArgumentsError,
    InvalidTaskError,
    LimeTaskError,
    NotFoundError,
    QuotaExceededError,
    TaskAlreadyFinishedError,
    UnknownTaskError,
)
from ..solutions import Source, import_task_modules
from ..tokens import TokenStore
from .auth import kubernetes_auth_enabled, kubernetes_auth_settings, platform_tokens_from_env
from .deps import CLUSTER_DOWN, ErrorAnswer, Services, error_response, rate_limited
from .kubeauth import KubernetesAuth
from .limits import Limits
from .middleware import MAX_BODY_BYTES, BodyLimit, CatchAll, CountRequests
from .routes import dashboard, health, results, schedules, tasks

LOG = logging.getLogger("limetask.web")
IMPORTS_ENV = "LIMETASK_IMPORTS"


def _imports_from_env() -> list[str]:
    return [m.strip() for m in os.environ.get(IMPORTS_ENV, "").split(",") if m.strip()]


def create_app(client: Any = None, tokens: "TokenStore | Mapping[str, str] | None" = None,
               imports: Iterable[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               archive: "ArchiveReader | str | None" = None, kubernetes_auth: "bool | KubernetesAuth | None" = None,
               platform_tokens: "TokenStore | Mapping[str, str] | None" = None, dashboard_watch: Any = None,
               limits: Limits | None = None, clock: Callable[[], float] | None = None) -> FastAPI:
    """The HTTP endpoint as a FastAPI application.

    `client`: a `TaskClient` (default: the shared one, configured from the environment on the
    first request). `tokens`: app → token, or a `TokenStore` (default: from the environment).
    `imports`: modules whose tasks may be started (default: LIMETASK_IMPORTS); tasks already
    registered in this process can be started too. `archive`: the archive's URL or an
    `ArchiveReader` (default: LIMETASK_ARCHIVE_URL or LIMETASK_ARCHIVE_URL_FILE; none: live
    tasks only). `kubernetes_auth`: whether Kubernetes tokens are accepted (default:
    LIMETASK_WEB_KUBERNETES_AUTH, true unless "false"), or the `KubernetesAuth` that checks
    them (default: one for the audience LIMETASK_WEB_AUDIENCE, else "limetask-web", and at most
    LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND TokenReviews a second, else 10). `platform_tokens`:
    name → token of the dashboard's every-application view (default:
    LIMETASK_WEB_PLATFORM_TOKENS_FILE or LIMETASK_WEB_PLATFORM_TOKENS). `dashboard_watch`: the
    dashboard's `TaskWatch` (default: one made on first use from the client). `limits`: the
    rate limits and stream caps per token (default: `Limits.from_env()`, limits.py); `clock`:
    the rate limiters' clock (tests move it by hand).
    """
    # A module named here that is a solution (get_task_modules()) brings its task modules along.
    import_task_modules(Source(m, IMPORTS_ENV) for m in (_imports_from_env() if imports is None else imports))
    store = tokens if isinstance(tokens, TokenStore) else (
        TokenStore(tokens) if tokens is not None else TokenStore.from_env())
    platform = platform_tokens if isinstance(platform_tokens, TokenStore) else (
        TokenStore(platform_tokens) if platform_tokens is not None else platform_tokens_from_env())
    if archive is None:
        url = url_from_env()
        archive = ArchiveReader(url) if url else None
    elif isinstance(archive, str):
        archive = ArchiveReader(archive)
    if kubernetes_auth is None:
        kubernetes_auth = kubernetes_auth_enabled()
    audience, reviews_per_second = kubernetes_auth_settings()

    # No /docs nor /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, into the origin
    # where the dashboard keeps its token. The document itself is /openapi.json.
    # Every route takes `rate_limited` first (it passes all but the API under /v1).
    app = FastAPI(
        title="Lime Task", version="v1", docs_url=None, redoc_url=None, dependencies=[Depends(rate_limited)],
        description="Start, read and cancel an application's background tasks, live or archived. "
                    "Each application has its own bearer token; Kubernetes tokens bound to the "
                    "endpoint's audience work too.",
    )
    app.state.services = Services(client=client, reader=archive, store=store, platform=platform,
                                  kubernetes_auth=kubernetes_auth, audience=audience,
                                  reviews_per_second=reviews_per_second, watch=dashboard_watch,
                                  limits=limits or Limits.from_env(), clock=clock)
    services: Services = app.state.services
    app.include_router(tasks.router)
    app.include_router(results.router)
    app.include_router(schedules.router)
    app.include_router(results.every_app)
    app.include_router(dashboard.api)
    app.include_router(dashboard.page)
    app.mount("/dashboard/static", StaticFiles(directory=str(dashboard.STATIC)), name="dashboard-static")
    app.include_router(health.router)
    _install_error_handlers(app)
    app.add_middleware(CatchAll)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(CountRequests, count=services.metrics.count)
    return app


def _short_loc(loc: list[str], keep: int = 4) -> list[str]:
    return loc if len(loc) <= 2 * keep else [*loc[:keep], "...", *loc[-keep:]]


def _install_error_handlers(app: FastAPI) -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    def cluster_down(exc: Exception) -> JSONResponse:
        LOG.error("cluster unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(503, "ClusterUnavailable", CLUSTER_DOWN, {"Retry-After": "5"})

    mapping: list[tuple[type[Exception], Callable[[Exception], JSONResponse]]] = [
        (ErrorAnswer, lambda e: error_response(e.status, e.code, e.detail, e.headers)),  # type: ignore[attr-defined]
        (NotFoundError, lambda e: error_response(404, "NotFound", str(e))),
        (UnknownTaskError, lambda e: error_response(422, "UnknownTask", str(e))),
        (InvalidArgumentsError, lambda e: error_response(422, "InvalidArguments", str(e))),
        (InvalidTaskError, lambda e: error_response(422, "InvalidTask", str(e))),
        (TaskAlreadyFinishedError, lambda e: error_response(409, "AlreadyFinished", str(e))),
        # 429, not 403: nothing is wrong with who asks; the namespace is full for now, and it clears
        # as finished tasks leave (RFC 6585: the client should slow down and try again later).
        (QuotaExceededError, lambda e: error_response(429, "QuotaExceeded", str(e), {"Retry-After": "60"})),
        (ClusterError, cluster_down),
        # Raw API errors: a task deleted in between looks like any missing task; the rest is the cluster's.
        (ApiException, lambda e: error_response(404, "NotFound", "task not found") if getattr(e, "status", None) == 404
         else cluster_down(e)),
        (HTTPError, cluster_down),
        (LimeTaskError, lambda e: error_response(400, "RequestFailed", str(e))),
    ]
    for kind, make in mapping:
        def handler(request: Request, exc: Exception, make: Callable[[Exception], JSONResponse] = make
                    ) -> JSONResponse:
            return make(exc)
        app.add_exception_handler(kind, handler)

    def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Deeply nested input makes long locations: keep the answer small.
        # (our own checks' messages, without pydantic's "Value error, " before them)
        errors = [{"loc": _short_loc([str(part) for part in e.get("loc", ())]),
                   "msg": str(e.get("msg", "")).removeprefix("Value error, ")[:200],
                   "type": str(e.get("type", ""))} for e in exc.errors()[:20]]
        summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return error_response(422, "InvalidRequest", f"invalid request: {summary}", errors=errors)

    def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {400: "InvalidRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 422: "InvalidRequest", 429: "TooManyRequests"}
        code = codes.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
