"""The HTTP endpoint (lime_task.web): tokens, status codes, app scoping, and a fuzz test, no 5xx.

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

from lime_task import TaskClient, registered_tasks
from lime_task.web import MAX_BODY_BYTES, TokenStore, create_app, parse_tokens, read_tokens
from tests.unit.fake_api import FakeCustomObjects, fake_client, live_task

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
    # schedules and their runs; health; the dashboard's who-am-I, list, task, cancel, charts, stream
    assert len(operations) == 16
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
                          "/v1/apps/{app}/schedules/{name}/runs", "/healthz", "/v1/dashboard/me",
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
    assert [t["id"] for t in page["items"]] == ["t-a"] and page["next"] == "live.1"
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
