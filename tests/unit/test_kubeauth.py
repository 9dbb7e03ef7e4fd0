"""Kubernetes tokens at the HTTP endpoint (lime_task.server.kubeauth), against a fake API server: what is
asked, how often, for which audience, and what a flood of garbage costs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lime_task.results import DEFAULT_AUDIENCE
from lime_task.server.kubeauth import KubernetesAuth, TooManyReviews, looks_like_jwt
from tests.unit.fake_api import FakeApiServer, jwt


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    from kubernetes import client

    fake = FakeApiServer()
    monkeypatch.setattr(client, "AuthenticationV1Api", lambda *_: fake)
    monkeypatch.setattr(client, "AuthorizationV1Api", lambda *_: fake)
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CRM = "system:serviceaccount:solutions:crm"


def test_the_review_names_the_endpoints_audience_and_refuses_api_server_tokens(api: FakeApiServer) -> None:
    """A token made for the API server (a pod's default token) is no key to the endpoint: the
    endpoint would otherwise collect credentials of the cluster."""
    auth = KubernetesAuth(object(), "solutions")
    assert auth.allowed(jwt(CRM), "get")
    assert api.token_reviews[0]["spec"]["audiences"] == [DEFAULT_AUDIENCE]
    assert not auth.allowed(jwt(CRM, audience="https://kubernetes.default.svc"), "get")
    assert not KubernetesAuth(object(), "solutions", audience="other-endpoint").allowed(jwt(CRM), "get")


def test_one_token_review_per_token_whatever_the_verbs(api: FakeApiServer) -> None:
    clock = Clock()
    auth = KubernetesAuth(object(), "solutions", clock=clock)
    token = jwt(CRM)
    for _ in range(3):
        assert auth.allowed(token, "list") and auth.allowed(token, "get") and not auth.allowed(token, "patch")
    assert len(api.token_reviews) == 1 and len(api.access_reviews) == 3
    clock.now += 31  # past the time answers are kept: asked again, once
    assert auth.allowed(token, "list") and auth.allowed(token, "get")
    assert len(api.token_reviews) == 2 and len(api.access_reviews) == 5


def test_a_refused_token_is_kept_as_refused(api: FakeApiServer) -> None:
    auth = KubernetesAuth(object(), "solutions")
    stranger = jwt("system:serviceaccount:solutions:nobody")
    assert not any(auth.allowed(stranger, verb) for verb in ("get", "list", "get", "patch"))
    assert len(api.token_reviews) == 1 and api.access_reviews == []


@pytest.mark.parametrize("token", ["s3cret", "a.b.c", "x" * 100, "e30.e30.e30", "not base64!.x.y", ""])
def test_a_token_not_shaped_like_a_kubernetes_token_is_never_reviewed(api: FakeApiServer, token: str) -> None:
    assert not looks_like_jwt(token)
    assert not KubernetesAuth(object(), "solutions").allowed(token, "get")
    assert api.token_reviews == []


def test_garbage_never_flushes_anyones_identity(api: FakeApiServer) -> None:
    clock = Clock()
    auth = KubernetesAuth(object(), "solutions", clock=clock, max_refused=50, max_identities=50,
                          reviews_per_second=1e9)
    token = jwt(CRM)
    assert auth.allowed(token, "get")
    for _ in range(500):
        assert not auth.allowed(jwt(), "get")
    reviews = len(api.token_reviews)
    assert auth.allowed(token, "get")
    assert len(api.token_reviews) == reviews  # still known: not asked again
    assert len(auth._refused) == 50  # the refusals are bounded too


def test_new_tokens_past_the_rate_are_told_to_come_back_later(api: FakeApiServer) -> None:
    clock = Clock()
    auth = KubernetesAuth(object(), "solutions", clock=clock, reviews_per_second=2)
    known = jwt(CRM)
    assert auth.allowed(known, "get")
    for _ in range(3):  # the burst (twice the rate), less the one above
        auth.allowed(jwt(), "get")
    with pytest.raises(TooManyReviews) as refused:
        auth.allowed(jwt(), "get")
    assert refused.value.retry_after == pytest.approx(0.5) and refused.value.retry_after_header == "1"
    reviews = len(api.token_reviews)
    assert auth.allowed(known, "list")  # a known token still works (a review of access only)
    assert len(api.token_reviews) == reviews
    clock.now += 0.5
    assert not auth.allowed(jwt(), "get")  # a review again, refused as a stranger


def test_every_call_has_a_timeout(api: FakeApiServer) -> None:
    auth = KubernetesAuth(object(), "solutions")
    auth.allowed(jwt(CRM), "get")
    assert len(api.timeouts) == 2 and all(t is not None for t in api.timeouts)


def test_an_api_server_that_cannot_answer_refuses_and_keeps_nothing(api: FakeApiServer) -> None:
    auth = KubernetesAuth(object(), "solutions")
    token = jwt(CRM)
    api.down = True
    assert not auth.allowed(token, "get")
    api.down = False
    assert auth.allowed(token, "get")  # asked again: nothing was kept
    assert len(api.token_reviews) == 2


def test_requests_with_the_same_new_token_at_once_share_one_review(api: FakeApiServer) -> None:
    entered, release = threading.Event(), threading.Event()
    review = api.create_token_review

    def slow_review(body: dict[str, Any], **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return review(body, **kwargs)

    api.create_token_review = slow_review  # type: ignore[method-assign]
    auth = KubernetesAuth(object(), "solutions")
    token = jwt(CRM)
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(auth.allowed(token, "get"))) for _ in range(5)]
    for t in threads:
        t.start()
    entered.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert answers == [True] * 5 and len(api.token_reviews) == 1
