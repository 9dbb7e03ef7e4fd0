"""The client's way to archived tasks: the HTTP endpoint's results API.

Finished tasks leave the cluster for the archive (PostgreSQL) a short while after they end.
`get_status`, `TaskStatus.wait`, `list_tasks` and the CLI read them through the endpoint
(`limetask web` or the chart's web Deployment), never from the database: a solution needs no
database credentials. Configuration:

- `LIMETASK_RESULTS_URL`: the endpoint's base URL (e.g. http://limetask-web.tasks.svc:8000);
- the token presented for an application: its token from `LIMETASK_RESULTS_TOKENS_FILE` or
  `LIMETASK_RESULTS_TOKENS` (the endpoint's own formats), else the client's Kubernetes token
  (a pod's ServiceAccount token, or the kubeconfig's), which the endpoint checks at the API
  server: whoever may read LimeTasks in the namespace may read archived ones;
- `LIMETASK_RESULTS_CA_FILE`: the CA bundle of an https endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .errors import ClusterError, InvalidTaskError
from .tokens import TokenStore

URL_ENV = "LIMETASK_RESULTS_URL"
TOKENS_FILE_ENV = "LIMETASK_RESULTS_TOKENS_FILE"
TOKENS_ENV = "LIMETASK_RESULTS_TOKENS"
CA_FILE_ENV = "LIMETASK_RESULTS_CA_FILE"


class ResultsUnavailableError(ClusterError):
    """The results API (or the archive behind it) cannot be reached or refused the request."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # a 401: the token was not accepted


class ResultsClient:
    def __init__(self, url: str, tokens: TokenStore | Mapping[str, str] | None = None,
                 kube_token: Callable[[], str | None] | None = None, ca_file: str | None = None,
                 timeout: float = 10.0) -> None:
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
        return cls(url, TokenStore.from_env(env, TOKENS_FILE_ENV, TOKENS_ENV), kube_token,
                   env.get(CA_FILE_ENV) or None)

    def _token(self, app: str | None) -> str | None:
        token = self.tokens.get(app) if app else None
        if token is None and self.kube_token is not None:
            token = self.kube_token()
        return token

    def _get(self, path: str, app: str | None, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """GET a path of the API that answers an object: the JSON answer, or None for a 404."""
        body = self._fetch(path, app, params)
        return None if body is None else body if isinstance(body, dict) else {}

    def _get_list(self, path: str, app: str | None, params: Mapping[str, Any] | None = None) -> list[Any] | None:
        """GET a path of the API that answers an array: the JSON answer, or None for a 404."""
        body = self._fetch(path, app, params)
        return None if body is None else body if isinstance(body, list) else []

    def _fetch(self, path: str, app: str | None, params: Mapping[str, Any] | None = None) -> Any:
        """GET a path of the API: the JSON answer, or None for a 404."""
        import urllib3

        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        token = self._token(app)
        if token:
            headers["Authorization"] = f"Bearer {token}"
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
        if resp.status == 401:
            raise ResultsUnavailableError(
                f"the results API at {self.url} refused the token for {app or 'every application'}: set "
                f"{TOKENS_FILE_ENV} (the application's token), or use a Kubernetes identity that may read LimeTasks",
                refused=True)
        if resp.status >= 300:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise ResultsUnavailableError(f"the results API at {self.url} answered {resp.status}: "
                                          f"{detail or resp.data[:200]!r}")
        return body

    def get(self, app: str, task_id: str) -> dict[str, Any] | None:
        """An archived task of `app` (the API's form), or None: not archived, or another app's."""
        return self._get(f"/v1/apps/{quote(app, safe='')}/results/{quote(task_id, safe='')}", app)

    def schedule_runs(self, app: str, name: str, limit: int) -> list[dict[str, Any]] | None:
        """The runs of an application's schedule, live and archived, newest first (the API's
        form), or None when the endpoint knows no such schedule."""
        body = self._get_list(f"/v1/apps/{quote(app, safe='')}/schedules/{quote(name, safe='')}/runs", app,
                              {"limit": limit})
        return None if body is None else [item for item in body if isinstance(item, dict)]

    def list(self, app: str | None, state: str | None, limit: int, cursor: str | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of archived tasks, newest first, and the cursor of the next (None: no more)."""
        params = {"state": state, "limit": limit, "cursor": cursor}
        if app:
            body = self._get(f"/v1/apps/{quote(app, safe='')}/results", app, params)
        else:
            body = self._get("/v1/results", None, params)
        body = body or {}
        return list(body.get("items") or []), body.get("next")
