"""The client's side of the results API (lime_task.results): which token it presents, for which
namespace, and what it refuses, against a small HTTP server in the test (no cluster)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes.client.exceptions import ApiException

from lime_task import ClusterError, NotFoundError, TaskClient
from lime_task.results import KubernetesTokens, ResultsUnavailableError, service_account_of
from tests.unit.fake_api import FakeCustomObjects, claims, jwt, kubeconfig, live_task

CRM = "system:serviceaccount:solutions:crm"


class Endpoint:
    """Answers like the endpoint's results API; keeps what each request presented."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.answer: tuple[int, Any] = (404, {"code": "NotFound", "detail": "not found"})
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                endpoint.seen.append((parts.path, parse_qs(parts.query), self.headers.get("Authorization")))
                status, body = endpoint.answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def bearers(self) -> list[str | None]:
        return [auth for _, _, auth in self.seen]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    yield served
    served.server.shutdown()


class TokenRequests:
    """The TokenRequest API of the fake cluster: a token per request, for the audiences asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, dict[str, Any]]] = []
        self.error: ApiException | None = None

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: dict[str, Any],
                                                **_: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.asked.append((namespace, name, body))
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=body["spec"]["expirationSeconds"])
        token = jwt(f"system:serviceaccount:{namespace}:{name}", audience=body["spec"]["audiences"][0])
        return SimpleNamespace(status=SimpleNamespace(token=token, expiration_timestamp=expires))


@pytest.fixture
def token_requests(monkeypatch: pytest.MonkeyPatch) -> TokenRequests:
    from kubernetes import client

    fake = TokenRequests()
    monkeypatch.setattr(client, "CoreV1Api", lambda *_: fake)
    return fake


def client_for(tmp_path: Path, endpoint: Endpoint, api_server_token: str = "not-a-jwt", namespace: str = "solutions",
               **kwargs: Any) -> TaskClient:
    """A client whose cluster has no such live task (so it asks the results API), and whose own
    token for the API server is `api_server_token`."""
    path = kubeconfig(tmp_path)
    config = json.loads(path.read_text())
    config["users"][0]["user"]["token"] = api_server_token
    path.write_text(json.dumps(config))
    client = TaskClient(kubeconfig=path, namespace=namespace, results_url=endpoint.url, **kwargs)
    client.api = FakeCustomObjects()  # type: ignore[assignment]
    return client


def archived(namespace: str = "solutions") -> dict[str, Any]:
    body = live_task("t-1", app="my-app", state="SUCCESS")
    body["metadata"]["namespace"] = namespace
    from lime_task.status import TaskStatus

    return TaskStatus.from_resource(body, archived=True).to_dict()


@pytest.fixture(autouse=True)
def no_results_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIMETASK_RESULTS_URL", "LIMETASK_RESULTS_TOKENS", "LIMETASK_RESULTS_TOKENS_FILE",
                "LIMETASK_RESULTS_KUBERNETES_TOKEN_FILE", "LIMETASK_RESULTS_SERVICE_ACCOUNT",
                "LIMETASK_RESULTS_AUDIENCE"):
        monkeypatch.delenv(var, raising=False)


def test_the_api_server_token_is_never_presented(tmp_path: Path, endpoint: Endpoint,
                                                 token_requests: TokenRequests) -> None:
    """The client's own token opens the cluster: presenting it to the endpoint (over plain HTTP,
    even) would hand the endpoint, and anyone on the way, the client's cluster credentials."""
    api_server_token = jwt(CRM, audience="https://kubernetes.default.svc")
    client = client_for(tmp_path, endpoint, api_server_token)
    endpoint.answer = (200, archived())
    assert client.get_status("t-1", "my-app").archived
    presented = endpoint.bearers()[0]
    assert presented is not None and api_server_token not in presented
    # Its own ServiceAccount's: a token of the TokenRequest API, for the endpoint's audience only.
    assert token_requests.asked == [("solutions", "crm", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["limetask-web"], "expirationSeconds": 600}})]
    assert claims(presented.removeprefix("Bearer "))["aud"] == ["limetask-web"]


def test_without_any_token_for_the_endpoint_nothing_is_sent(tmp_path: Path, endpoint: Endpoint,
                                                            token_requests: TokenRequests) -> None:
    client = client_for(tmp_path, endpoint, "a-static-token-for-the-api-server")
    with pytest.raises(ResultsUnavailableError, match="no token for the results API.*LIMETASK_RESULTS_TOKENS_FILE"):
        client.get_status("t-1", "my-app")
    assert endpoint.seen == [] and token_requests.asked == []
    with pytest.warns(UserWarning, match="archived tasks are not listed"):
        assert client.list() == []


def test_the_applications_token_comes_first(tmp_path: Path, endpoint: Endpoint) -> None:
    client = client_for(tmp_path, endpoint, results_tokens={"my-app": "app-token"})
    endpoint.answer = (200, archived())
    client.get_status("t-1", "my-app")
    assert endpoint.bearers() == ["Bearer app-token"]


def test_a_projected_token_file_is_read_at_each_request(tmp_path: Path, endpoint: Endpoint,
                                                        token_requests: TokenRequests) -> None:
    path = tmp_path / "limetask-web-token"
    path.write_text("first.token.x\n")
    client = client_for(tmp_path, endpoint, jwt(CRM), results_token_file=path)
    endpoint.answer = (200, archived())
    client.get_status("t-1", "my-app")
    path.write_text("rotated.token.x")  # the kubelet rotates it
    client.get_status("t-1", "my-app")
    assert endpoint.bearers() == ["Bearer first.token.x", "Bearer rotated.token.x"]
    assert token_requests.asked == []
    path.unlink()
    with pytest.raises(ResultsUnavailableError, match="cannot read the Kubernetes token"):
        client.get_status("t-1", "my-app")


def test_a_named_service_account_gets_tokens_that_are_renewed(token_requests: TokenRequests) -> None:
    now = [1000.0]
    made: list[str] = []

    def request(namespace: str, name: str, audience: str, seconds: int) -> tuple[str, float]:
        made.append(f"{namespace}/{name}/{audience}/{seconds}")
        return f"token-{len(made)}", now[0] + seconds

    tokens = KubernetesTokens("tasks.example.com", service_account=("solutions", "reader"), request=request,
                              clock=lambda: now[0])
    assert tokens.get() == tokens.get() == "token-1"
    now[0] += 479
    assert tokens.get() == "token-1"
    now[0] += 2  # past 80% of its ten minutes
    assert tokens.get() == "token-2"
    assert made == ["solutions/reader/tasks.example.com/600"] * 2


def test_a_service_account_that_may_not_request_tokens_says_what_to_do(
        tmp_path: Path, endpoint: Endpoint, token_requests: TokenRequests) -> None:
    from tests.unit.fake_api import api_error

    token_requests.error = api_error(403, "forbidden")
    client = client_for(tmp_path, endpoint, results_service_account="reader")
    with pytest.raises(ResultsUnavailableError, match="not allowed to request a token.*solutions/reader.*"
                                                      "LIMETASK_RESULTS_KUBERNETES_TOKEN_FILE"):
        client.get_status("t-1", "my-app")
    assert endpoint.seen == []


def test_service_account_of_a_token() -> None:
    assert service_account_of(jwt(CRM)) == ("solutions", "crm")
    assert service_account_of(jwt("alice@example.com")) is None
    for other in (None, "", "x", "a.b.c", "a.!!.c"):
        assert service_account_of(other) is None


def test_the_client_names_its_namespace_and_refuses_another_namespaces_task(
        tmp_path: Path, endpoint: Endpoint) -> None:
    """An endpoint serves one namespace: a client of another must never take its archived task
    for its own (two environments share application names and schedule run names)."""
    client = client_for(tmp_path, endpoint, namespace="probe-b", results_tokens={"my-app": "app-token"})
    endpoint.answer = (400, {"code": "WrongNamespace",
                             "detail": "this endpoint serves namespace 'probe-a', not 'probe-b': ask the endpoint "
                                       "of namespace 'probe-b'"})
    with pytest.raises(ClusterError, match="serves namespace 'probe-a', not 'probe-b'.*LIMETASK_RESULTS_URL"):
        client.get_status("t-1", "my-app")
    assert endpoint.seen[0][1]["namespace"] == ["probe-b"]
    with pytest.raises(ClusterError, match="serves namespace 'probe-a'"):
        client.list("my-app")
    # An endpoint that does not check: its answer about probe-a's task is refused here.
    endpoint.answer = (200, archived("probe-a"))
    with pytest.raises(ClusterError, match="answered for namespace 'probe-a', not 'probe-b'"):
        client.get_status("t-1", "my-app")
    endpoint.answer = (200, {"items": [archived("probe-a")], "next": None})
    with pytest.raises(ClusterError, match="answered for namespace 'probe-a'"):
        client.list("my-app")
    endpoint.answer = (404, {"code": "NotFound", "detail": "not found"})
    with pytest.raises(NotFoundError):
        client.get_status("t-1", "my-app")


def test_a_url_given_takes_the_applications_tokens_from_the_environment(
        tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """`limetask status --results-url URL` (or LIMETASK_RESULTS_URL read by the CLI) with
    LIMETASK_RESULTS_TOKENS: the application's token is presented."""
    monkeypatch.setenv("LIMETASK_RESULTS_TOKENS", '{"my-app": "from-the-environment"}')
    client = client_for(tmp_path, endpoint)
    endpoint.answer = (200, archived())
    client.get_status("t-1", "my-app")
    assert endpoint.bearers() == ["Bearer from-the-environment"]
