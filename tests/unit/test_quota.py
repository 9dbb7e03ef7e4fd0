"""A namespace's ResourceQuota on LimeTasks: its refusal is a clear QuotaExceededError for
send_task, and a 429 with the same words from the HTTP endpoint. Other 403s stay what they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lime_task import ClusterError, QuotaExceededError
from lime_task.quota import quota_refusal
from lime_task.web import create_app
from tests.unit.fake_api import FakeCustomObjects, api_error, fake_client

TASK = "acme_solution.tasks.lime.add"
# The API server's words (k8s.io/apiserver, pkg/admission/plugin/resourcequota).
REFUSAL = ('limetasks.limetask.io "0b8f" is forbidden: exceeded quota: lt-limetask-limetasks, requested: '
           'count/limetasks.limetask.io=1, used: count/limetasks.limetask.io=2, limited: count/limetasks.limetask.io=2')


def test_send_task_says_which_quota_is_full_and_what_to_do(tmp_path: Path) -> None:
    api = FakeCustomObjects()
    api.create_error = api_error(403, REFUSAL)
    client = fake_client(tmp_path, api)
    with pytest.raises(QuotaExceededError) as refused:
        client.send(TASK, "my-app", [1, 2])
    error = refused.value
    assert (error.quota, error.namespace, error.used, error.limit) == ("lt-limetask-limetasks", "solutions", 2, 2)
    text = str(error)
    assert "namespace 'solutions' is at its quota (ResourceQuota 'lt-limetask-limetasks': 2 of 2 LimeTasks)" in text
    assert "Try again later, or ask the cluster's administrator to raise the quota" in text
    assert isinstance(error, ClusterError)  # code that caught the cluster's refusals still does
    assert api.tasks == []


def test_other_refusals_are_not_taken_for_a_quota(tmp_path: Path) -> None:
    api = FakeCustomObjects()
    api.create_error = api_error(403, 'limetasks.limetask.io is forbidden: User "bob" cannot create resource '
                                      '"limetasks" in API group "limetask.io" in the namespace "solutions"')
    with pytest.raises(ClusterError, match="creating the task failed: 403 .*cannot create") as refused:
        fake_client(tmp_path, api).send(TASK, "my-app", [1, 2])
    assert not isinstance(refused.value, QuotaExceededError)


def test_a_quota_on_something_else_says_what_it_counts() -> None:
    refusal = quota_refusal(403, 'pods "x" is forbidden: exceeded quota: compute, requested: limits.memory=1Gi, '
                                 'used: limits.memory=8Gi, limited: limits.memory=8Gi', "team-a")
    assert refusal is not None and refusal.used is None
    assert "(ResourceQuota 'compute': requested: limits.memory=1Gi" in str(refusal)
    assert quota_refusal(409, REFUSAL, "team-a") is None
    unnumbered = quota_refusal(403, "forbidden: exceeded quota: q1", "team-a")
    assert unnumbered is not None and "all the LimeTasks it allows" in str(unnumbered)


def test_the_endpoint_answers_429_with_the_same_words(tmp_path: Path) -> None:
    api = FakeCustomObjects()
    api.create_error = api_error(403, REFUSAL)
    http = TestClient(create_app(client=fake_client(tmp_path, api), tokens={"my-app": "token"},
                                 imports=["acme_solution.tasks.lime"], kubernetes_auth=False))
    answer = http.post("/v1/apps/my-app/tasks", json={"task": TASK, "args": [1, 2]},
                       headers={"Authorization": "Bearer token"})
    assert answer.status_code == 429, answer.text
    assert answer.headers["Retry-After"] == "60"
    body = answer.json()
    assert body["code"] == "QuotaExceeded"
    assert "ResourceQuota 'lt-limetask-limetasks': 2 of 2 LimeTasks" in body["detail"]
