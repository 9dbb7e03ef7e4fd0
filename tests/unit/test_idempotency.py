"""Idempotency keys (lime_task.idempotency): POST /v1/apps/{app}/tasks with an Idempotency-Key,
and `TaskClient.send(idempotency_key=)`, against the fake API server (whose create is 409 for a
name that exists, as the real one's)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lime_task import idempotency
from lime_task.idempotency import IdempotencyKeyReusedError
from lime_task.server.app import create_app
from lime_task.server.limits import Limits
from tests.unit.fake_api import FakeCustomObjects, fake_client

T = "acme_solution.tasks.lime"
TOKENS = {"app-one": "token-one", "app-two": "token-two"}
UNLIMITED = Limits(writes_per_second=0, reads_per_second=0)


def bearer(app: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKENS[app]}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
def api() -> FakeCustomObjects:
    return FakeCustomObjects()


@pytest.fixture
def http(tmp_path: Path, api: FakeCustomObjects) -> TestClient:
    return TestClient(create_app(client=fake_client(tmp_path, api), tokens=TOKENS, imports=[T], limits=UNLIMITED))


BODY = {"task": f"{T}.add", "args": [1, 2]}


def test_a_retry_with_the_same_key_returns_the_same_task(http: TestClient, api: FakeCustomObjects) -> None:
    first = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "order-1001"), json=BODY)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "order-1001"),
                      json={"args": [1, 2], "task": f"{T}.add"})  # the same request, keys in another order
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert len(api.created) == 1
    annotations = api.created[0]["metadata"]["annotations"]
    assert annotations[idempotency.KEY_ANNOTATION] == "order-1001"
    assert annotations[idempotency.FINGERPRINT_ANNOTATION].startswith("sha256:")
    metrics = http.get("/metrics").text
    assert "limetask_web_idempotent_replays_total 1.0" in metrics


def test_the_same_key_with_another_body_is_422_and_starts_nothing(http: TestClient, api: FakeCustomObjects) -> None:
    assert http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "k-1"), json=BODY).status_code == 202
    other = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "k-1"),
                      json={"task": f"{T}.add", "args": [1, 3]})
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "IdempotencyKeyReused"
    assert "already used for a different request" in other.json()["detail"]
    assert len(api.created) == 1


def test_without_a_key_every_post_starts_a_task(http: TestClient, api: FakeCustomObjects) -> None:
    ids = {http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json=BODY).json()["id"] for _ in range(3)}
    assert len(ids) == 3 and len(api.created) == 3


def test_a_key_is_the_applications_own(http: TestClient, api: FakeCustomObjects) -> None:
    one = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "shared"), json=BODY)
    two = http.post("/v1/apps/app-two/tasks", headers=bearer("app-two", "shared"), json=BODY)
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"] and len(api.created) == 2
    assert idempotency.task_id_for("a", "app", "k") != idempotency.task_id_for("b", "app", "k")


@pytest.mark.parametrize("key", ["", "x" * 256, "k" * 6000, "has space", "naïve", "tab\there", "\u00a0", "ключ"])
def test_bad_keys_are_422_and_start_nothing(http: TestClient, api: FakeCustomObjects, key: str) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['app-one']}"}
    # Non-ASCII goes as raw bytes, as a hostile client may send it.
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"idempotency-key", key.encode())]
    response = http.post("/v1/apps/app-one/tasks", headers=raw, json=BODY)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "InvalidIdempotencyKey"
    assert "1 to 255 visible ASCII characters" in response.json()["detail"]
    assert len(response.text) < 1000  # a huge key is not echoed back whole
    assert api.created == []


def test_the_longest_key_is_taken(http: TestClient) -> None:
    key = "K" * idempotency.KEY_MAX
    first = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", key), json=BODY)
    again = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", key), json=BODY)
    assert (first.status_code, again.status_code) == (202, 200)
    assert len(first.json()["id"]) <= 63


def test_a_retry_at_another_replica_or_after_a_restart_finds_the_task(tmp_path: Path, api: FakeCustomObjects) -> None:
    """Nothing is kept in the endpoint: two replicas (or one before and after a restart) share
    only the cluster."""
    first, second = (TestClient(create_app(client=fake_client(tmp_path, api), tokens=TOKENS, imports=[T],
                                           limits=UNLIMITED)) for _ in range(2))
    one = first.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "k"), json=BODY)
    two = second.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "k"), json=BODY)
    assert (one.status_code, two.status_code) == (202, 200) and one.json()["id"] == two.json()["id"]
    assert len(api.created) == 1


def test_concurrent_retries_with_one_key_start_one_task(tmp_path: Path, api: FakeCustomObjects) -> None:
    app = create_app(client=fake_client(tmp_path, api), tokens=TOKENS, imports=[T], limits=UNLIMITED)
    answers: list[Any] = []
    start = threading.Barrier(8)

    def post() -> None:
        with TestClient(app) as http:
            start.wait()
            answers.append(http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "race"), json=BODY))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(api.created) == 1
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert len({a.json()["id"] for a in answers}) == 1


def test_concurrent_requests_with_one_key_and_different_bodies(tmp_path: Path, api: FakeCustomObjects) -> None:
    app = create_app(client=fake_client(tmp_path, api), tokens=TOKENS, imports=[T], limits=UNLIMITED)
    answers: list[Any] = []
    start = threading.Barrier(6)

    def post(n: int) -> None:
        with TestClient(app) as http:
            start.wait()
            answers.append(http.post("/v1/apps/app-one/tasks", headers=bearer("app-one", "race"),
                                     json={"task": f"{T}.add", "args": [n, n]}))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(api.created) == 1
    assert sorted(a.status_code for a in answers) == [202] + [422] * 5


def test_the_client_takes_a_key_too(tmp_path: Path, api: FakeCustomObjects) -> None:
    client = fake_client(tmp_path, api)
    first = client.send(f"{T}.add", "app-one", [1, 2], idempotency_key="k")
    again = client.send(f"{T}.add", "app-one", [1, 2], idempotency_key="k")
    assert (first.replayed, again.replayed) == (False, True) and first.id == again.id
    with pytest.raises(IdempotencyKeyReusedError, match="already used for a different request"):
        client.send(f"{T}.add", "app-one", [9, 9], idempotency_key="k")
    with pytest.raises(ValueError, match="invalid idempotency key"):
        client.send(f"{T}.add", "app-one", [1, 2], idempotency_key="no spaces please")
    assert len(api.created) == 1


def test_a_task_named_like_a_keyed_one_without_the_key_is_no_replay(tmp_path: Path, api: FakeCustomObjects) -> None:
    client = fake_client(tmp_path, api)
    name = idempotency.task_id_for("solutions", "app-one", "k")
    client.send(f"{T}.add", "app-one", [1, 2], task_id=name)
    with pytest.raises(IdempotencyKeyReusedError):
        client.send(f"{T}.add", "app-one", [1, 2], idempotency_key="k")
