"""Kubernetes identities at the HTTP endpoint: whoever may do it with kubectl may do it over HTTP.

A bearer token that is not an application's or a platform token (nor was one) is asked about at
the API server: a TokenReview for the endpoint's own audience (`limetask-web` unless configured)
says whose it is, and a SubjectAccessReview whether that identity may do the verb on LimeTasks in
the endpoint's namespace (`get` to read a task, `list` to list, `create` to start, `patch` to
cancel). A token made for the API server (a pod's default ServiceAccount token, a kubeconfig's)
is refused: a client presents a token bound to this endpoint (a projected ServiceAccount token
with the audience, or one from the TokenRequest API), which the API server itself does not
accept, so the endpoint never collects credentials for the cluster. The endpoint's own
ServiceAccount needs `system:auth-delegator` (the chart binds it).

What it costs the API server is bounded, whatever arrives:
- a token that is not shaped like a Kubernetes token (a JWT) is refused without a review;
- one TokenReview per token per `ttl` seconds, whatever the verbs; then one SubjectAccessReview
  per verb asked for, kept as long;
- identities are kept in an LRU of `max_identities`, refusals in another of `max_refused`: a
  flood of garbage evicts refusals only, never anyone's identity;
- TokenReviews are rate limited (`reviews_per_second`, with a burst of twice that): past it,
  `TooManyReviews` (the endpoint answers 429 with Retry-After), while known tokens still work;
- every call times out (`timeout`).
Answers are kept by a digest of the token, never the token itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..resource import GROUP, PLURAL
from ..results import DEFAULT_AUDIENCE

LOG = logging.getLogger("limetask.web")
CACHE_SECONDS = 30.0
MAX_IDENTITIES = 10000
MAX_REFUSED = 10000
REVIEWS_PER_SECOND = 10.0
# (connect, read) seconds of each review: a slow API server costs a request that long, no longer.
REVIEW_TIMEOUT = (3.0, 5.0)
# Kubernetes tokens are JWTs of a few KiB at most (an OIDC token with many groups included).
MAX_TOKEN_CHARS = 16 * 1024


class TooManyReviews(Exception):
    """More new tokens than the API server is asked about per second; try again later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many new tokens to check; try again in {retry_after:.1f} s")
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (the header takes no fractions)."""
        return str(max(1, math.ceil(self.retry_after)))


def looks_like_jwt(token: str) -> bool:
    """Whether `token` has the shape of a JWT (three base64url parts, a JSON header naming its
    algorithm). Anything else is never a token the API server accepts for an audience."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return False
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


class RateLimit:
    """A token bucket: `per_second` on average, `burst` at once."""

    def __init__(self, per_second: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.burst, self.clock = per_second, burst, clock
        self._tokens, self._at = burst, clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when one is taken; else the seconds until one is there (nothing is taken)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.per_second


@dataclass
class _Identity:
    """Whose a token is (the TokenReview's user) and, per verb, whether it may."""

    expires: float
    user: dict[str, Any]
    verbs: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Flight:
    """The requests asking about one token at once: one of them asks the API server."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class KubernetesAuth:
    def __init__(self, api_client: Any, namespace: str, *, audience: str = DEFAULT_AUDIENCE,
                 ttl: float = CACHE_SECONDS, max_identities: int = MAX_IDENTITIES, max_refused: int = MAX_REFUSED,
                 reviews_per_second: float = REVIEWS_PER_SECOND, timeout: tuple[float, float] = REVIEW_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, authentication: Any = None,
                 authorization: Any = None) -> None:
        """`authentication`, `authorization`: the Kubernetes client's AuthenticationV1Api and
        AuthorizationV1Api (default: made from `api_client`)."""
        if authentication is None or authorization is None:
            from kubernetes import client

            authentication = authentication or client.AuthenticationV1Api(api_client)
            authorization = authorization or client.AuthorizationV1Api(api_client)
        self.authentication, self.authorization = authentication, authorization
        self.namespace, self.audience, self.ttl, self.timeout = namespace, audience, ttl, timeout
        self.max_identities, self.max_refused = max_identities, max_refused
        self.clock = clock
        self.reviews = RateLimit(reviews_per_second, 2 * reviews_per_second, clock)
        self._identities: OrderedDict[str, _Identity] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()  # digest -> until when
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    def allowed(self, token: str, verb: str) -> bool:
        """Whether the token's identity may `verb` LimeTasks in the namespace (False when the
        API server cannot say: an unknown identity is refused, never let in).

        Raises `TooManyReviews` when the token is new and the API server has been asked about
        as many tokens as it may be for now."""
        if not token or not looks_like_jwt(token):
            return False
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            flight = self._flights.setdefault(key, _Flight())
            flight.users += 1
        try:
            with flight.lock:  # one request at a time asks about one token
                return self._allowed(key, token, verb)
        finally:
            with self._lock:
                flight.users -= 1
                if not flight.users:
                    del self._flights[key]

    def _allowed(self, key: str, token: str, verb: str) -> bool:
        refused, identity = self._known(key)
        if refused:
            return False
        if identity is None:
            wait = self.reviews.take()
            if wait:
                raise TooManyReviews(wait)
            identity = self._review(key, token)
            if identity is None:
                return False
        answer = identity.verbs.get(verb)
        if answer is None:
            answer = self._may(identity.user, verb)
            if answer is None:
                return False  # not kept: the next request asks again
            identity.verbs[verb] = answer
        return answer

    def _known(self, key: str) -> tuple[bool, _Identity | None]:
        """Whether the token was refused lately, and its identity if it is known (neither: it
        must be asked about)."""
        now = self.clock()
        with self._lock:
            identity = self._identities.get(key)
            if identity is not None and identity.expires > now:
                self._identities.move_to_end(key)
                return False, identity
            until = self._refused.get(key)
            return until is not None and until > now, None

    def _keep(self, cache: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)

    def _review(self, key: str, token: str) -> _Identity | None:
        """Ask the API server whose the token is, for this endpoint's audience; keep the answer."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            review = self.authentication.create_token_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                 "spec": {"token": token, "audiences": [self.audience]}},
                _request_timeout=self.timeout)
        except (ApiException, HTTPError) as exc:
            LOG.warning("cannot check a Kubernetes token at the API server (%s); refusing it",
                        getattr(exc, "status", None) or type(exc).__name__)
            return None
        status = review.status
        # The API server names the audiences the token is good for: this endpoint's must be one.
        if not status or not status.authenticated or not status.user or self.audience not in (status.audiences or ()):
            self._keep(self._refused, key, self.clock() + self.ttl, self.max_refused)
            return None
        user = status.user
        identity = _Identity(self.clock() + self.ttl, {
            "user": user.username, "groups": list(user.groups or []), "uid": user.uid,
            "extra": {k: list(v) for k, v in (user.extra or {}).items()}})
        self._keep(self._identities, key, identity, self.max_identities)
        return identity

    def _may(self, user: dict[str, Any], verb: str) -> bool | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            access = self.authorization.create_subject_access_review(
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                 "spec": {**user, "resourceAttributes": {"namespace": self.namespace, "verb": verb, "group": GROUP,
                                                         "resource": PLURAL}}},
                _request_timeout=self.timeout)
        except (ApiException, HTTPError) as exc:
            LOG.warning("cannot ask the API server what a Kubernetes identity may do (%s); refusing it",
                        getattr(exc, "status", None) or type(exc).__name__)
            return None
        return bool(access.status and access.status.allowed)
