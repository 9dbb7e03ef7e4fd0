"""Who may do what at the endpoint: the one place that decides.

- An application's token (LIMETASK_WEB_TOKENS_FILE or LIMETASK_WEB_TOKENS, `lime_task.tokens`)
  opens its own application only: another application's task is 401 on its routes and 404 on
  the dashboard's, the same answer whether or not it exists.
- A platform token (LIMETASK_WEB_PLATFORM_TOKENS_FILE or LIMETASK_WEB_PLATFORM_TOKENS) sees every
  application's tasks on the dashboard, and cancels nothing; it opens no application's routes.
- A Kubernetes token bound to the endpoint's audience (`kubeauth.py`) may do over HTTP what its
  identity may do to LimeTasks in the endpoint's namespace (`get`, `list`, `create`, `patch`).
  An application's or platform token (current or revoked) is never sent to the API server.

Routes take these as dependencies: `AppMayGet` (and `AppMayList`, `AppMayCreate`,
`AppMayPatch`) give the `{app}` of the path once its token may; `Viewer` gives the dashboard's
`Scope` (dashboard/model.py), which `scope_of` decides.
"""

import os
import threading
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import InvalidTaskError
from ..results import DEFAULT_AUDIENCE
from ..tokens import TokenStore
from .contract import AppInPath, NamespaceQuery
from .dashboard.model import Scope
from .deps import UNAUTHORIZED, Services, ServicesDep
from .kubeauth import REVIEWS_PER_SECOND, KubernetesAuth, TooManyReviews

PLATFORM_TOKENS_FILE_ENV = "LIMETASK_WEB_PLATFORM_TOKENS_FILE"
PLATFORM_TOKENS_ENV = "LIMETASK_WEB_PLATFORM_TOKENS"
KUBERNETES_AUTH_ENV = "LIMETASK_WEB_KUBERNETES_AUTH"
AUDIENCE_ENV = "LIMETASK_WEB_AUDIENCE"
REVIEWS_PER_SECOND_ENV = "LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND"

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="limetask"'}
APP_BEARER = HTTPBearer(auto_error=False, description="the application's token")
ANY_BEARER = HTTPBearer(auto_error=False,
                        description="an application's token, a platform token or a Kubernetes token")
DASHBOARD_UNAUTHORIZED = ("a valid bearer token is required: an application's, a platform token, or a "
                          "Kubernetes token")


# -- settings -------------------------------------------------------------------------------

def kubernetes_auth_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether Kubernetes tokens are taken: LIMETASK_WEB_KUBERNETES_AUTH, true unless "false"."""
    env = os.environ if env is None else env
    return env.get(KUBERNETES_AUTH_ENV, "true").strip().lower() not in ("false", "0", "no")


def kubernetes_auth_settings(env: Mapping[str, str] | None = None) -> tuple[str, float]:
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


def platform_tokens_from_env(env: Mapping[str, str] | None = None) -> TokenStore:
    """The dashboard's platform tokens: LIMETASK_WEB_PLATFORM_TOKENS_FILE, else LIMETASK_WEB_PLATFORM_TOKENS."""
    return TokenStore.from_env(env, file_var=PLATFORM_TOKENS_FILE_ENV, var=PLATFORM_TOKENS_ENV)


# -- Kubernetes tokens ----------------------------------------------------------------------

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


# -- an application's routes ----------------------------------------------------------------

def app_token_allowed(store: TokenStore, app: str, presented: str | None, verb: str,
                      kubernetes: "Callable[[], KubernetesAuth | None] | None" = None,
                      platform: "TokenStore | None" = None) -> bool:
    """Whether `presented` opens `app` for `verb`: the application's own token, or a Kubernetes
    token whose identity may."""
    if store.check(app, presented):
        return True
    return bool(presented) and kubernetes_allowed(kubernetes, str(presented), verb, store, platform)


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
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(APP_BEARER)],
    ) -> str:
        nonlocal store
        if store is None:
            with lock:
                store = store or TokenStore.from_env()
        if app_token_allowed(store, app, credentials.credentials if credentials else None, verb, kubernetes,
                             platform):
            return app
        # An HTTPException, so that the dependency works in any FastAPI application.
        raise HTTPException(401, UNAUTHORIZED, CHALLENGE)

    return authorized_app


def app_may(verb: str) -> Callable[..., str]:
    """A dependency: the `{app}` of the path, once the request's token may `verb` its tasks and the request
    means the namespace served (checked after the token: the namespace served is said to its
    clients only)."""

    def token_checked(app: AppInPath, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                             Depends(APP_BEARER)],
                      services: ServicesDep) -> str:
        if app_token_allowed(services.store, app, credentials.credentials if credentials else None, verb,
                             services.kubernetes, services.platform):
            return app
        raise HTTPException(401, UNAUTHORIZED, CHALLENGE)

    def in_namespace(app: Annotated[str, Depends(token_checked)], services: ServicesDep,
                     asked: NamespaceQuery = None) -> str:
        services.served(asked)
        return app

    return in_namespace


AppMayGet = Annotated[str, Depends(app_may("get"))]
AppMayList = Annotated[str, Depends(app_may("list"))]
AppMayCreate = Annotated[str, Depends(app_may("create"))]
AppMayPatch = Annotated[str, Depends(app_may("patch"))]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(APP_BEARER)]


def may_list_every_app(services: ServicesDep, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the token may read every application's archived tasks: a Kubernetes identity that
    may list LimeTasks in the namespace (an application's token opens its own application only)."""
    return credentials is not None and kubernetes_allowed(services.kubernetes, credentials.credentials, "list",
                                                          services.store, services.platform)


# -- the dashboard --------------------------------------------------------------------------

def scope_of(services: Services, token: str | None) -> Scope | None:
    """What a token sees on the dashboard (None: nothing, it is no token of ours)."""
    if not token:
        return None
    owner = services.store.owner(token)
    if owner is not None:
        return Scope("app", frozenset({owner}), may_cancel=True, name=owner)
    team = services.platform.owner(token)
    if team is not None:
        return Scope("platform", None, may_cancel=False, name=team)
    # (A revoked application or platform token is never sent to the API server.)
    if kubernetes_allowed(services.kubernetes, token, "list", services.store, services.platform):
        return Scope("kubernetes", None, may_cancel=kubernetes_allowed(services.kubernetes, token, "patch"),
                     name="kubernetes")
    return None


def viewer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(ANY_BEARER)],
           services: ServicesDep) -> Scope:
    found = scope_of(services, credentials.credentials if credentials else None)
    if found is None:
        raise HTTPException(401, DASHBOARD_UNAUTHORIZED, CHALLENGE)
    return found


Viewer = Annotated[Scope, Depends(viewer)]
