"""The client's way to archived tasks: the HTTP endpoint's results API.

Finished tasks leave the cluster for the archive (PostgreSQL) a short while after they end.
`get_status`, `TaskStatus.wait`, `list_tasks` and the CLI read them through the endpoint
(`limetask web` or the chart's web Deployment), never from the database: a solution needs no
database credentials. Configuration:

- `LIMETASK_RESULTS_URL`: the endpoint's base URL, e.g. the chart's Service
  http://lt-limetask-web.tasks.svc (plain HTTP: the chart terminates no TLS, and a token sent
  over it can be read by whoever can read the pod network; put the endpoint behind https, a
  TLS-terminating ingress or a service mesh, wherever that network is not trusted, and give
  its CA in `LIMETASK_RESULTS_CA_FILE`).
- The token presented for an application: its own token from `LIMETASK_RESULTS_TOKENS_FILE`
  or `LIMETASK_RESULTS_TOKENS` (the endpoint's formats); else a Kubernetes token bound to the
  endpoint's audience (`LIMETASK_RESULTS_AUDIENCE`, default `limetask-web`), which the API
  server itself refuses:
  - `LIMETASK_RESULTS_KUBERNETES_TOKEN_FILE`: a file holding one, read at each request (in a
    pod, a projected serviceAccountToken volume with that audience, which the kubelet rotates;
    outside, e.g. `kubectl create token SA --audience limetask-web`);
  - else one the TokenRequest API makes for the ServiceAccount `LIMETASK_RESULTS_SERVICE_ACCOUNT`
    of the client's namespace, or for the client's own identity when that is a ServiceAccount
    (the identity must be allowed to `create` `serviceaccounts/token` for it).
  Never the client's own token for the API server: the endpoint must not hold credentials of
  the cluster, and refuses them.
- Each request names the client's namespace; an endpoint serving another one says so (400
  `WrongNamespace`), and an answer about another namespace's task is refused here too.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .errors import ClusterError, InvalidTaskError
from .tokens import TokenStore

URL_ENV = "LIMETASK_RESULTS_URL"
TOKENS_FILE_ENV = "LIMETASK_RESULTS_TOKENS_FILE"
TOKENS_ENV = "LIMETASK_RESULTS_TOKENS"
CA_FILE_ENV = "LIMETASK_RESULTS_CA_FILE"
# The audience of the Kubernetes tokens the endpoint takes (both sides default to it).
DEFAULT_AUDIENCE = "limetask-web"
AUDIENCE_ENV = "LIMETASK_RESULTS_AUDIENCE"
KUBERNETES_TOKEN_FILE_ENV = "LIMETASK_RESULTS_KUBERNETES_TOKEN_FILE"
SERVICE_ACCOUNT_ENV = "LIMETASK_RESULTS_SERVICE_ACCOUNT"
# Tokens from the TokenRequest API: ten minutes (the API server's least), renewed after eight.
TOKEN_SECONDS = 600
RENEW_AFTER = 0.8
NO_TOKEN = (f"set {TOKENS_FILE_ENV} (the application's token), {KUBERNETES_TOKEN_FILE_ENV} (a projected "
            f"ServiceAccount token for the endpoint's audience) or {SERVICE_ACCOUNT_ENV}")

# (namespace, name) of a ServiceAccount -> (token, when it expires as a Unix time)
TokenRequest = Callable[[str, str, str, int], tuple[str, float]]


class ResultsUnavailableError(ClusterError):
    """The results API (or the archive behind it) cannot be reached or refused the request."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # a 401: the token was not accepted (or there was none)


def service_account_of(token: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the ServiceAccount whose token this is, from its claims (read, not
    verified: it is the client's own), or None."""
    parts = (token or "").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject.startswith("system:serviceaccount:"):
        return None
    namespace, _, name = subject.removeprefix("system:serviceaccount:").partition(":")
    return (namespace, name) if namespace and name else None


class KubernetesTokens:
    """A Kubernetes token for the endpoint's audience: from a file, or from the TokenRequest API
    for a ServiceAccount (kept until shortly before it expires), or none."""

    def __init__(self, audience: str = DEFAULT_AUDIENCE, token_file: str | os.PathLike[str] | None = None,
                 service_account: tuple[str, str] | None = None, request: TokenRequest | None = None,
                 own_account: Callable[[], tuple[str, str] | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.audience, self.request, self.own_account, self.clock = audience, request, own_account, clock
        self.token_file = Path(token_file) if token_file else None
        self.service_account = service_account
        self._made: tuple[str, float] | None = None  # a token from the TokenRequest API, renew when
        self._lock = threading.Lock()

    def get(self) -> str | None:
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise ResultsUnavailableError(f"cannot read the Kubernetes token for the results API from "
                                              f"{self.token_file}: {exc.strerror}", refused=True) from None
            if not token:
                raise ResultsUnavailableError(f"the Kubernetes token file {self.token_file} is empty", refused=True)
            return token
        if self.request is None:
            return None
        account = self.service_account or (self.own_account() if self.own_account is not None else None)
        if account is None:
            return None
        with self._lock:
            if self._made is None or self.clock() >= self._made[1]:
                token, expires = self.request(*account, self.audience, TOKEN_SECONDS)
                now = self.clock()
                self._made = (token, now + max(0.0, expires - now) * RENEW_AFTER)
            return self._made[0]


class ResultsClient:
    def __init__(self, url: str, tokens: TokenStore | Mapping[str, str] | None = None,
                 kube_token: Callable[[], str | None] | None = None, ca_file: str | None = None,
                 timeout: float = 10.0) -> None:
        """`kube_token`: gives a Kubernetes token for the endpoint's audience (see
        `KubernetesTokens`), presented when there is no token of the application."""
        import urllib3

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidTaskError(f"the results URL must be an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self.tokens = tokens if isinstance(tokens, TokenStore) else TokenStore(tokens or {})
        self.kube_token = kube_token
        self.http = urllib3.PoolManager(num_pools=4, maxsize=8, ca_certs=ca_file or None,
                                        timeout=urllib3.Timeout(connect=5, read=timeout),
                                        retries=urllib3.Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.2))

    @classmethod
    def from_env(cls, kube_token: Callable[[], str | None] | None = None,
                 env: Mapping[str, str] | None = None) -> "ResultsClient | None":
        env = os.environ if env is None else env
        url = env.get(URL_ENV, "").strip()
        if not url:
            return None
        return cls(url, tokens_from_env(env), kube_token, env.get(CA_FILE_ENV) or None)

    def _token(self, app: str | None) -> str | None:
        token = self.tokens.get(app) if app else None
        if token is None and self.kube_token is not None:
            token = self.kube_token()
        return token

    def _get(self, path: str, app: str | None, namespace: str,
             params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """GET a path of the API that answers an object: the JSON answer, or None for a 404."""
        body = self._fetch(path, app, namespace, params)
        return None if body is None else body if isinstance(body, dict) else {}

    def _get_list(self, path: str, app: str | None, namespace: str,
                  params: Mapping[str, Any] | None = None) -> list[Any] | None:
        """GET a path of the API that answers an array: the JSON answer, or None for a 404."""
        body = self._fetch(path, app, namespace, params)
        return None if body is None else body if isinstance(body, list) else []

    def _fetch(self, path: str, app: str | None, namespace: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a path of the API: the JSON answer, or None for a 404."""
        import urllib3

        token = self._token(app)
        if not token:
            raise ResultsUnavailableError(f"no token for the results API at {self.url} for "
                                          f"{app or 'every application'}: {NO_TOKEN}", refused=True)
        query = {k: v for k, v in {**(params or {}), "namespace": namespace}.items() if v is not None}
        url = f"{self.url}{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        try:
            resp = self.http.request("GET", url, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise ResultsUnavailableError(f"the results API at {self.url} cannot be reached: {exc}") from exc
        if resp.status == 404:
            return None
        try:
            body = json.loads(resp.data) if resp.data else {}
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        if resp.status == 401:
            raise ResultsUnavailableError(
                f"the results API at {self.url} refused the token for {app or 'every application'}: {NO_TOKEN}; "
                f"a Kubernetes identity must be allowed to read LimeTasks in namespace {namespace!r}", refused=True)
        if resp.status == 400 and isinstance(body, dict) and body.get("code") == "WrongNamespace":
            raise ResultsUnavailableError(f"the results API at {self.url}: {detail}; set {URL_ENV} to the endpoint "
                                          f"of namespace {namespace!r}")
        if resp.status >= 300:
            raise ResultsUnavailableError(f"the results API at {self.url} answered {resp.status}: "
                                          f"{detail or resp.data[:200]!r}")
        return body

    def _checked(self, found: dict[str, Any], namespace: str) -> dict[str, Any]:
        """An answer about another namespace's task is never taken for this one's (an endpoint
        that does not check the namespace it is asked about)."""
        if found.get("namespace") != namespace:
            raise ResultsUnavailableError(f"the results API at {self.url} answered for namespace "
                                          f"{found.get('namespace')!r}, not {namespace!r}: set {URL_ENV} to the "
                                          f"endpoint of namespace {namespace!r}")
        return found

    def get(self, app: str, task_id: str, namespace: str) -> dict[str, Any] | None:
        """An archived task of `app` (the API's form), or None: not archived, or another app's."""
        found = self._get(f"/v1/apps/{quote(app, safe='')}/results/{quote(task_id, safe='')}", app, namespace)
        return self._checked(found, namespace) if found is not None else None

    def schedule_runs(self, app: str, name: str, limit: int, *, namespace: str) -> list[dict[str, Any]] | None:
        """The runs of an application's schedule, live and archived, newest first (the API's
        form), or None when the endpoint knows no such schedule."""
        body = self._get_list(f"/v1/apps/{quote(app, safe='')}/schedules/{quote(name, safe='')}/runs", app,
                              namespace, {"limit": limit})
        return None if body is None else [self._checked(item, namespace) for item in body if isinstance(item, dict)]

    def list(self, app: str | None, state: str | None, limit: int, cursor: str | None = None, *,
             namespace: str) -> tuple[list[dict[str, Any]], str | None]:
        """A page of archived tasks, newest first, and the cursor of the next (None: no more)."""
        params = {"state": state, "limit": limit, "cursor": cursor}
        if app:
            body = self._get(f"/v1/apps/{quote(app, safe='')}/results", app, namespace, params)
        else:
            body = self._get("/v1/results", None, namespace, params)
        body = body or {}
        return [self._checked(item, namespace) for item in body.get("items") or []], body.get("next")


def tokens_from_env(env: Mapping[str, str] | None = None) -> TokenStore:
    """The applications' tokens for the results API: LIMETASK_RESULTS_TOKENS_FILE, else
    LIMETASK_RESULTS_TOKENS (the endpoint's formats)."""
    return TokenStore.from_env(env, TOKENS_FILE_ENV, TOKENS_ENV)


def expiry_of(timestamp: Any) -> float:
    """A TokenRequest's expirationTimestamp (a datetime, or RFC 3339 text) as a Unix time."""
    if isinstance(timestamp, dt.datetime):
        return (timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(timestamp, str):
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return time.time() + TOKEN_SECONDS
