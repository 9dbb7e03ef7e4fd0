"""Kubernetes identities at the HTTP endpoint: whoever may do it with kubectl may do it over HTTP.

A bearer token that is no application's token is asked about at the API server: a TokenReview
says whose it is, and a SubjectAccessReview whether that identity may do the verb on LimeTasks
in the endpoint's namespace (`get` to read a task, `list` to list, `create` to start, `patch`
to cancel). So a solution's pod, whose ServiceAccount reads its LimeTasks already, reads
archived ones through the endpoint with the token it has, and no other secret. Answers are
kept for a short while (by a digest of the token, never the token itself). The endpoint's own
ServiceAccount needs `system:auth-delegator` (the chart binds it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from .resource import GROUP, PLURAL

LOG = logging.getLogger("limetask.web")
CACHE_SECONDS = 30.0
CACHE_MAX = 10000


class KubernetesAuth:
    def __init__(self, api_client: Any, namespace: str, ttl: float = CACHE_SECONDS) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def allowed(self, token: str, verb: str) -> bool:
        """Whether the token's identity may `verb` LimeTasks in the namespace (False when the
        API server cannot say: an unknown identity is refused, never let in)."""
        if not token:
            return False
        key = (hashlib.sha256(token.encode()).hexdigest(), verb)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        answer = self._ask(token, verb)
        if answer is None:
            return False  # not kept: the next request asks again
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, answer)
        return answer

    def _ask(self, token: str, verb: str) -> bool | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            review = client.AuthenticationV1Api(self.api_client).create_token_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})  # type: ignore[arg-type]
            status = review.status
            if not status or not status.authenticated or not status.user:
                return False
            user = status.user
            access = client.AuthorizationV1Api(self.api_client).create_subject_access_review({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user.username, "groups": user.groups or [], "uid": user.uid,
                         "extra": {k: list(v) for k, v in (user.extra or {}).items()},
                         "resourceAttributes": {"namespace": self.namespace, "verb": verb, "group": GROUP,
                                                "resource": PLURAL}}})  # type: ignore[arg-type]
            return bool(access.status and access.status.allowed)
        except (ApiException, HTTPError) as exc:
            LOG.warning("cannot check a Kubernetes token at the API server (%s); refusing it",
                        getattr(exc, "status", None) or type(exc).__name__)
            return None
