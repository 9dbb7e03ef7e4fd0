"""An HTTP endpoint for tasks: start, read and cancel an application's tasks.

    LIMETASK_WEB_TOKENS_FILE=/etc/limetask/tokens limetask web --imports my_package.tasks.tasks

    POST /v1/apps/{app}/tasks              {"task": ..., "args": [...], "kwargs": {...}} -> 202
                                           (and countdown, eta, expires, qos, priority)
    GET  /v1/apps/{app}/tasks/{id}         -> 200, or 404 (missing, or another application's)
    GET  /v1/apps/{app}/tasks?state=&queue=&queued=&limit=&cursor=  live tasks, then archived
                                           ones (paged); queued=true: those waiting in a queue
    POST /v1/apps/{app}/tasks/{id}/cancel  -> 200, or 409 once it has finished
    GET  /v1/apps/{app}/results/{id}       the results API: an archived task only
    GET  /v1/apps/{app}/results?state=&limit=&cursor=  archived tasks, newest first (paged)
    GET  /v1/results?app=&state=&limit=&cursor=  every application's (Kubernetes identities only)
    GET  /dashboard/                       a read-only web dashboard (lime_task.dashboard): the
                                           list, live; a task whole; charts; cancel
    GET  /v1/dashboard/...                 its API (tasks, stream, charts; see dashboard.routes)
    GET  /healthz                          liveness: 200 while the process answers, without a token
    GET  /readyz                           200, with the archive's and the tokens files' state
    GET  /openapi.json                     the API's description (no /docs page: see create_app)

Each application has its own bearer token (`Authorization: Bearer <token>`), from the file
named by LIMETASK_WEB_TOKENS_FILE (a mounted Secret: a JSON object, `app=token` lines, or a
directory with one file per application; re-read when it changes; a changed file that cannot
be read refuses every application token until it is fixed), else LIMETASK_WEB_TOKENS (a JSON
object). A token opens its own application only. A missing or wrong token, or a token of
another application, is 401, the same answer whether or not the application exists. A
Kubernetes token bound to the endpoint's audience works too (lime_task.kubeauth): its identity
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
or priority, invalid or expired cursor), `UnknownTask`, `InvalidArguments`, `InvalidTask`; 429
`TooManyRequests` (too many new Kubernetes tokens at once, with Retry-After); 503
`ClusterUnavailable`, `ArchiveUnavailable`. No other 5xx: an unexpected error is logged with
an id and answered 400 `RequestFailed`.

Needs the `web` extra (fastapi, uvicorn).
"""

import json
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .archive import ArchiveError, ArchiveReader, decode_cursor, url_from_env
from .dashboard.routes import PLATFORM_TOKENS_ENV, PLATFORM_TOKENS_FILE_ENV
from .dashboard.routes import install as install_dashboard
from .errors import (
    ClusterError,
    InvalidArgumentsError,
    InvalidTaskError,
    LimeTaskError,
    NotFoundError,
    TaskAlreadyFinishedError,
    UnknownTaskError,
)
from .kubeauth import DEFAULT_AUDIENCE, REVIEWS_PER_SECOND, KubernetesAuth, TooManyReviews
from .readiness import ArchiveProbe
from .registry import resolve_task
from .resource import (
    APP_NAME_RE,
    FINAL_STATES,
    MAX_ARGUMENTS_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_NAME_RE,
    STATES,
    TASK_NAME_MAX,
    TASK_NAME_RE,
)
from .solutions import Source, import_task_modules
from .tokens import TokenStore, parse_tokens, read_tokens  # noqa: F401 - the endpoint's token files
from .validation import MAX_DELAY_SECONDS, check_priority, check_queue, check_timing

LOG = logging.getLogger("limetask.web")

TOKENS_FILE_ENV = "LIMETASK_WEB_TOKENS_FILE"
TOKENS_ENV = "LIMETASK_WEB_TOKENS"
KUBERNETES_AUTH_ENV = "LIMETASK_WEB_KUBERNETES_AUTH"
AUDIENCE_ENV = "LIMETASK_WEB_AUDIENCE"
REVIEWS_PER_SECOND_ENV = "LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND"
IMPORTS_ENV = "LIMETASK_IMPORTS"
# Arguments take at most 32 KiB as compact JSON; a body has room for names and indentation.
MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the HTTP contract ----------------------------------------------------------------------

class StartTask(BaseModel):
    """What to run: a registered task and its JSON arguments (the application is in the path)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "my_package.tasks.lime.get_lime_company", "args": [1001, ["name", "phone"]], "kwargs": {}},
    ]})

    task: Annotated[str, Field(min_length=3, max_length=TASK_NAME_MAX, pattern=TASK_NAME_RE.pattern,
                               description="dotted name of a function registered with @task")]
    args: list[JsonValue] = Field(default_factory=list, description="positional arguments after the application")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict, description="keyword arguments")
    countdown: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS,
                                    description="start no earlier than this many seconds from now")
    eta: AwareDatetime | None = Field(default=None, description="start no earlier than this time (not with countdown)")
    expires: Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] | AwareDatetime | None = Field(
        default=None, description="seconds from now, or a time: a task not started by then ends as FAILURE, "
                                  "reason Expired, and never runs")
    qos: str | None = Field(default=None, min_length=1, max_length=63, pattern=QUEUE_NAME_RE.pattern,
                            description="the queue to wait in for a slot (default: the task's own @task(qos=), "
                                        "else the queue 'default')", examples=["asap"])
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                                 description="order among the tasks waiting in the queue, higher first "
                                             "(default: the task's own @task(priority=), else 0)")

    # The client's own checks, before pydantic's: the same clear message as send_task's, and no
    # "5" or true taken for a priority.
    @field_validator("qos", mode="before")
    @classmethod
    def _queue_name(cls, value: Any) -> Any:
        return check_queue(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return None if value is None else check_priority(value)

    # Times by send_task's own rule: a string is a time, never seconds ("3600" is refused as
    # send_task refuses it), NaN is not a number of seconds, nothing before 1970 or over a year
    # ahead. (How the three go together, send_task checks too.)
    @field_validator("countdown", "eta", "expires", mode="before")
    @classmethod
    def _time(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            check_timing(**{str(info.field_name): value})
        return value


class TaskErrorBody(BaseModel):
    """Why a task failed."""

    type: str = Field(description="the exception type")
    message: str
    reason: str = Field(description="CamelCase: TaskRaised, WorkerLost, TimedOut, Cancelled, ...")


class QueueBody(BaseModel):
    """The task's queue and, while it waits there for a slot, its place."""

    name: str = Field(description="the queue (a LimeTaskQueue); 'default' when the task names none")
    priority: int = Field(description="order among waiting tasks, higher first")
    queued: bool = Field(description="whether the task waits in the queue for a slot (it is PENDING meanwhile)")
    reason: str | None = Field(default=None, description="while queued: Waiting, QueueNotFound, QueuePaused "
                                                         "or Kueue")
    message: str | None = Field(default=None, description="while queued: why, in words")
    position: int | None = Field(default=None, description="while queued: 1 is the next to start; none further "
                                                           "back than the queue's first 100")
    waiting: int | None = Field(default=None, description="while queued: how many tasks waited in the queue, of "
                                                          "every application, when the position was counted")
    since: str | None = Field(default=None, description="while queued: when this attempt began to wait",
                              json_schema_extra={"format": "date-time"})
    updated_at: str | None = Field(default=None, description="while queued: when the position was counted",
                                   json_schema_extra={"format": "date-time"})


class TaskStatusBody(BaseModel):
    """A task's status, as `TaskStatus.to_dict()` gives it."""

    id: str
    task: str
    app: str
    status: Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
    result: JsonValue = Field(default=None, description="the task's return value, once SUCCESS")
    error: TaskErrorBody | None = Field(default=None, description="why it failed, once FAILURE")
    attempts: int
    created_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    event_confirmed: bool = Field(description="whether the broker has confirmed the completion event")
    namespace: str
    history: list[dict[str, JsonValue]] = Field(default_factory=list, description="every attempt")
    archived: bool = Field(default=False, description="read from the archive (the task has left the cluster)")
    eta: str | None = Field(default=None, description="delayed start: not before this time",
                            json_schema_extra={"format": "date-time"})
    expires: str | None = Field(default=None, description="a task not started by then ends as FAILURE, Expired",
                                json_schema_extra={"format": "date-time"})
    retries: int = Field(default=0, description="retries after exceptions the task's autoretry_for names")
    retry_at: str | None = Field(default=None, description="when the next retry starts",
                                 json_schema_extra={"format": "date-time"})
    queue: QueueBody = Field(description="its queue and, while it waits there, its place")


class ScheduleBody(BaseModel):
    """A LimeTaskSchedule: a task run for the application on a cron schedule."""

    name: str
    task: str | None
    app: str | None
    schedule: str | None
    time_zone: str | None = Field(description="IANA time zone; null: UTC")
    concurrency_policy: str
    suspend: bool
    active: int = Field(description="runs not finished yet")
    last_schedule_time: str | None
    last_successful_time: str | None
    skipped: int
    last_skip_reason: str | None
    problem: str | None = Field(description="what is wrong with the schedule, if anything")


class TaskPage(BaseModel):
    """A page of tasks, and the cursor of the next one (null: the last page)."""

    items: list[TaskStatusBody]
    next: str | None = Field(default=None, description="pass as `cursor` for the next page")


class ErrorBody(BaseModel):
    """Every error: a CamelCase code, a human message and, for invalid requests, what was wrong."""

    code: str
    detail: str
    errors: list[dict[str, JsonValue]] | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """What the endpoint depends on, as last seen; answered at once, never waiting for it."""

    status: Literal["ok", "degraded"] = Field(description="degraded: something below is not ok; live tasks "
                                                          "are still served")
    archive: Literal["ok", "unavailable", "unknown", "none"] = Field(
        description="unavailable: archived tasks cannot be read (503 ArchiveUnavailable); unknown: not "
                    "checked yet; none: no archive configured")
    tokens: Literal["ok", "invalid"] = Field(description="invalid: the tokens file cannot be read, and every "
                                                         "application token is refused until it is fixed")
    platform_tokens: Literal["ok", "invalid"] = Field(description="the same, for the dashboard's platform tokens")


class ApiError(Exception):
    """An error answer: status, code, detail."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, dict(headers or {})


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None,
           errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


UNAUTHORIZED = "a valid bearer token of this application is required"
CLUSTER_DOWN = "the task service cannot reach its Kubernetes cluster; try again later"


def _doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description}}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    **_doc(400, "WrongNamespace: the request names a namespace this endpoint does not serve"),
    **_doc(401, "no valid token of this application"),
    **_doc(422, "invalid request: not JSON, wrong shape, invalid names"),
    **_doc(429, "too many new Kubernetes tokens to check at once: try again after Retry-After seconds"),
    **_doc(503, "the cluster cannot be reached"),
}


# -- authentication -------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="the application's token")
AppInPath = Annotated[str, PathParam(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                     description="application name", examples=["my-app"])]


def app_token_auth(tokens: "TokenStore | Mapping[str, str] | None" = None,
                   kubernetes: "Callable[[], KubernetesAuth | None] | None" = None,
                   verb: str = "get", platform: "TokenStore | None" = None) -> Callable[..., str]:
    """A FastAPI dependency: the `{app}` of the path, once its bearer token has been checked.

    `tokens`: a `TokenStore`, a mapping app → token, or None for the environment (read on
    first use). Use it in your own routers: `app: Annotated[str, Depends(app_token_auth())]`.
    `kubernetes`: gives the `KubernetesAuth` that checks any other token for `verb` on
    LimeTasks (None: application tokens only). `platform`: the dashboard's platform tokens,
    which open no application here and, like application tokens (current or revoked), are
    never sent to the API server.
    """
    store: TokenStore | None = tokens if isinstance(tokens, TokenStore) else (
        TokenStore(tokens) if tokens is not None else None)
    lock = threading.Lock()

    def authorized_app(
        app: AppInPath,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        nonlocal store
        if store is None:
            with lock:
                store = store or TokenStore.from_env()
        presented = credentials.credentials if credentials else None
        if store.check(app, presented):
            return app
        if presented and kubernetes_allowed(kubernetes, presented, verb, store, platform):
            return app
        # An HTTPException, so that the dependency works in any FastAPI application.
        raise HTTPException(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="limetask"'})

    return authorized_app


def kubernetes_allowed(kubernetes: "Callable[[], KubernetesAuth | None] | None", presented: str, verb: str,
                       *stores: "TokenStore | None") -> bool:
    """Whether `presented` is a Kubernetes token whose identity may `verb` LimeTasks. A token of
    one of `stores` (or one it had) is none, and is never shown to the API server. Too many new
    tokens at once: 429, with the seconds to wait."""
    if any(s is not None and s.holds(presented) for s in stores):
        return False
    kube = kubernetes() if kubernetes is not None else None
    if kube is None:
        return False
    try:
        return kube.allowed(presented, verb)
    except TooManyReviews as exc:
        raise HTTPException(429, "too many new tokens to check at once; try again later",
                            {"Retry-After": exc.retry_after_header}) from None


# -- guards around every request ------------------------------------------------------------

class BodyLimit:
    """413 for a request body over the limit, before anything reads it into memory."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, "TooLarge", f"the request body is over {self.limit} bytes: "
                                            f"pass identifiers and let the task load the data")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class CatchAll:
    """Any unexpected error: logged with an id, answered 400, never a 500 with a stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            LOG.exception("request %s %s failed (error id %s)", scope.get("method"), scope.get("path"), error_id)
            if started:
                raise
            await _error(400, "RequestFailed", f"the request could not be processed (error id {error_id})")(
                scope, receive, send)


# -- the application ------------------------------------------------------------------------

def _imports_from_env() -> list[str]:
    return [m.strip() for m in os.environ.get(IMPORTS_ENV, "").split(",") if m.strip()]


def create_app(client: Any = None, tokens: "TokenStore | Mapping[str, str] | None" = None,
               imports: Iterable[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               archive: "ArchiveReader | str | None" = None, kubernetes_auth: "bool | KubernetesAuth | None" = None,
               platform_tokens: "TokenStore | Mapping[str, str] | None" = None, dashboard_watch: Any = None
               ) -> FastAPI:
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
    dashboard's `TaskWatch` (default: one made on first use from the client).
    """
    # A module named here that is a solution (get_task_modules()) brings its task modules along.
    import_task_modules(Source(m, IMPORTS_ENV) for m in (_imports_from_env() if imports is None else imports))
    store = tokens if isinstance(tokens, TokenStore) else (
        TokenStore(tokens) if tokens is not None else TokenStore.from_env())
    platform = platform_tokens if isinstance(platform_tokens, TokenStore) else (
        TokenStore(platform_tokens) if platform_tokens is not None else TokenStore.from_env(
            file_var=PLATFORM_TOKENS_FILE_ENV, var=PLATFORM_TOKENS_ENV))
    if archive is None:
        url = url_from_env()
        archive = ArchiveReader(url) if url else None
    elif isinstance(archive, str):
        archive = ArchiveReader(archive)
    reader: ArchiveReader | None = archive
    if kubernetes_auth is None:
        kubernetes_auth = os.environ.get(KUBERNETES_AUTH_ENV, "true").strip().lower() not in ("false", "0", "no")

    def task_client() -> Any:
        if client is not None:
            return client
        from .client import default_client

        return default_client()

    kube_auth: list[KubernetesAuth] = [kubernetes_auth] if isinstance(kubernetes_auth, KubernetesAuth) else []
    kube_lock = threading.Lock()
    audience, reviews_per_second = _kubernetes_auth_settings()

    def kubernetes() -> KubernetesAuth | None:
        if not kubernetes_auth:
            return None
        with kube_lock:
            if not kube_auth:
                c = task_client()
                if not hasattr(c, "api_client"):
                    return None
                kube_auth.append(KubernetesAuth(c.api_client, c.namespace, audience=audience,
                                                reviews_per_second=reviews_per_second))
            return kube_auth[0]

    def served(asked: str | None) -> None:
        """The endpoint serves its own namespace: a client that means another is told so (an
        archived task of this namespace is never answered as another namespace's)."""
        if asked is not None and asked != namespace():
            raise ApiError(400, "WrongNamespace", f"this endpoint serves namespace {namespace()!r}, not {asked!r}: "
                                                  f"ask the endpoint of namespace {asked!r}")

    def authorized(verb: str) -> Any:
        token_checked = app_token_auth(store, kubernetes, verb, platform=platform)

        def in_namespace(app: Annotated[str, Depends(token_checked)], asked: NamespaceQuery = None) -> str:
            served(asked)  # after the token: the namespace served is said to its clients only
            return app

        return Annotated[str, Depends(in_namespace)]

    def live(method: str, *args: Any, **kwargs: Any) -> Any:
        """A call to the client that reads the cluster only (the archive is read here)."""
        c = task_client()
        fn = getattr(c, method)
        return fn(*args, archive=False, **kwargs) if _takes_archive(fn) else fn(*args, **kwargs)

    def namespace() -> str:
        return str(getattr(task_client(), "namespace", "default"))

    # No /docs nor /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, into the origin
    # where the dashboard keeps its token. The document itself is /openapi.json.
    app = FastAPI(
        title="Lime Task", version="v1", docs_url=None, redoc_url=None,
        description="Start, read and cancel an application's background tasks, live or archived. "
                    "Each application has its own bearer token; Kubernetes tokens bound to the "
                    "endpoint's audience work too.",
    )
    router = APIRouter(prefix="/v1/apps/{app}/tasks", tags=["tasks"], responses=COMMON_ERRORS)

    @router.post("", status_code=202, response_model=TaskStatusBody, summary="Start a task",
                 responses={**_doc(413, "request body or arguments too large")})
    def start_task(app: authorized("create"), body: StartTask, request: Request,  # type: ignore[valid-type]
                   response: Response) -> dict[str, Any]:
        """Start a registered task for the application; returns its status (PENDING).

        The task runs as a Kubernetes Job; read its status at the URL in `Location`.
        """
        try:
            registered = resolve_task(body.task, import_modules=False)
        except UnknownTaskError as exc:
            raise ApiError(422, "UnknownTask", str(exc)) from None
        size = len(json.dumps([body.args, body.kwargs], separators=(",", ":")).encode())
        if size > MAX_ARGUMENTS_BYTES:
            raise ApiError(413, "TooLarge", f"task arguments take {size} bytes as JSON, over the limit "
                                            f"of {MAX_ARGUMENTS_BYTES}: pass identifiers and let the task "
                                            f"load the data")
        status = task_client().send(body.task, app, body.args, body.kwargs, check=False,
                                    options=registered.options, countdown=body.countdown, eta=body.eta,
                                    expires=body.expires, qos=body.qos, priority=body.priority)
        response.headers["Location"] = f"{request.scope.get('root_path', '')}/v1/apps/{app}/tasks/{status.id}"
        return status.to_dict()  # type: ignore[no-any-return]

    @router.get("/{task_id}", response_model=TaskStatusBody, summary="Read a task's status",
                responses={**_doc(404, "no such task for this application")})
    def read_task(app: authorized("get"), task_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        """The task's status, live or archived; 404 when it does not exist or belongs to another
        application."""
        try:
            return live("get_status", task_id, app).to_dict()  # type: ignore[no-any-return]
        except NotFoundError:
            found = _archived(reader, namespace(), task_id, app)
            if found is None:
                raise
            return found

    @router.get("", response_model=TaskPage, summary="List the application's tasks",
                responses={**_doc(404, "no such application")})
    def list_tasks(app: authorized("list"), state: StateQuery = None,  # type: ignore[valid-type]
                   queue: QueueQuery = None, queued: QueuedQuery = False, limit: LimitQuery = 100,
                   cursor: TasksCursorQuery = None) -> dict[str, Any]:
        """The application's live tasks (in the cluster's order), then its archived ones (newest
        first). Pass `next` as `cursor` for the next page.

        Each page of live tasks reads on where the last one stopped; with filters, a page may
        hold fewer than `limit` and still have a `next`. `queue`: only that queue's tasks.
        `queued=true`: only the tasks waiting in a queue for a slot, which are live. An expired
        cursor (the cluster keeps a listing for a few minutes) is 422: list again.
        """
        items: list[dict[str, Any]] = []
        archive_cursor = cursor
        if cursor is not None and not cursor.startswith(LIVE_CURSOR) and cursor != ARCHIVE_START:
            decode_cursor(cursor)  # an invalid one is 422, archive or not
        if cursor is None or cursor.startswith(LIVE_CURSOR):
            filters = {"queued": queued, "queue": queue} if queued or queue else {}
            bodies, after = live("list_page", app, state, limit, cursor[len(LIVE_CURSOR):] if cursor else None,
                                 **filters)
            items = [_live_dict(body, task_client()) for body in not_archived(bodies)]
            if after is not None:
                return {"items": items, "next": LIVE_CURSOR + after}
            archive_cursor = None
        if queued:  # waiting tasks are never archived
            return {"items": items, "next": None}
        if reader is None:
            return {"items": items, "next": None}
        if len(items) >= limit:
            return {"items": items, "next": ARCHIVE_START}
        page = _archive_call(reader.list, namespace(), app, state, limit - len(items),
                             None if archive_cursor == ARCHIVE_START else archive_cursor)
        items += [d for d in (_archived_dict(b) for b in page.items) if queue is None or d["queue"]["name"] == queue]
        return {"items": items, "next": page.next}

    def not_archived(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Live tasks, less the finished ones the archive has already (same incarnation): those
        are listed with the archived tasks, so that a walk through the pages meets each task once."""
        finished = {str((b.get("metadata") or {}).get("name")) for b in bodies
                    if (b.get("status") or {}).get("state") in FINAL_STATES}
        if reader is None or not finished:
            return bodies
        try:
            held = reader.archived_uids(namespace(), sorted(finished))
        except ArchiveError as exc:
            LOG.warning("listing live tasks without asking the archive which it has: %s", exc)
            return bodies
        return [b for b in bodies if (b.get("metadata") or {}).get("uid") not in held]

    @router.post("/{task_id}/cancel", response_model=TaskStatusBody, summary="Cancel a task",
                 responses={**_doc(404, "no such task for this application"),
                            **_doc(409, "the task has already finished")})
    def cancel_task(app: authorized("patch"), task_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        """Stop a pending or running task: it ends as FAILURE, reason Cancelled."""
        try:
            return live("cancel", task_id, app).to_dict()  # type: ignore[no-any-return]
        except NotFoundError:
            if _archived(reader, namespace(), task_id, app) is None:
                raise
            raise TaskAlreadyFinishedError(f"task {task_id!r} has already finished (archived)") from None

    app.include_router(router)

    results = APIRouter(prefix="/v1/apps/{app}/results", tags=["results"], responses={
        **COMMON_ERRORS, **_doc(503, "the cluster or the archive cannot be reached")})

    @results.get("/{task_id}", response_model=TaskStatusBody, summary="Read an archived task",
                 responses={**_doc(404, "no such archived task for this application")})
    def read_result(app: authorized("get"), task_id: str) -> dict[str, Any]:  # type: ignore[valid-type]
        """A finished task from the archive (the client asks here once a task has left the
        cluster); 404 when it is not archived or belongs to another application."""
        found = _archived(reader, namespace(), task_id, app)
        if found is None:
            raise NotFoundError(f"task {task_id!r} not found in the archive")
        return found

    @results.get("", response_model=TaskPage, summary="List the application's archived tasks")
    def list_results(app: authorized("list"), state: StateQuery = None,  # type: ignore[valid-type]
                     limit: LimitQuery = 100, cursor: CursorQuery = None) -> dict[str, Any]:
        """The application's archived tasks, newest first; pass `next` as `cursor` for more."""
        if reader is None:
            return {"items": [], "next": None}
        page = _archive_call(reader.list, namespace(), app, state, limit, cursor)
        return {"items": [_archived_dict(b) for b in page.items], "next": page.next}

    app.include_router(results)

    schedules = APIRouter(prefix="/v1/apps/{app}/schedules", tags=["schedules"], responses=COMMON_ERRORS)

    @schedules.get("", response_model=list[ScheduleBody], summary="List the application's schedules")
    def list_schedules(app: authorized("list")) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        """The application's LimeTaskSchedules: when each runs, its last tick and active runs."""
        from .schedule import list_schedules as listed

        return listed(task_client(), app)

    @schedules.get("/{name}/runs", response_model=list[TaskStatusBody], summary="List a schedule's runs",
                   responses={**_doc(404, "no such schedule for this application"),
                              **_doc(503, "the cluster or the archive cannot be reached")})
    def schedule_runs(app: authorized("list"), name: str,  # type: ignore[valid-type]
                      limit: LimitQuery = 100) -> list[dict[str, Any]]:
        """The runs of one of the application's schedules, newest first: those in the cluster,
        then the archived ones."""
        from .schedule import get_schedule, is_archived_run_of, live_runs

        schedule = get_schedule(task_client(), name, app)
        live = live_runs(task_client(), schedule)[:limit]
        items = [s.to_dict() for s in live]
        if reader is not None and len(items) < limit:
            page = _archive_call(lambda: reader.search(
                namespace(), apps=[app], task=schedule["spec"].get("task"), name_prefix=f"{name}-",
                exclude=[s.id for s in live], limit=limit - len(items)))
            items += [_archived_dict(b) for b in page.items if is_archived_run_of(schedule, b)]
        return items

    app.include_router(schedules)

    bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

    @app.get("/v1/results", response_model=TaskPage, tags=["results"], responses=COMMON_ERRORS,
             summary="List every application's archived tasks")
    def list_all_results(credentials: bearer, app: AppQuery = None, state: StateQuery = None,
                         limit: LimitQuery = 100, cursor: CursorQuery = None,
                         asked: NamespaceQuery = None) -> dict[str, Any]:
        """Archived tasks of every application in the namespace, for a Kubernetes identity that
        may list LimeTasks there (an application's token opens its own application only)."""
        if credentials is None or not kubernetes_allowed(kubernetes, credentials.credentials, "list", store,
                                                         platform):
            raise HTTPException(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="limetask"'})
        served(asked)
        if reader is None:
            return {"items": [], "next": None}
        page = _archive_call(reader.list, namespace(), app, state, limit, cursor)
        return {"items": [_archived_dict(b) for b in page.items], "next": page.next}

    install_dashboard(app, store=store, platform=platform, kubernetes=kubernetes, task_client=task_client,
                      reader=reader, namespace=namespace, watch=dashboard_watch)

    archive_probe = ArchiveProbe(reader.ping if reader is not None else None)

    # Both answer on the event loop, never in the worker threads that requests share (a slow
    # cluster or archive may hold them all), and ask nothing of anyone while the request waits.
    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """Whether the server answers (for liveness: it asks neither the cluster nor the archive)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["health"], summary="Readiness, and what is degraded")
    async def readyz() -> dict[str, str]:
        """200 while the server answers, with the state of what it depends on as last seen (the
        archive is looked at in the background, at most every 15 s). A broken dependency makes
        it `degraded`, never 503: every replica shares it, and live tasks are still served."""
        answer = {"archive": archive_probe.state(),
                  "tokens": "invalid" if store.problem else "ok",
                  "platform_tokens": "invalid" if platform.problem else "ok"}
        healthy = answer["archive"] in ("ok", "none", "unknown") and \
            answer["tokens"] == answer["platform_tokens"] == "ok"
        return {"status": "ok" if healthy else "degraded", **answer}

    _install_error_handlers(app)
    app.add_middleware(CatchAll)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


StateQuery = Annotated[Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"] | None,
                       Query(description="only tasks in this state")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="at most this many tasks")]
QueueQuery = Annotated[str | None, Query(min_length=1, max_length=63, pattern=QUEUE_NAME_RE.pattern,
                                         description="only this queue's tasks ('default': those that name none)")]
QueuedQuery = Annotated[bool, Query(description="only the tasks waiting in a queue for a slot (PENDING, with a "
                                                "Queued condition); these are live, never archived")]
CursorQuery = Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")]
# The live pages' cursors hold the cluster's `continue` tokens, which name the last task read.
TasksCursorQuery = Annotated[str | None, Query(max_length=2100, description="the `next` of the previous page")]
AppQuery = Annotated[str | None, Query(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                       description="only this application's tasks")]
NamespaceQuery = Annotated[str | None, Query(
    alias="namespace", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    description="the namespace the client means: the endpoint serves its own only, and answers 400 "
                "WrongNamespace for another (the client sends it; without it, the endpoint's own)")]
assert set(STATES) == {"PENDING", "STARTED", "SUCCESS", "FAILURE"}


# Cursors of GET /v1/apps/{app}/tasks: live tasks from where the last page stopped (the client's
# `list_page` cursor, which holds the cluster's `continue` token), the start of the archived
# ones, or the archive's own cursor.
LIVE_CURSOR = "live."
ARCHIVE_START = "archive"


def _live_dict(body: dict[str, Any], client: Any) -> dict[str, Any]:
    from .status import TaskStatus

    return TaskStatus.from_resource(body, client).to_dict()


def _takes_archive(fn: Any) -> bool:
    import inspect

    try:
        return "archive" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _archive_call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ArchiveError as exc:
        # The reader's messages never hold the database's own words (host, user): see ArchiveReader.
        raise ApiError(503, "ArchiveUnavailable", f"{exc}; try again later", {"Retry-After": "5"}) from None


def _archived_dict(body: dict[str, Any]) -> dict[str, Any]:
    from .status import TaskStatus

    return TaskStatus.from_resource(body, archived=True).to_dict()


def _archived(reader: "ArchiveReader | None", namespace: str, task_id: str, app: str) -> dict[str, Any] | None:
    """An archived task of `app` as the API answers it, or None."""
    if reader is None:
        return None
    body = _archive_call(reader.get, namespace, task_id, app)
    return _archived_dict(body) if body is not None else None


def _short_loc(loc: list[str], keep: int = 4) -> list[str]:
    return loc if len(loc) <= 2 * keep else [*loc[:keep], "...", *loc[-keep:]]


def _kubernetes_auth_settings(env: Mapping[str, str] | None = None) -> tuple[str, float]:
    """The audience Kubernetes tokens must be bound to, and the TokenReviews allowed a second."""
    env = os.environ if env is None else env
    audience = env.get(AUDIENCE_ENV, "").strip() or DEFAULT_AUDIENCE
    text = env.get(REVIEWS_PER_SECOND_ENV, "").strip()
    try:
        rate = float(text) if text else REVIEWS_PER_SECOND
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 10000:
        raise InvalidTaskError(f"{REVIEWS_PER_SECOND_ENV} must be a number of TokenReviews a second from 0 to 10000 "
                               f"(not 0), got {text!r}")
    return audience, rate


def _install_error_handlers(app: FastAPI) -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    def cluster_down(exc: Exception) -> JSONResponse:
        LOG.error("cluster unavailable: %s: %s", type(exc).__name__, exc)
        return _error(503, "ClusterUnavailable", CLUSTER_DOWN, {"Retry-After": "5"})

    mapping: list[tuple[type[Exception], Callable[[Exception], JSONResponse]]] = [
        (ApiError, lambda e: _error(e.status, e.code, e.detail, e.headers)),  # type: ignore[attr-defined]
        (NotFoundError, lambda e: _error(404, "NotFound", str(e))),
        (UnknownTaskError, lambda e: _error(422, "UnknownTask", str(e))),
        (InvalidArgumentsError, lambda e: _error(422, "InvalidArguments", str(e))),
        (InvalidTaskError, lambda e: _error(422, "InvalidTask", str(e))),
        (TaskAlreadyFinishedError, lambda e: _error(409, "AlreadyFinished", str(e))),
        (ClusterError, cluster_down),
        # Raw API errors: a task deleted in between looks like any missing task; the rest is the cluster's.
        (ApiException, lambda e: _error(404, "NotFound", "task not found") if getattr(e, "status", None) == 404
         else cluster_down(e)),
        (HTTPError, cluster_down),
        (LimeTaskError, lambda e: _error(400, "RequestFailed", str(e))),
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
        return _error(422, "InvalidRequest", f"invalid request: {summary}", errors=errors)

    def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {400: "InvalidRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 422: "InvalidRequest", 429: "TooManyRequests"}
        code = codes.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
