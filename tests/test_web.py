"""The HTTP endpoint (lime_task.server): tokens, status codes, app scoping, and a fuzz test, no 5xx.

The end-to-end tests drive the FastAPI app in process (TestClient) with a real `TaskClient` on
the test's namespace, so tasks really run; the token and OpenAPI tests need no cluster.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import wait_until
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from lime_task import LimeTaskError, NotFoundError, TaskClient, registered_tasks
from lime_task.server.app import create_app
from lime_task.server.kubeauth import KubernetesAuth
from lime_task.server.middleware import MAX_BODY_BYTES
from lime_task.tokens import TokenStore, parse_tokens, read_tokens
from tests.unit.fake_api import FakeApiServer, FakeCustomObjects, fake_client, jwt, live_task

T = "acme_solution.tasks.lime"
TOKENS = {"app-one": "token-one", "app-two": "token-two"}
IMPORTS = [T]


def bearer(app: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[app]}"}


@pytest.fixture
def http(tasks: TaskClient) -> TestClient:
    return TestClient(create_app(client=tasks, tokens=TOKENS, imports=IMPORTS))


def settled(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "event_confirmed"}


def wait_for_state(http: TestClient, app: str, task_id: str, states: set[str], timeout: float = 60) -> Any:
    def done() -> Any:
        response = http.get(f"/v1/apps/{app}/tasks/{task_id}", headers=bearer(app))
        assert response.status_code == 200, response.text
        return response.json()["status"] in states and response.json()
    return wait_until(done, timeout=timeout, interval=0.2, message=f"task {task_id} to reach {states}")


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.e2e
def test_post_starts_a_task_that_succeeds(http: TestClient, tasks: TaskClient) -> None:
    response = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                         json={"task": f"{T}.get_lime_company", "args": [1001], "kwargs": {"props": ["name"]}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING" and body["app"] == "app-one" and body["task"] == f"{T}.get_lime_company"
    assert response.headers["location"] == f"/v1/apps/app-one/tasks/{body['id']}"
    final = wait_for_state(http, "app-one", body["id"], {"SUCCESS", "FAILURE"})
    assert final["status"] == "SUCCESS", final
    assert final["result"] == "company 1001 of app-one: updated 1 properties on 50 deals"
    assert final["error"] is None and final["attempts"] == 1 and final["completed_at"]
    # The body is exactly what the library says about the task (but for the event's
    # confirmation, which the operator may record in between).
    assert settled(final) == settled(tasks.get_status(body["id"], "app-one").to_dict())
    again = http.get(response.headers["location"], headers=bearer("app-one"))
    assert again.status_code == 200 and settled(again.json()) == settled(final)


@pytest.mark.e2e
def test_failure_is_reported(http: TestClient) -> None:
    response = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                         json={"task": f"{T}.fail", "args": ["no such deal"]})
    assert response.status_code == 202, response.text
    final = wait_for_state(http, "app-one", response.json()["id"], {"SUCCESS", "FAILURE"})
    assert final["status"] == "FAILURE"
    assert final["error"] == {"type": "ValueError", "message": "no such deal", "reason": "TaskRaised"}


@pytest.mark.e2e
def test_applications_never_see_each_other(http: TestClient, tasks: TaskClient) -> None:
    created = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json={"task": f"{T}.add", "args": [1, 2]})
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    missing_id = "00000000-0000-0000-0000-000000000000"

    # Another application, with its own valid token: exactly like a task that does not exist.
    other = http.get(f"/v1/apps/app-two/tasks/{task_id}", headers=bearer("app-two"))
    missing = http.get(f"/v1/apps/app-two/tasks/{missing_id}", headers=bearer("app-two"))
    assert other.status_code == missing.status_code == 404
    assert other.json() == {"code": "NotFound", "detail": f"task {task_id!r} not found"}
    assert other.text.replace(task_id, "ID") == missing.text.replace(missing_id, "ID")
    cancel = http.post(f"/v1/apps/app-two/tasks/{task_id}/cancel", headers=bearer("app-two"))
    assert cancel.status_code == 404 and "app-one" not in cancel.text

    # A token opens its own application only; no token, a wrong one or a malformed header: 401.
    unauthorized = [
        ("get", f"/v1/apps/app-one/tasks/{task_id}", bearer("app-two")),
        ("get", f"/v1/apps/app-two/tasks/{task_id}", bearer("app-one")),
        ("get", f"/v1/apps/app-one/tasks/{task_id}", {}),
        ("get", f"/v1/apps/app-one/tasks/{task_id}", {"Authorization": "Bearer wrong"}),
        ("get", f"/v1/apps/app-one/tasks/{task_id}", {"Authorization": "token-one"}),
        ("get", f"/v1/apps/app-one/tasks/{task_id}", {"Authorization": "Basic dG9rZW4tb25lOg=="}),
        ("get", f"/v1/apps/no-such-app/tasks/{task_id}", bearer("app-one")),
        ("post", f"/v1/apps/app-one/tasks/{task_id}/cancel", bearer("app-two")),
        ("post", "/v1/apps/app-one/tasks", bearer("app-two")),
    ]
    bodies = set()
    for method, url, headers in unauthorized:
        response = getattr(http, method)(url, headers=headers, **({"json": {"task": f"{T}.add"}}
                                                                   if method == "post" else {}))
        assert response.status_code == 401, (method, url, headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        bodies.add(response.text)
    assert bodies == {'{"code":"Unauthorized","detail":"a valid bearer token of this application is required"}'}

    assert http.get(f"/v1/apps/app-one/tasks/{task_id}", headers=bearer("app-one")).status_code == 200
    assert [s.app for s in tasks.list()] == ["app-one"]


@pytest.mark.e2e
def test_cancel_then_cancel_again_is_a_conflict(http: TestClient) -> None:
    created = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json={"task": f"{T}.sleep", "args": [30]})
    task_id = created.json()["id"]
    cancel = http.post(f"/v1/apps/app-one/tasks/{task_id}/cancel", headers=bearer("app-one"))
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["id"] == task_id
    final = wait_for_state(http, "app-one", task_id, {"SUCCESS", "FAILURE"})
    assert final["status"] == "FAILURE" and final["error"]["reason"] == "Cancelled"
    again = http.post(f"/v1/apps/app-one/tasks/{task_id}/cancel", headers=bearer("app-one"))
    assert again.status_code == 409
    assert again.json()["code"] == "AlreadyFinished" and "already finished" in again.json()["detail"]


@pytest.mark.e2e
@pytest.mark.parametrize("body, status, code, fragment", [
    (b'{"task": "acme_solution.tasks.lime.add", "args": [1, 2', 422, "InvalidRequest", "JSON decode error"),
    (b"not json at all", 422, "InvalidRequest", "JSON decode error"),
    (b"", 422, "InvalidRequest", "body"),
    (b"[1, 2]", 422, "InvalidRequest", "body"),
    (b'{"args": [1, 2]}', 422, "InvalidRequest", "body.task: Field required"),
    (b'{"task": 42}', 422, "InvalidRequest", "body.task"),
    (b'{"task": "acme_solution.tasks.lime.add", "args": "1, 2"}', 422, "InvalidRequest", "body.args"),
    (b'{"task": "acme_solution.tasks.lime.add", "kwargs": [1]}', 422, "InvalidRequest", "body.kwargs"),
    (b'{"task": "acme_solution.tasks.lime.add", "extra": 1}', 422, "InvalidRequest", "body.extra"),
    (b'{"task": "core.task.#"}', 422, "InvalidRequest", "body.task"),
    (b'{"task": "acme_solution.tasks.lime.add", "args": [NaN]}', 422, "InvalidArguments", "JSON cannot represent"),
    (b'{"task": "acme_solution.tasks.lime.undecorated"}', 422, "UnknownTask", "undecorated"),
    (b'{"task": "acme_solution.tasks.lime.no_such_task"}', 422, "UnknownTask", "no_such_task"),
    (b'{"task": "os.system", "args": ["touch /tmp/pwned"]}', 422, "UnknownTask", "os.system"),
    (b'{"task": "antigravity.fly"}', 422, "UnknownTask", "antigravity.fly"),
    (json.dumps({"task": f"{T}.add", "args": ["x" * 40000]}).encode(), 413, "TooLarge", "over the limit of 32768"),
    (json.dumps({"task": f"{T}.add", "args": ["x" * MAX_BODY_BYTES]}).encode(), 413, "TooLarge",
     f"over {MAX_BODY_BYTES} bytes"),
    # Hostile input: numbers the Kubernetes API would change, and nesting that breaks parsers.
    (b'{"task": "acme_solution.tasks.lime.add", "args": [18446744073709551615, 0]}', 422, "InvalidArguments",
     "64-bit"),
    (b'{"task": "acme_solution.tasks.lime.add", "args": [9223372036854775808, 0]}', 422, "InvalidArguments",
     "64-bit"),
    (b'{"task": "acme_solution.tasks.lime.add", "args": [' + b"[" * 100 + b"]" * 100 + b", 0]}", 422,
     "InvalidArguments", "deeper than 64"),
    (b'{"task": "acme_solution.tasks.lime.add", "args": [' + b"[" * 5000 + b"]" * 5000 + b", 0]}", 400,
     "InvalidRequest", "parsing the body"),
], ids=["truncated", "not-json", "empty", "array", "no-task", "task-not-string", "args-not-array",
        "kwargs-not-object", "extra-field", "wildcard-name", "nan", "undecorated", "unknown", "os.system",
        "never-imports", "args-too-large", "body-too-large", "uint64", "2**63", "deep", "very-deep"])
def test_bad_requests_are_4xx_and_create_nothing(http: TestClient, tasks: TaskClient, body: bytes, status: int,
                                                 code: str, fragment: str) -> None:
    response = http.post("/v1/apps/app-one/tasks", content=body,
                         headers={**bearer("app-one"), "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert fragment in response.json()["detail"], response.json()
    assert tasks.list() == []
    assert "antigravity" not in sys.modules  # a task name never imports anything


@pytest.mark.e2e
def test_bad_application_names_are_422(http: TestClient) -> None:
    for app in ["has%20space", "-leading", "x" * 64, "a_"]:
        response = http.get(f"/v1/apps/{app}/tasks/some-id", headers=bearer("app-one"))
        assert response.status_code == 422, (app, response.text)
        assert response.json()["code"] == "InvalidRequest" and "path.app" in response.json()["detail"]


# -- fuzzing -----------------------------------------------------------------------------------

FUZZ_APP, FUZZ_TOKEN, FUZZ_PLATFORM_TOKEN = "fuzz-app", "fuzz-token", "fuzz-platform-token"
# Valid task names turn fuzzed arguments into real LimeTasks; a few are enough to cover that path.
REAL_SENDS = 8


@pytest.mark.e2e
def test_fuzz_never_a_server_error(tasks: TaskClient, archive_db: str) -> None:
    """Requests generated from the OpenAPI document, valid and invalid, with and without the
    application's token (or with a Kubernetes token that the API server refuses), live and
    archived: never a 5xx, and every answer matches the document.

    Schemathesis's pytest integration (`from_fixture`) does not run on this pytest, so the test
    drives its Hypothesis strategies itself.
    """
    app = create_app(client=tasks, tokens={FUZZ_APP: FUZZ_TOKEN}, imports=IMPORTS, archive=archive_db,
                     platform_tokens={"fuzz-ops": FUZZ_PLATFORM_TOKEN})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance,
              schemathesis.checks.content_type_conformance]
    sent = {"real": 0, "calls": 0, "authorized": 0}
    authorized = {"Authorization": f"Bearer {FUZZ_TOKEN}"}
    platform = {"Authorization": f"Bearer {FUZZ_PLATFORM_TOKEN}"}

    def fuzz(strategy: Any, max_examples: int) -> None:
        @given(case=strategy)
        @settings(max_examples=max_examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            if case.method == "POST" and isinstance(case.body, dict) and isinstance(case.body.get("task"), str):
                # Fuzzed arguments for a real task, a few times; never more real tasks than that.
                real = sent["real"] < REAL_SENDS and case.headers == authorized
                if real or case.body["task"] in registered_tasks():
                    case.body["task"] = f"{T}.noop" if real else "my_package.tasks.lime.not_here"
                    sent["real"] += real
            response = case.call()
            sent["calls"] += 1
            sent["authorized"] += response.status_code != 401
            assert response.status_code < 500, (case.method, case.formatted_path, case.headers, case.body,
                                                response.status_code, response.text)
            case.validate_response(response, checks=checks)
        run()

    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    operations = [result.ok() for result in schema.get_all_operations()]
    # start, list, read and cancel tasks; the results API (read, list, list every application's);
    # schedules and their runs; liveness and readiness; the dashboard's who-am-I, list, task, cancel,
    # charts, stream
    assert len(operations) == 17
    for operation in operations:
        if operation.path == "/v1/dashboard/stream":
            continue  # it never ends; the browser tests read it (tests/test_e2e_dashboard.py)
        scoped = "{app}" in operation.path
        # The dashboard's every-application operations get the platform token.
        headers = platform if operation.path.startswith("/v1/dashboard") and not scoped else authorized
        fuzz(operation.as_strategy(positive, path_parameters={"app": FUZZ_APP} if scoped else None,
                                   headers=headers), 40)
        if operation.method == "post" and operation.path.endswith("/tasks"):  # the only one with a body
            fuzz(operation.as_strategy(negative, path_parameters={"app": FUZZ_APP}, headers=authorized), 40)
        fuzz(operation.as_strategy(positive), 10)
        if scoped:
            fuzz(operation.as_strategy(negative), 10)
    assert sent["calls"] >= 200 and sent["authorized"] >= 100 and sent["real"] == REAL_SENDS, sent


# -- no cluster needed -------------------------------------------------------------------------

def test_cluster_unreachable_is_503(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u", "namespace": "ns"}}],
    }))
    http = TestClient(create_app(client=TaskClient(kubeconfig=kubeconfig), tokens=TOKENS, imports=IMPORTS))
    started = time.monotonic()
    response = http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json={"task": f"{T}.add", "args": [1, 2]})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "ClusterUnavailable" and response.headers["retry-after"]
    assert "127.0.0.1" not in response.text  # internals stay in the log
    assert http.get("/v1/apps/app-one/tasks/some-id", headers=bearer("app-one")).status_code == 503
    assert time.monotonic() - started < 30
    assert http.get("/healthz").json() == {"status": "ok"}


def test_unexpected_errors_are_not_5xx() -> None:
    class Broken:
        def get_status(self, task_id: str, app: str) -> Any:
            raise RuntimeError("a bug")

    http = TestClient(create_app(client=Broken(), tokens=TOKENS))
    response = http.get("/v1/apps/app-one/tasks/x", headers=bearer("app-one"))
    assert response.status_code == 400
    assert response.json()["code"] == "RequestFailed" and "error id" in response.json()["detail"]
    assert "a bug" not in response.text


def test_openapi_document() -> None:
    http = TestClient(create_app(client=object(), tokens={}))
    doc = http.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {"/v1/apps/{app}/tasks", "/v1/apps/{app}/tasks/{task_id}",
                          "/v1/apps/{app}/tasks/{task_id}/cancel", "/v1/apps/{app}/results",
                          "/v1/apps/{app}/results/{task_id}", "/v1/results", "/v1/apps/{app}/schedules",
                          "/v1/apps/{app}/schedules/{name}/runs", "/healthz", "/readyz", "/v1/dashboard/me",
                          "/v1/dashboard/tasks", "/v1/dashboard/tasks/{app}/{task_id}",
                          "/v1/dashboard/tasks/{app}/{task_id}/cancel", "/v1/dashboard/charts",
                          "/v1/dashboard/stream"}
    assert paths["/v1/apps/{app}/results"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/TaskPage")
    assert {"limit", "cursor", "state"} <= {p["name"] for p in paths["/v1/apps/{app}/tasks"]["get"]["parameters"]}
    start = paths["/v1/apps/{app}/tasks"]["post"]
    assert start["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/StartTask"
    assert start["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskStatusBody")
    assert {"401", "413", "422", "503"} <= set(start["responses"])
    assert {"404", "409"} <= set(paths["/v1/apps/{app}/tasks/{task_id}/cancel"]["post"]["responses"])
    assert start["security"] == [{"HTTPBearer": []}]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = doc["components"]["schemas"]
    assert schemas["StartTask"]["required"] == ["task"] and schemas["StartTask"]["additionalProperties"] is False
    assert schemas["TaskStatusBody"]["properties"]["status"]["enum"] == ["PENDING", "STARTED", "SUCCESS", "FAILURE"]
    assert set(schemas["ErrorBody"]["required"]) == {"code", "detail"}
    assert "archived" in schemas["TaskStatusBody"]["properties"]
    # Queues: what to start in, the list's filters, and a task's place.
    assert {"queue", "queued"} <= {p["name"] for p in paths["/v1/apps/{app}/tasks"]["get"]["parameters"]}
    qos, priority = schemas["StartTask"]["properties"]["qos"], schemas["StartTask"]["properties"]["priority"]
    assert qos["anyOf"][0]["pattern"] == "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
    assert (priority["anyOf"][0]["minimum"], priority["anyOf"][0]["maximum"]) == (-1000, 1000)
    assert schemas["TaskStatusBody"]["properties"]["queue"]["$ref"].endswith("/QueueBody")
    assert "queue" in schemas["TaskStatusBody"]["required"]
    assert set(schemas["QueueBody"]["properties"]) == {"name", "priority", "queued", "reason", "message", "position",
                                                       "waiting", "since", "updated_at"}


def test_no_tokens_refuses_everything() -> None:
    http = TestClient(create_app(client=object(), tokens={}))
    assert http.get("/v1/apps/app-one/tasks/x", headers={"Authorization": "Bearer "}).status_code == 401
    assert http.get("/v1/apps/app-one/tasks/x", headers={"Authorization": "Bearer anything"}).status_code == 401


def test_tokens_from_json_lines_and_secret_directory(tmp_path: Path) -> None:
    assert parse_tokens('{"app-one": "a1", "app-two": "b2"}') == {"app-one": "a1", "app-two": "b2"}
    assert parse_tokens("# tokens\napp-one = a1\n\napp-two=b2=\n") == {"app-one": "a1", "app-two": "b2="}
    secret = tmp_path / "secret"
    (secret / "..2024_01_01").mkdir(parents=True)
    (secret / "app-one").write_text("a1\n")
    (secret / "app-two").write_text("b2")
    os.symlink("..2024_01_01", secret / "..data")
    assert read_tokens(secret) == {"app-one": "a1", "app-two": "b2"}
    for bad, fragment in [("app-one", "expected app=token"), ('{"bad app": "x"}', "invalid application name"),
                          ('{"app-one": ""}', "non-empty"), ('{"app-one": 1}', "non-empty"),
                          ("app-one=a\napp-one=b", "twice"), ('["app-one"]', "JSON object"),
                          ('{"app-one": ', "not valid JSON"),
                          ('{"app-one": "a b"}', "without spaces")]:
        with pytest.raises(ValueError, match=fragment):
            parse_tokens(bad)


def test_tokens_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("app-one=from-file\n")
    assert TokenStore.from_env({"LIMETASK_WEB_TOKENS_FILE": str(path),
                                "LIMETASK_WEB_TOKENS": '{"app-one": "from-env"}'}).check("app-one", "from-file")
    assert TokenStore.from_env({"LIMETASK_WEB_TOKENS": '{"app-one": "from-env"}'}).check("app-one", "from-env")
    assert TokenStore.from_env({}).apps() == []
    with pytest.raises(ValueError, match="cannot read the tokens"):
        TokenStore.from_env({"LIMETASK_WEB_TOKENS_FILE": str(tmp_path / "missing")})


def test_token_checks_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"app-one": "old"}')
    store = TokenStore(path=path)
    assert store.check("app-one", "old")
    assert not store.check("app-one", None) and not store.check("app-one", "") and not store.check("app-one", "ol")
    assert not store.check("app-two", "old") and not store.check("app-two", "\0")
    path.write_text('{"app-one": "new", "app-two": "two"}')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert store.check("app-one", "new") and not store.check("app-one", "old")
    assert store.check("app-two", "two") and not store.check("app-one", "two")
    # A broken rewrite opens nothing (see the test below).
    path.write_text("{broken")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert not store.check("app-one", "new")


# -- queues, against a fake API (no cluster) ---------------------------------------------------

@pytest.fixture
def fake_api() -> FakeCustomObjects:
    return FakeCustomObjects()


@pytest.fixture
def fake_http(fake_api: FakeCustomObjects, tmp_path: Path) -> TestClient:
    return TestClient(create_app(client=fake_client(tmp_path, fake_api), tokens=TOKENS, imports=IMPORTS))


def test_post_with_a_queue_and_priority(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    response = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                              json={"task": f"{T}.add", "args": [1, 2], "qos": "asap", "priority": -7})
    assert response.status_code == 202, response.text
    spec = fake_api.created[0]["spec"]
    assert (spec["queue"], spec["priority"], spec["app"]) == ("asap", -7, "app-one")
    assert response.json()["queue"] == {"name": "asap", "priority": -7, "queued": False, "reason": None,
                                        "message": None, "position": None, "waiting": None, "since": None,
                                        "updated_at": None}
    plain = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                           json={"task": f"{T}.add", "args": [1, 2], "qos": None, "priority": None})
    assert plain.status_code == 202, plain.text
    assert "queue" not in fake_api.created[1]["spec"] and "priority" not in fake_api.created[1]["spec"]
    assert plain.json()["queue"]["name"] == "default"


@pytest.mark.parametrize("fields, words", [
    ({"qos": "Fast Lane"}, "body.qos: qos must be a queue name: lower-case letters, digits and '-'"),
    ({"qos": ""}, "got ''"),
    ({"qos": 5}, "body.qos: qos must be a queue name (a string) or None, not int"),
    ({"qos": "x" * 64}, "at most 63"),
    ({"priority": 1001}, "body.priority: priority must be a whole number from -1000 to 1000"),
    ({"priority": "5"}, "not str"),
    ({"priority": True}, "not bool"),
    ({"priority": 2.0}, "not float"),
])
def test_post_with_a_bad_queue_or_priority_is_422_and_creates_nothing(
        fake_http: TestClient, fake_api: FakeCustomObjects, fields: dict[str, Any], words: str) -> None:
    response = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                              json={"task": f"{T}.add", "args": [1, 2], **fields})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "InvalidRequest"
    assert words in response.json()["detail"], response.json()
    assert fake_api.created == []


def test_list_filters_by_queue_and_waiting(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    since = "2026-05-01T10:00:00Z"
    fake_api.tasks = [
        live_task("t-a", app="app-one", queue="asap", waiting={"name": "asap", "position": 1, "waiting": 2,
                                                               "since": since}),
        live_task("t-b", app="app-one", queue="asap", state="STARTED", admitted=True),
        live_task("t-c", app="app-one", waiting={"name": "default", "position": 1, "waiting": 1, "since": since}),
        live_task("t-d", app="app-two", queue="asap", waiting={"name": "asap", "position": 2, "waiting": 2,
                                                               "since": since}),
    ]

    def ids(query: str) -> list[str]:
        response = fake_http.get(f"/v1/apps/app-one/tasks{query}", headers=bearer("app-one"))
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert ids("") == ["t-a", "t-b", "t-c"]
    assert ids("?queued=true") == ["t-a", "t-c"]
    assert ids("?queue=asap") == ["t-a", "t-b"]
    assert ids("?queued=true&queue=asap") == ["t-a"]
    assert ids("?queue=default") == ["t-c"]
    page = fake_http.get("/v1/apps/app-one/tasks?queued=true&limit=1", headers=bearer("app-one")).json()
    assert [t["id"] for t in page["items"]] == ["t-a"] and page["next"].startswith("live.")
    assert ids(f"?queued=true&limit=1&cursor={page['next']}") == ["t-c"]
    first = fake_http.get("/v1/apps/app-one/tasks?queued=true", headers=bearer("app-one")).json()["items"][0]
    assert first["status"] == "PENDING" and first["queue"] == {
        "name": "asap", "priority": 0, "queued": True, "reason": "Waiting", "message": None, "position": 1,
        "waiting": 2, "since": "2026-05-01T10:00:00+00:00", "updated_at": None}
    for bad in ("?queue=Fast%20Lane", "?queue=", "?queued=maybe"):
        response = fake_http.get(f"/v1/apps/app-one/tasks{bad}", headers=bearer("app-one"))
        assert response.status_code == 422 and response.json()["code"] == "InvalidRequest", (bad, response.text)


def test_the_queue_filter_applies_to_archived_tasks_and_queued_reads_no_archive(
        fake_api: FakeCustomObjects, tmp_path: Path) -> None:
    from lime_task.archive import Page

    class Archive:
        """Archived tasks of app-one: one of the queue asap, one of the default queue."""

        def __init__(self) -> None:
            self.calls = 0

        def ping(self) -> None:
            pass

        def list(self, namespace: str, app: str | None, state: str | None, limit: int, cursor: str | None) -> Page:
            self.calls += 1
            return Page([live_task("z-asap", app="app-one", queue="asap", state="SUCCESS"),
                         live_task("z-default", app="app-one", state="SUCCESS")], None)

    archive = Archive()
    http = TestClient(create_app(client=fake_client(tmp_path, fake_api), tokens=TOKENS, imports=IMPORTS,
                                 archive=archive))  # type: ignore[arg-type]
    fake_api.tasks = [live_task("t-a", app="app-one", queue="asap", waiting={"position": 1, "waiting": 1})]

    def ids(query: str) -> list[str]:
        response = http.get(f"/v1/apps/app-one/tasks{query}", headers=bearer("app-one"))
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert ids("") == ["t-a", "z-asap", "z-default"]
    assert ids("?queue=asap") == ["t-a", "z-asap"]
    calls = archive.calls
    assert ids("?queued=true") == ["t-a"]
    assert archive.calls == calls  # waiting tasks are never archived


@pytest.mark.parametrize("body, words", [
    ('"expires": "3600"', "body.expires: expires '3600' is not an RFC 3339 time"),
    ('"countdown": NaN', "body.countdown: countdown must be a finite number of seconds, got nan"),
    ('"countdown": Infinity', "countdown must be a finite number of seconds, got inf"),
    ('"countdown": "60"', "countdown '60' is not an RFC 3339 time"),
    ('"eta": "0001-01-01T00:00:00Z"', "body.eta: eta 0001-01-01T00:00:00Z is before 1970"),
    ('"eta": "2026-11-30T10:00:00"', "has no time zone"),
    ('"countdown": 3600, "expires": 60', "is not after the task's start"),
    ('"expires": 0', "is not after the task's start"),
    ('"countdown": 40000000', "countdown of 40000000 seconds is over a year"),
])
def test_post_with_bad_times_is_422_with_the_clients_words_and_creates_nothing(
        fake_http: TestClient, fake_api: FakeCustomObjects, body: str, words: str) -> None:
    response = fake_http.post("/v1/apps/app-one/tasks", content=f'{{"task": "{T}.add", "args": [1, 2], {body}}}',
                              headers={**bearer("app-one"), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"], response.json()
    assert "refused the task" not in response.json()["detail"]
    assert fake_api.created == []


def test_post_with_good_times_sends_them_as_the_client_does(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    response = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                              json={"task": f"{T}.add", "args": [1, 2], "countdown": 60, "expires": 3600})
    assert response.status_code == 202, response.text
    spec = fake_api.created[0]["spec"]
    assert spec["eta"] < spec["expires"] and spec["eta"].endswith("Z")
    response = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                              json={"task": f"{T}.add", "args": [1, 2], "expires": "2999-01-01T00:00:00+01:00"})
    assert response.status_code == 422 and "over a year from now" in response.json()["detail"]


@pytest.mark.parametrize("arguments, words", [
    ('"args": ["lone\\ud800", "x"]', "argument 1 has a lone surrogate \\ud800 at character 5"),
    ('"args": [1, ["\\udfff"]]', "argument 2[0] has a lone surrogate \\udfff at character 1"),
    ('"kwargs": {"k": {"\\ud83d": 1}}', "keyword argument 'k' has a key '\\ud83d' that has a lone surrogate"),
])
def test_post_with_lone_surrogates_is_refused_not_changed(
        fake_http: TestClient, fake_api: FakeCustomObjects, arguments: str, words: str) -> None:
    response = fake_http.post("/v1/apps/app-one/tasks", content=f'{{"task": "{T}.add", {arguments}}}',
                              headers={**bearer("app-one"), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "InvalidArguments"
    assert words in response.json()["detail"], response.json()
    assert fake_api.created == []


def test_a_refusal_by_the_cluster_names_the_field_not_a_generated_id(
        fake_http: TestClient, fake_api: FakeCustomObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the API server refuses that the client's own checks let through (a CRD rule of a newer
    release, say) is said in the API server's words, without the name the client made up."""
    from tests.unit.fake_api import api_error

    def refuse(group: str, version: str, namespace: str, plural: str, body: dict[str, Any], **_: Any) -> Any:
        name = body["metadata"]["name"]
        raise api_error(422, f'LimeTask.limetask.io "{name}" is invalid: spec.eta: Invalid value: "x": bad time')

    monkeypatch.setattr(fake_api, "create_namespaced_custom_object", refuse)
    response = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"),
                              json={"task": f"{T}.add", "args": [1, 2]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == 'the cluster refused the task: spec.eta: Invalid value: "x": bad time'


# -- token files: rotation, mistakes, revocation ------------------------------------------------

def rewrite(path: Path, text: str, step: int) -> None:
    """Rewrite a tokens file with a later modification time (as a rotated Secret has)."""
    path.write_text(text)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + step * 10**9))


def test_a_broken_rotation_refuses_every_application_token_until_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A revocation done by editing the file must never silently fail open: a file that cannot be
    read refuses every application token, says so in the log and in `problem`, and the next
    good version is taken again."""
    path = tmp_path / "tokens"
    path.write_text("app-one=one\napp-two=two\n")
    store = TokenStore(path=path)
    assert store.problem is None and store.check("app-two", "two")
    # app-two's token is revoked, but the edit leaves a stray line: nothing may open any more.
    rewrite(path, "app-one=one\napp-two\n", 1)
    with caplog.at_level("ERROR", logger="limetask.web"):
        assert not store.check("app-two", "two") and not store.check("app-one", "one")
    assert store.owner("one") is None and store.get("app-one") is None
    assert store.problem is not None and "line 2" in store.problem
    assert "every application token is refused" in caplog.text
    # The tokens it had are still known as application tokens (never sent elsewhere).
    assert store.holds("one") and store.holds("two")
    rewrite(path, "app-one=one\n", 2)
    assert store.check("app-one", "one") and not store.check("app-two", "two") and store.problem is None


@pytest.mark.parametrize("text, fragment", [
    ("app-one=same\napp-two=same\n", "'app-one' and 'app-two' have the same token"),
    ('{"app-one": "same", "app-two": "same"}', "'app-one' and 'app-two' have the same token"),
    ("app-one=\n", "non-empty"),
    ("=token\n", "invalid application name"),
    ('{"app-one": "  "}', "non-empty"),
])
def test_a_token_for_two_applications_and_empty_entries_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as refused:
        parse_tokens(text)
    assert "same" not in str(refused.value).replace("the same token", "")  # the token is never echoed


def test_an_empty_token_file_in_a_secret_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app-one").write_text("one")
    (tmp_path / "app-two").write_text("\n")
    with pytest.raises(ValueError, match="'app-two' must be a non-empty string"):
        read_tokens(tmp_path)


def test_holds_sees_a_just_added_token_and_remembers_revoked_ones(tmp_path: Path) -> None:
    """`holds` answers whether a token is (or was) an application's: such a token is never sent
    to the API server for review, right after a rotation as later."""
    path = tmp_path / "tokens"
    path.write_text("app-one=one\n")
    store = TokenStore(path=path)
    rewrite(path, "app-one=one\napp-two=two\n", 1)
    assert store.holds("two")  # read again: no request in between
    rewrite(path, "app-one=uno\n", 2)
    assert store.holds("two") and store.holds("one") and store.holds("uno")  # revoked ones too
    assert not store.check("app-two", "two") and not store.check("app-one", "one")
    assert not store.holds("never-a-token")


# -- paging the live tasks ----------------------------------------------------------------------

def test_each_page_of_live_tasks_reads_on_from_the_last(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    """A page lists from where the last one stopped (the cluster's `continue` tokens): walking 25
    tasks in pages of 10 reads each task once, not page k's k·10 from the start."""
    fake_api.tasks = [live_task(f"t-{i:02}", app="app-one") for i in range(25)]
    unlabelled = live_task("t-kubectl", app="app-one")
    del unlabelled["metadata"]["labels"]  # made with kubectl: spec.app decides
    fake_api.tasks += [unlabelled, live_task("t-other", app="app-two")]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        query = "limit=10" + (f"&cursor={cursor}" if cursor else "")
        response = fake_http.get(f"/v1/apps/app-one/tasks?{query}", headers=bearer("app-one"))
        assert response.status_code == 200, response.text
        seen += [t["id"] for t in response.json()["items"]]
        cursor = response.json()["next"]
        if cursor is None:
            break
    assert seen == [f"t-{i:02}" for i in range(25)] + ["t-kubectl"]
    assert fake_api.listed == 26  # every task read once, and app-two's never


@pytest.mark.parametrize("cursor", ["live.999999999", "live.l" + "x" * 3000, "live.lnot-a-token", "live.q", "bogus"])
def test_a_forged_cursor_is_422_and_reads_nothing(fake_http: TestClient, fake_api: FakeCustomObjects,
                                                  cursor: str) -> None:
    fake_api.tasks = [live_task(f"t-{i:02}", app="app-one") for i in range(30)]
    for query in ("", "&queued=true"):
        response = fake_http.get(f"/v1/apps/app-one/tasks?cursor={cursor}{query}", headers=bearer("app-one"))
        assert response.status_code == 422, response.text
        assert "cursor" in response.json()["detail"]
    assert fake_api.listed == 0


def test_an_expired_cursor_says_to_list_again(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    from tests.unit.fake_api import api_error

    fake_api.tasks = [live_task(f"t-{i:02}", app="app-one") for i in range(3)]
    first = fake_http.get("/v1/apps/app-one/tasks?limit=1", headers=bearer("app-one")).json()
    fake_api.tasks_error = api_error(410, "The provided continue parameter is too old")
    response = fake_http.get(f"/v1/apps/app-one/tasks?limit=1&cursor={first['next']}", headers=bearer("app-one"))
    assert response.status_code == 422 and "expired" in response.json()["detail"], response.text


# -- Kubernetes tokens, health and the namespace served ------------------------------------------

def kube_http(tmp_path: Path, api: FakeApiServer, platform: dict[str, str] | None = None,
              tokens: TokenStore | dict[str, str] | None = None, **auth: Any) -> TestClient:
    kube = KubernetesAuth(None, "solutions", authentication=api, authorization=api, **auth)
    return TestClient(create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=tokens or TOKENS,
                                 platform_tokens=platform or {"ops": "platform-token"}, kubernetes_auth=kube))


def test_application_and_platform_tokens_never_reach_the_api_server(tmp_path: Path) -> None:
    """Tokens of this endpoint's own (an application's, a revoked one, a platform token) are no
    Kubernetes tokens: they are refused without a review, so they never appear in the API
    server's audit log."""
    api = FakeApiServer()
    # Shaped like Kubernetes tokens, so that only knowing them keeps them from the API server.
    one, two, ops = jwt("app-one"), jwt("app-two"), jwt("ops")
    path = tmp_path / "tokens"
    path.write_text(f"app-one={one}\napp-two={two}\n")
    store = TokenStore(path=path)
    http = kube_http(tmp_path, api, tokens=store, platform={"ops": ops})
    rewrite(path, f"app-one={one}\n", 1)  # app-two's token revoked
    for token in (one, two, ops):
        for url in ("/v1/apps/app-two/tasks/t-1", "/v1/apps/app-two/tasks", "/v1/results"):
            response = http.get(url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (token, url, response.text)
        assert http.get("/v1/dashboard/me", headers={"Authorization": f"Bearer {token}"}).status_code in (200, 401)
    assert api.token_reviews == []
    crm = jwt("system:serviceaccount:solutions:crm")
    assert http.get("/v1/apps/app-two/tasks/t-1", headers={"Authorization": f"Bearer {crm}"}).status_code == 404
    assert len(api.token_reviews) == 1


def test_a_token_for_the_api_server_opens_nothing(tmp_path: Path) -> None:
    api = FakeApiServer()
    http = kube_http(tmp_path, api)
    api_server_token = jwt("system:serviceaccount:solutions:crm", audience="https://kubernetes.default.svc")
    response = http.get("/v1/apps/app-one/tasks/t-1", headers={"Authorization": f"Bearer {api_server_token}"})
    assert response.status_code == 401
    assert api.token_reviews[0]["spec"]["audiences"] == ["limetask-web"]


def test_too_many_new_kubernetes_tokens_is_429_with_retry_after(tmp_path: Path) -> None:
    api = FakeApiServer()
    http = kube_http(tmp_path, api, reviews_per_second=1)
    known = {"Authorization": f"Bearer {jwt('system:serviceaccount:solutions:crm')}"}
    assert http.get("/v1/apps/app-one/tasks/t-1", headers=known).status_code == 404
    answers = [http.get("/v1/apps/app-one/tasks/t-1", headers={"Authorization": f"Bearer {jwt()}"})
               for _ in range(3)]
    assert [a.status_code for a in answers][-1] == 429
    assert answers[-1].json()["code"] == "TooManyRequests" and int(answers[-1].headers["retry-after"]) >= 1
    assert len(api.token_reviews) == 2  # the burst: two; the rest were never sent
    assert http.get("/v1/apps/app-one/tasks/t-1", headers=known).status_code == 404  # known: still served
    assert http.get("/v1/apps/app-one/tasks/t-1", headers=bearer("app-one")).status_code == 404


def test_the_audience_and_the_review_rate_come_from_the_environment() -> None:
    from lime_task.server.auth import kubernetes_auth_settings

    assert kubernetes_auth_settings({}) == ("limetask-web", 10.0)
    assert kubernetes_auth_settings({"LIMETASK_WEB_AUDIENCE": "tasks.example.com",
                                      "LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND": "2.5"}) == ("tasks.example.com", 2.5)
    for bad in ("0", "-1", "many", "nan", "1e9"):
        with pytest.raises(LimeTaskError, match="LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND"):
            kubernetes_auth_settings({"LIMETASK_WEB_TOKEN_REVIEWS_PER_SECOND": bad})


def test_healthz_answers_while_every_worker_is_busy(tmp_path: Path) -> None:
    """Liveness must not depend on the workers that requests share: with all of them waiting for
    a cluster that does not answer, /healthz and /readyz still do."""
    import threading

    release, entered = threading.Event(), threading.Semaphore(0)

    class Stuck:
        namespace = "solutions"

        def get_status(self, task_id: str, app: str) -> Any:
            entered.release()
            release.wait(60)
            raise NotFoundError(task_id)

    # One event loop for every request (as a server has), and so one pool of workers.
    with TestClient(create_app(client=Stuck(), tokens=TOKENS)) as http:
        stuck = [threading.Thread(target=http.get, args=("/v1/apps/app-one/tasks/x",),
                                  kwargs={"headers": bearer("app-one")}) for _ in range(45)]
        try:
            for t in stuck:
                t.start()
            for _ in range(40):  # AnyIO's 40 worker threads, all taken
                assert entered.acquire(timeout=30)
            answers: list[Any] = []
            probe = threading.Thread(target=lambda: answers.extend([http.get("/healthz"), http.get("/readyz")]))
            probe.start()
            probe.join(30)
            assert [a.status_code for a in answers] == [200, 200], "the health checks waited for the workers"
        finally:
            release.set()
            for t in stuck:
                t.join(30)


def test_readyz_says_what_is_degraded_and_stays_200(tmp_path: Path) -> None:
    from lime_task.archive import ArchiveError

    class DownArchive:
        def ping(self) -> None:
            raise ArchiveError("the archive cannot be reached: password authentication failed for user x")

    path = tmp_path / "tokens"
    path.write_text("app-one=token-one\n")
    http = TestClient(create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TokenStore(path=path),
                                 archive=DownArchive()))  # type: ignore[arg-type]
    answer = wait_until(lambda: (r := http.get("/readyz").json())["archive"] != "unknown" and r, timeout=30)
    assert answer == {"status": "degraded", "archive": "unavailable", "tokens": "ok", "platform_tokens": "ok"}
    assert "password" not in http.get("/readyz").text and http.get("/healthz").json() == {"status": "ok"}
    rewrite(path, "app-one=token-one\napp-one=again\n", 1)
    assert http.get("/v1/apps/app-one/tasks/x", headers=bearer("app-one")).status_code == 401
    response = http.get("/readyz")
    assert response.status_code == 200 and response.json()["tokens"] == "invalid"
    assert "app-one" not in response.text
    plain = TestClient(create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TOKENS))
    assert plain.get("/readyz").json() == {"status": "ok", "archive": "none", "tokens": "ok", "platform_tokens": "ok"}


def test_a_client_of_another_namespace_is_told_so(tmp_path: Path) -> None:
    """The endpoint serves its own namespace: a request that means another is refused, never
    answered with this namespace's tasks."""
    from lime_task.archive import Page

    class Archive:
        def ping(self) -> None:
            pass

        def get(self, namespace: str, task_id: str, app: str) -> Any:
            return live_task(task_id, app=app, state="SUCCESS")

        def list(self, namespace: str, app: str | None, state: str | None, limit: int, cursor: str | None) -> Page:
            return Page([live_task("z-1", app="app-one", state="SUCCESS")], None)

    kube = KubernetesAuth(None, "solutions", authentication=FakeApiServer(), authorization=FakeApiServer())
    http = TestClient(create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TOKENS,
                                 archive=Archive(), kubernetes_auth=kube))  # type: ignore[arg-type]
    crm = {"Authorization": f"Bearer {jwt('system:serviceaccount:solutions:crm')}"}
    urls = ["/v1/apps/app-one/results/t-1", "/v1/apps/app-one/results", "/v1/apps/app-one/tasks/t-1",
            "/v1/apps/app-one/tasks"]
    for url, headers in [*((u, bearer("app-one")) for u in urls), ("/v1/results", crm)]:
        assert http.get(f"{url}?namespace=solutions", headers=headers).status_code == 200, url
        response = http.get(f"{url}?namespace=probe-b", headers=headers)
        assert response.status_code == 400, (url, response.text)
        assert response.json() == {"code": "WrongNamespace", "detail": "this endpoint serves namespace "
                                   "'solutions', not 'probe-b': ask the endpoint of namespace 'probe-b'"}
    # The namespace is said to a client with a valid token only.
    assert http.get("/v1/apps/app-one/results/t-1?namespace=probe-b").status_code == 401


def test_no_api_page_loads_scripts_from_elsewhere(tmp_path: Path) -> None:
    """/docs and /redoc would load Swagger UI and ReDoc from a CDN into the dashboard's origin; the
    document stays at /openapi.json."""
    http = TestClient(create_app(client=object(), tokens={}))
    assert http.get("/docs").status_code == 404 and http.get("/redoc").status_code == 404
    assert http.get("/docs/oauth2-redirect").status_code == 404
    assert http.get("/openapi.json").json()["info"]["title"] == "Lime Task"


def test_finished_live_tasks_the_archive_has_are_listed_once(fake_api: FakeCustomObjects, tmp_path: Path) -> None:
    """A finished task stays in the cluster a while after it is archived: a walk through the
    pages meets it once, with the archived ones."""
    from lime_task.archive import Page

    done = live_task("t-done", app="app-one", state="SUCCESS")
    done["metadata"]["uid"] = "uid-done"
    done_elsewhere = live_task("t-new", app="app-one", state="SUCCESS")
    done_elsewhere["metadata"]["uid"] = "uid-new"  # a new incarnation of a name the archive holds
    fake_api.tasks = [live_task("t-run", app="app-one", state="STARTED"), done, done_elsewhere]

    class Archive:
        def ping(self) -> None:
            pass

        def archived_uids(self, namespace: str, names: list[str]) -> set[str]:
            assert names == ["t-done", "t-new"]
            return {"uid-done", "uid-new-old"}

        def list(self, namespace: str, app: str | None, state: str | None, limit: int, cursor: str | None) -> Page:
            return Page([live_task("t-done", app="app-one", state="SUCCESS"),
                         live_task("t-new", app="app-one", state="FAILURE")], None)

    http = TestClient(create_app(client=fake_client(tmp_path, fake_api), tokens=TOKENS,
                                 archive=Archive()))  # type: ignore[arg-type]
    items = http.get("/v1/apps/app-one/tasks", headers=bearer("app-one")).json()["items"]
    assert [(i["id"], i["archived"]) for i in items] == [
        ("t-run", False), ("t-new", False), ("t-done", True), ("t-new", True)]


def test_every_call_to_the_cluster_has_a_timeout(fake_http: TestClient, fake_api: FakeCustomObjects) -> None:
    """A call to an API server that stopped answering must end (urllib3 waits forever by
    default), or the request's worker waits with it."""
    created = fake_http.post("/v1/apps/app-one/tasks", headers=bearer("app-one"), json={"task": f"{T}.add"})
    assert created.status_code == 202, created.text
    assert fake_http.get(f"/v1/apps/app-one/tasks/{created.json()['id']}", headers=bearer("app-one")).status_code == 200
    assert fake_http.get("/v1/apps/app-one/tasks", headers=bearer("app-one")).status_code == 200
    assert len(fake_api.timeouts) >= 4
    assert all(isinstance(t, tuple) and all(0 < part <= 60 for part in t) for t in fake_api.timeouts), \
        fake_api.timeouts



@pytest.mark.archive
def test_readyz_tells_a_wrong_archive_password_from_a_good_archive(tmp_path: Path, archive_db: str) -> None:
    """A wrong password: liveness stays ok, readiness says the archive is unavailable (and still
    answers 200); the right one: ok."""
    from urllib.parse import urlsplit

    from lime_task.archive import ArchiveReader

    parts = urlsplit(archive_db)
    wrong = archive_db.replace(f":{parts.password}@", ":not-the-password@")
    for url, state in ((wrong, "unavailable"), (archive_db, "ok")):
        reader = ArchiveReader(url)
        try:
            http = TestClient(create_app(client=fake_client(tmp_path, FakeCustomObjects()), tokens=TOKENS,
                                         archive=reader))
            answer = wait_until(lambda h=http: (r := h.get("/readyz")).json()["archive"] != "unknown" and r,
                                timeout=60)
            assert answer.status_code == 200 and answer.json()["archive"] == state, answer.text
            assert "not-the-password" not in answer.text and http.get("/healthz").status_code == 200
        finally:
            reader.close()
