"""An HTTP endpoint for tasks: start, read and cancel an application's tasks.

    LIMETASK_WEB_TOKENS_FILE=/etc/limetask/tokens limetask web --imports my_package.tasks.tasks

    POST /v1/apps/{app}/tasks              {"task": ..., "args": [...], "kwargs": {...}} -> 202
    GET  /v1/apps/{app}/tasks/{id}         -> 200, or 404 (missing, or another application's)
    POST /v1/apps/{app}/tasks/{id}/cancel  -> 200, or 409 once it has finished
    GET  /healthz                          -> 200, without a token
    GET  /openapi.json, /docs

Each application has its own bearer token (`Authorization: Bearer <token>`), from the file
named by LIMETASK_WEB_TOKENS_FILE (a mounted Secret: a JSON object, `app=token` lines, or a
directory with one file per application; re-read when it changes), else LIMETASK_WEB_TOKENS
(a JSON object). A token opens its own application only. A missing or wrong token, or a
token of another application, is 401, the same answer whether or not the application exists.

Only tasks registered with `@task` in this process can be started (import their modules with
`--imports` or LIMETASK_IMPORTS); a task name never makes this server import anything.

Errors are `{"code": ..., "detail": ...}`: 401 `Unauthorized`; 404 `NotFound`; 409
`AlreadyFinished`; 413 `TooLarge` (a body over 64 KiB or arguments over 32 KiB);
422 `InvalidRequest` (not JSON, wrong shape, invalid application or task name),
`UnknownTask`, `InvalidArguments`, `InvalidTask`; 503 `ClusterUnavailable`. No other 5xx: an
unexpected error is logged with an id and answered 400 `RequestFailed`.

Needs the `web` extra (fastapi, uvicorn).
"""

import hmac
import importlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import (
    ClusterError,
    InvalidArgumentsError,
    InvalidTaskError,
    LimeTaskError,
    NotFoundError,
    TaskAlreadyFinishedError,
    UnknownTaskError,
)
from .registry import resolve_task
from .resource import APP_NAME_RE, MAX_ARGUMENTS_BYTES, TASK_NAME_MAX, TASK_NAME_RE
from .validation import check_app_name

LOG = logging.getLogger("limetask.web")

TOKENS_FILE_ENV = "LIMETASK_WEB_TOKENS_FILE"
TOKENS_ENV = "LIMETASK_WEB_TOKENS"
IMPORTS_ENV = "LIMETASK_IMPORTS"
# Arguments take at most 32 KiB as compact JSON; a body has room for names and indentation.
MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- tokens ---------------------------------------------------------------------------------

def parse_tokens(text: str, source: str = "tokens") -> dict[str, str]:
    """Application → token from a JSON object or `app=token` lines (`#` starts a comment)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{source}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object of application → token")
        pairs: Iterable[tuple[Any, Any]] = data.items()
    else:
        found: list[tuple[Any, Any]] = []
        for number, line in enumerate(stripped.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            app, sep, token = line.partition("=")
            if not sep:
                raise ValueError(f"{source}, line {number}: expected app=token")
            found.append((app.strip(), token.strip()))
        pairs = found
    return _checked(pairs, source)


def _checked(pairs: Iterable[tuple[Any, Any]], source: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for app, token in pairs:
        try:
            check_app_name(app)
        except InvalidTaskError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError(f"{source}: the token of {app!r} must be a non-empty string without spaces")
        if app in tokens:
            raise ValueError(f"{source}: {app!r} appears twice")
        tokens[app] = token
    return tokens


def read_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Tokens from a file, or from a directory with one file per application (a Secret volume)."""
    p = Path(path)
    if p.is_dir():
        # A Secret volume holds `..data` and timestamped directories next to the keys: skip dot names.
        return _checked(((f.name, f.read_text().strip()) for f in sorted(p.iterdir())
                         if not f.name.startswith(".") and f.is_file()), str(p))
    return parse_tokens(p.read_text(), str(p))


class TokenStore:
    """The bearer token of each application, re-read when its file changes (a rotated Secret)."""

    def __init__(self, tokens: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._tokens = _checked(dict(tokens or {}).items(), "tokens")
        self._stamp: int | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self._reload(initial=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TokenStore":
        """From LIMETASK_WEB_TOKENS_FILE, else LIMETASK_WEB_TOKENS (JSON), else no tokens at all."""
        env = os.environ if env is None else env
        if env.get(TOKENS_FILE_ENV):
            return cls(path=env[TOKENS_FILE_ENV])
        if env.get(TOKENS_ENV):
            return cls(parse_tokens(env[TOKENS_ENV], TOKENS_ENV))
        return cls()

    def _reload(self, initial: bool = False) -> None:
        assert self.path is not None
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp == self._stamp:
                return
            tokens = read_tokens(self.path)
        except (OSError, ValueError) as exc:
            if initial:
                raise ValueError(f"cannot read the tokens from {self.path}: {exc}") from exc
            LOG.error("cannot re-read the tokens from %s, keeping the old ones: %s", self.path, exc)
            return
        self._tokens, self._stamp = tokens, stamp

    def apps(self) -> list[str]:
        with self._lock:
            if self.path is not None:
                self._reload()
            return sorted(self._tokens)

    def check(self, app: str, presented: str | None) -> bool:
        """Whether `presented` is the token of `app`, compared in constant time."""
        with self._lock:
            if self.path is not None:
                self._reload()
            expected = self._tokens.get(app)
        # Compare even without a token for the app, so that timing does not tell which apps exist.
        ok = hmac.compare_digest((presented or "").encode(), (expected or "\0").encode())
        return ok and expected is not None and presented is not None


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


class TaskErrorBody(BaseModel):
    """Why a task failed."""

    type: str = Field(description="the exception type")
    message: str
    reason: str = Field(description="CamelCase: TaskRaised, WorkerLost, TimedOut, Cancelled, ...")


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


class ErrorBody(BaseModel):
    """Every error: a CamelCase code, a human message and, for invalid requests, what was wrong."""

    code: str
    detail: str
    errors: list[dict[str, JsonValue]] | None = None


class Health(BaseModel):
    status: Literal["ok"]


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
    **_doc(401, "no valid token of this application"),
    **_doc(422, "invalid request: not JSON, wrong shape, invalid names"),
    **_doc(503, "the cluster cannot be reached"),
}


# -- authentication -------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="the application's token")
AppInPath = Annotated[str, PathParam(min_length=1, max_length=63, pattern=APP_NAME_RE.pattern,
                                     description="application name", examples=["my-app"])]


def app_token_auth(tokens: "TokenStore | Mapping[str, str] | None" = None) -> Callable[..., str]:
    """A FastAPI dependency: the `{app}` of the path, once its bearer token has been checked.

    `tokens`: a `TokenStore`, a mapping app → token, or None for the environment (read on
    first use). Use it in your own routers: `app: Annotated[str, Depends(app_token_auth())]`.
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
        if not store.check(app, credentials.credentials if credentials else None):
            # An HTTPException, so that the dependency works in any FastAPI application.
            raise HTTPException(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="limetask"'})
        return app

    return authorized_app


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
               imports: Iterable[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The HTTP endpoint as a FastAPI application.

    `client`: a `TaskClient` (default: the shared one, configured from the environment on the
    first request). `tokens`: app → token, or a `TokenStore` (default: from the environment).
    `imports`: modules whose tasks may be started (default: LIMETASK_IMPORTS); tasks already
    registered in this process can be started too.
    """
    for module in (_imports_from_env() if imports is None else imports):
        importlib.import_module(module)
    store = tokens if isinstance(tokens, TokenStore) else (
        TokenStore(tokens) if tokens is not None else TokenStore.from_env())
    authorized_app = app_token_auth(store)
    AuthorizedApp = Annotated[str, Depends(authorized_app)]

    def task_client() -> Any:
        if client is not None:
            return client
        from .client import default_client

        return default_client()

    app = FastAPI(
        title="Lime Task", version="v1",
        description="Start, read and cancel an application's background tasks. "
                    "Each application has its own bearer token.",
    )
    router = APIRouter(prefix="/v1/apps/{app}/tasks", tags=["tasks"], responses=COMMON_ERRORS)

    @router.post("", status_code=202, response_model=TaskStatusBody, summary="Start a task",
                 responses={**_doc(413, "request body or arguments too large")})
    def start_task(app: AuthorizedApp, body: StartTask, request: Request, response: Response) -> dict[str, Any]:
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
                                    options=registered.options)
        response.headers["Location"] = f"{request.scope.get('root_path', '')}/v1/apps/{app}/tasks/{status.id}"
        return status.to_dict()  # type: ignore[no-any-return]

    @router.get("/{task_id}", response_model=TaskStatusBody, summary="Read a task's status",
                responses={**_doc(404, "no such task for this application")})
    def read_task(app: AuthorizedApp, task_id: str) -> dict[str, Any]:
        """The task's status; 404 when it does not exist or belongs to another application."""
        return task_client().get_status(task_id, app).to_dict()  # type: ignore[no-any-return]

    @router.post("/{task_id}/cancel", response_model=TaskStatusBody, summary="Cancel a task",
                 responses={**_doc(404, "no such task for this application"),
                            **_doc(409, "the task has already finished")})
    def cancel_task(app: AuthorizedApp, task_id: str) -> dict[str, Any]:
        """Stop a pending or running task: it ends as FAILURE, reason Cancelled."""
        return task_client().cancel(task_id, app).to_dict()  # type: ignore[no-any-return]

    app.include_router(router)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    def healthz() -> dict[str, str]:
        """Whether the server answers (it does not ask the cluster)."""
        return {"status": "ok"}

    _install_error_handlers(app)
    app.add_middleware(CatchAll)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def _short_loc(loc: list[str], keep: int = 4) -> list[str]:
    return loc if len(loc) <= 2 * keep else [*loc[:keep], "...", *loc[-keep:]]


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
        errors = [{"loc": _short_loc([str(part) for part in e.get("loc", ())]), "msg": str(e.get("msg", ""))[:200],
                   "type": str(e.get("type", ""))} for e in exc.errors()[:20]]
        summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return _error(422, "InvalidRequest", f"invalid request: {summary}", errors=errors)

    def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {400: "InvalidRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}
        code = codes.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
