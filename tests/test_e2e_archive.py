"""History out of etcd, end to end: the operator archives finished tasks into the real PostgreSQL
and deletes their LimeTasks; the client, the CLI and the HTTP endpoint read them alike.

The operator of this module runs with the archive (through a proxy that tests switch off for an
outage), a short keep time in the cluster, and its metrics on a port of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Cluster,
    Operator,
    _free_port,
    archive_rows,
    archive_url,
    broker_url,
    wait_until,
)

from lime_task import SUCCESS, ClusterError, NotFoundError, TaskAlreadyFinishedError, TaskClient

pytestmark = [pytest.mark.e2e, pytest.mark.archive]

T = "acme_solution.tasks.lime"
KEEP_SECONDS = 2


class ArchiveOperator:
    """This module's operator: started with the archive settings a test asks for."""

    def __init__(self, cluster: Cluster, log_dir: Path, broker: Any, proxy: Any, database: str) -> None:
        self.cluster, self.log_dir = cluster, log_dir
        self.env_base = {
            "LIMETASK_BROKER_URL": broker_url(broker.port), "LIMETASK_EVENT_RETRY_MAX_SECONDS": "2",
            "LIMETASK_ARCHIVE_URL": archive_url(proxy.port, database),
        }
        self.op: Operator | None = None
        self.metrics_port = 0

    def start(self, keep: int = KEEP_SECONDS, **env: str) -> Operator:
        self.stop()
        self.metrics_port = _free_port()
        self.op = Operator(self.cluster, self.log_dir, extra_env={
            **self.env_base, "LIMETASK_ARCHIVE_KEEP_SECONDS": str(keep),
            "LIMETASK_METRICS_PORT": str(self.metrics_port), **env})
        self.op.start()
        return self.op

    def stop(self) -> None:
        if self.op is not None:
            self.op.stop()
            self.op = None

    def metric(self, name: str) -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def log(self) -> str:
        assert self.op is not None
        return self.op.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def archiving(cluster: Cluster, crd: None, operator: Operator, archive_db: str, archive_proxy: Any,
              broker_proxy: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveOperator]:
    """The session operator makes way for one with the archive, for this module."""
    operator.stop()
    archiver = ArchiveOperator(cluster, tmp_path_factory.mktemp("archive-operator"), broker_proxy, archive_proxy,
                               archive_db.rsplit("/", 1)[1])
    archiver.start()
    yield archiver
    archiver.stop()
    archive_proxy.enable()
    operator.start()


@pytest.fixture
def arch(archiving: ArchiveOperator, archive_proxy: Any) -> ArchiveOperator:
    """The archive operator, running with the default settings of this module."""
    archive_proxy.enable()
    if archiving.op is None or not archiving.op.alive():
        archiving.start()
    return archiving


@dataclass
class Web:
    url: str
    tokens: dict[str, str]

    def get(self, path: str, token: str | None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


APP, OTHER = "app-archive", "app-other"


@pytest.fixture
def web(cluster: Cluster, namespace: str, archive_db: str) -> Iterator[Web]:
    """The HTTP endpoint with the archive, serving the test's namespace (uvicorn, in a thread)."""
    import uvicorn

    from lime_task.server.app import create_app

    tokens = {APP: "token-" + uuid.uuid4().hex, OTHER: "token-" + uuid.uuid4().hex}
    app = create_app(client=TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url=""),
                     tokens=tokens, imports=[f"{T}"], archive=archive_db)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, message="the HTTP endpoint")
    yield Web(f"http://127.0.0.1:{port}", tokens)
    server.should_exit = True
    thread.join(10)


READER = "archive-reader"


def client_for(cluster: Cluster, namespace: str, web: Web, tokens: bool = True) -> TaskClient:
    """A client told where the results API is; with the applications' tokens, or (tokens=False)
    with a Kubernetes identity only: the ServiceAccount READER's tokens for the endpoint's
    audience, from the TokenRequest API (see `reader_account`)."""
    return TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url=web.url,
                      results_tokens=web.tokens if tokens else None,
                      results_service_account=None if tokens else READER)


def reader_account(cluster: Cluster, namespace: str) -> None:
    """A ServiceAccount that may read and list LimeTasks in the namespace, and nothing else."""
    cluster.run_kubectl("create", "serviceaccount", READER, namespace=namespace)
    cluster.run_kubectl("create", "role", READER, "--verb=get,list", "--resource=limetasks.limetask.io",
                        namespace=namespace)
    cluster.run_kubectl("create", "rolebinding", READER, f"--role={READER}",
                        f"--serviceaccount={namespace}:{READER}", namespace=namespace)


def live_task_exists(cluster: Cluster, namespace: str, name: str) -> bool:
    return cluster.run_kubectl("get", "lt", name, "-o", "name", namespace=namespace, check=False).returncode == 0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lime_task.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_a_finished_task_leaves_the_cluster_and_reads_alike_from_the_archive(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, web: Web, archive_db: str) -> None:
    client = client_for(cluster, namespace, web)
    sent = client.send(f"{T}.add", APP, [1, 2])
    live = client.wait(sent.id, APP, timeout=120)
    assert live.status == SUCCESS and live.result == 3 and not live.archived
    wait_until(lambda: not live_task_exists(cluster, namespace, sent.id), timeout=60,
               message="the LimeTask to leave the cluster")
    rows = archive_rows(archive_db, namespace)
    assert [(r[0], r[2], r[3]) for r in rows] == [(sent.id, SUCCESS, APP)]

    archived = client.get_status(sent.id, APP)
    assert archived.archived and archived.status == SUCCESS and archived.result == 3
    for field in ("id", "task", "app", "attempts", "created_at", "started_at", "completed_at", "history",
                  "namespace", "error"):
        assert getattr(archived, field) == getattr(live, field), field
    assert archived.event_confirmed
    assert archived.wait(timeout=5) is archived  # finished: nothing to wait for
    assert client.wait(sent.id, APP, timeout=10).result == 3  # found in the archive, no watch needed
    with pytest.raises(TaskAlreadyFinishedError):
        client.cancel(sent.id, APP)
    listed = client.list(APP)
    assert [(s.id, s.archived) for s in listed] == [(sent.id, True)]
    assert client.list(APP, state="FAILURE") == []

    # Without an application token: a Kubernetes identity, with a token bound to the endpoint
    # (the TokenRequest API's, audience limetask-web), which the endpoint checks at the API server.
    reader_account(cluster, namespace)
    by_kubernetes = client_for(cluster, namespace, web, tokens=False)
    assert by_kubernetes.get_status(sent.id, APP).result == 3
    assert [s.id for s in by_kubernetes.list()] == [sent.id]  # every application's, for a Kubernetes identity

    # A token for the API server itself is refused (the endpoint must never collect those), and
    # so is a token of the endpoint's audience whose identity may not read LimeTasks.
    api_server_token = cluster.run_kubectl("create", "token", READER, namespace=namespace).stdout.strip()
    assert web.get(f"/v1/apps/{APP}/results/{sent.id}", api_server_token)[0] == 401
    cluster.run_kubectl("create", "serviceaccount", "stranger", namespace=namespace)
    stranger = cluster.run_kubectl("create", "token", "stranger", "--audience=limetask-web",
                                   namespace=namespace).stdout.strip()
    assert web.get(f"/v1/apps/{APP}/results/{sent.id}", stranger)[0] == 401
    bound = cluster.run_kubectl("create", "token", READER, "--audience=limetask-web",
                                namespace=namespace).stdout.strip()
    assert web.get(f"/v1/apps/{APP}/results/{sent.id}", bound)[0] == 200

    # Every application's archived tasks are listed for a Kubernetes identity only: a client with
    # application tokens alone lists the live ones, and says why the archived are missing.
    assert by_kubernetes.results is not None
    by_kubernetes.results.kube_token = lambda: None
    with pytest.warns(UserWarning, match="archived tasks are not listed"):
        assert by_kubernetes.list() == []

    # A client of another namespace is told that this endpoint serves another one, never given
    # this namespace's task as its own.
    elsewhere = TaskClient(kubeconfig=cluster.kubeconfig, namespace=f"{namespace}-b", results_url=web.url,
                           results_tokens=web.tokens)
    with pytest.raises(ClusterError, match=f"serves namespace '{namespace}', not '{namespace}-b'"):
        elsewhere.get_status(sent.id, APP)
    with pytest.raises(ClusterError, match="serves namespace"):
        elsewhere.list(APP)
    assert [s.id for s in client.list(APP)] == [sent.id]  # with the application named, its token serves

    # Without the results API, an archived task is a missing one (nothing else can be said).
    with pytest.raises(NotFoundError):
        TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url="").get_status(sent.id, APP)


def test_an_archived_task_is_its_own_applications_only(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, web: Web) -> None:
    client = client_for(cluster, namespace, web)
    sent = client.send(f"{T}.add", APP, [2, 3])
    client.wait(sent.id, APP, timeout=120)
    wait_until(lambda: not live_task_exists(cluster, namespace, sent.id), timeout=60, message="archived")

    # The client: another application's task is exactly a missing one, with a token or without.
    reader_account(cluster, namespace)
    for c in (client, client_for(cluster, namespace, web, tokens=False)):
        with pytest.raises(NotFoundError) as theirs:
            c.get_status(sent.id, OTHER)
        with pytest.raises(NotFoundError) as missing:
            c.get_status("no-such-task", OTHER)
        assert str(theirs.value).replace(sent.id, "X") == str(missing.value).replace("no-such-task", "X")
        assert c.list(OTHER) == []
        with pytest.raises(NotFoundError):
            c.cancel(sent.id, OTHER)

    # HTTP: 404 alike; a token opens its own application only.
    status, body = web.get(f"/v1/apps/{APP}/tasks/{sent.id}", web.tokens[APP])
    assert status == 200 and body["archived"] is True and body["result"] == 5
    status, body = web.get(f"/v1/apps/{APP}/results/{sent.id}", web.tokens[APP])
    assert status == 200 and body["result"] == 5
    theirs_status, theirs_body = web.get(f"/v1/apps/{OTHER}/tasks/{sent.id}", web.tokens[OTHER])
    missing_status, missing_body = web.get(f"/v1/apps/{OTHER}/tasks/no-such-task", web.tokens[OTHER])
    assert theirs_status == missing_status == 404 and theirs_body["code"] == missing_body["code"] == "NotFound"
    assert web.get(f"/v1/apps/{OTHER}/results/{sent.id}", web.tokens[OTHER])[0] == 404
    assert web.get(f"/v1/apps/{APP}/tasks/{sent.id}", web.tokens[OTHER])[0] == 401
    assert web.get(f"/v1/apps/{APP}/results", None)[0] == 401
    assert web.get("/v1/results", web.tokens[APP])[0] == 401  # every application's: not with an app's token
    status, page = web.get(f"/v1/apps/{APP}/tasks?limit=10", web.tokens[APP])
    assert status == 200 and [i["id"] for i in page["items"]] == [sent.id] and page["next"] is None
    assert web.get(f"/v1/apps/{OTHER}/results", web.tokens[OTHER])[1]["items"] == []
    assert web.get(f"/v1/apps/{APP}/results?cursor=bogus", web.tokens[APP])[0] == 422

    # The CLI: the same answers and exit codes.
    env = {"LIMETASK_KUBECONFIG": str(cluster.kubeconfig), "LIMETASK_RESULTS_URL": web.url,
           "LIMETASK_RESULTS_TOKENS": json.dumps(web.tokens)}
    shown = cli("status", sent.id, APP, "-n", namespace, env=env)
    assert shown.returncode == 0 and "SUCCESS" in shown.stdout and "(archived)" in shown.stdout, shown.stderr
    as_json = json.loads(cli("status", sent.id, APP, "-n", namespace, "-o", "json", env=env).stdout)
    assert as_json["archived"] is True and as_json["result"] == 5
    other = cli("status", sent.id, OTHER, "-n", namespace, env=env)
    assert other.returncode == 1 and "not found" in other.stderr and other.stderr.count("\n") == 1
    listed = cli("list", "--app", APP, "-n", namespace, env=env)
    assert listed.returncode == 0 and sent.id in listed.stdout and "(archived)" in listed.stdout
    for args in (["status", sent.id, APP], ["list", "--app", APP]):  # another namespace: said, never answered
        elsewhere = cli(*args, "-n", "no-such-namespace", env=env)
        assert elsewhere.returncode == 2 and f"serves namespace '{namespace}'" in elsewhere.stderr, elsewhere
        assert sent.id not in elsewhere.stdout
    assert sent.id not in cli("list", "--app", OTHER, "-n", namespace, env=env).stdout
    assert cli("wait", sent.id, APP, "-n", namespace, env=env).returncode == 0


def test_the_http_endpoint_lists_live_then_archived_tasks(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, web: Web) -> None:
    client = client_for(cluster, namespace, web)
    done = [client.send(f"{T}.add", APP, [i, i]) for i in range(3)]
    for s in done:
        client.wait(s.id, APP, timeout=120)
    wait_until(lambda: not any(live_task_exists(cluster, namespace, s.id) for s in done), timeout=60,
               message="archived")
    running = [client.send(f"{T}.sleep", APP, [30]) for _ in range(2)]
    try:
        status, page = web.get(f"/v1/apps/{APP}/tasks?limit=2", web.tokens[APP])
        assert status == 200 and [i["archived"] for i in page["items"]] == [False, False] and page["next"]
        # Page by page, one at a time: the live ones, then the archived ones, each exactly once.
        seen, cursor, pages = [], None, 0
        while True:
            query = f"limit=1&cursor={cursor}" if cursor else "limit=1"
            status, page = web.get(f"/v1/apps/{APP}/tasks?{query}", web.tokens[APP])
            assert status == 200, page
            seen += [(i["id"], i["archived"]) for i in page["items"]]
            pages += 1
            cursor = page["next"]
            if not cursor:
                break
        assert sorted(i for i, _ in seen) == sorted([*(r.id for r in running), *(s.id for s in done)])
        assert [a for _, a in seen] == [False, False, True, True, True]
        assert web.get(f"/v1/apps/{APP}/tasks?cursor=live.x", web.tokens[APP])[0] == 422
        assert {s.id for s in client.list(APP)} == {*(r.id for r in running), *(s.id for s in done)}
        assert all(not s.archived for s in client.list(APP, limit=2))
    finally:
        for r in running:
            client.cancel(r.id, APP)


def test_an_archive_outage_loses_nothing_and_writes_nothing_twice(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, archive_proxy: Any, archive_db: str) -> None:
    """50 tasks finish while the archive is down: they wait in the cluster, a metric and a warning
    say so; once it is back, all 50 are archived, each once, and only then leave the cluster."""
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url="")
    archive_proxy.disable()
    try:
        sent = [client.send(f"{T}.noop", APP) for _ in range(50)]
        for s in sent:
            assert client.wait(s.id, APP, timeout=240).status == SUCCESS
        wait_until(lambda: all(client.get_status(s.id, APP).event_confirmed for s in sent), timeout=60,
                   message="every event confirmed")
        wait_until(lambda: (arch.metric("limetask_archive_pending") or 0) >= 50, timeout=60,
                   message="limetask_archive_pending to count the waiting tasks")
        assert arch.metric("limetask_archive_up") == 0
        wait_until(lambda: "cannot be written" in arch.log(), timeout=30, message="the warning")
        time.sleep(KEEP_SECONDS + 3)
        assert len(client.list(APP)) == 50, "a task left the cluster before the archive had it"
        assert archive_rows(archive_db, namespace) == []
    finally:
        archive_proxy.enable()
    wait_until(lambda: client.list(APP) == [], timeout=120, message="every task to leave the cluster")
    rows = archive_rows(archive_db, namespace)
    assert sorted(r[0] for r in rows) == sorted(s.id for s in sent)  # each task, once
    assert len({r[1] for r in rows}) == 50
    wait_until(lambda: arch.metric("limetask_archive_up") == 1, timeout=30, message="limetask_archive_up 1")
    assert arch.metric("limetask_archive_pending") == 0
    assert "the archive answers again" in arch.log()


def test_an_operator_killed_between_archive_write_and_delete(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, archive_db: str) -> None:
    """Written to the archive, not yet deleted (a long keep time), and the operator is SIGKILLed: the
    next one writes it again (no second row) and deletes it."""
    arch.start(keep=3600)
    client = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url="")
    sent = [client.send(f"{T}.add", APP, [i, 1]) for i in range(5)]
    for s in sent:
        client.wait(s.id, APP, timeout=120)
    wait_until(lambda: len(archive_rows(archive_db, namespace)) == 5, timeout=60, message="5 rows")
    assert all(live_task_exists(cluster, namespace, s.id) for s in sent)
    assert arch.op is not None
    arch.op.kill(9)
    arch.start(keep=0)
    wait_until(lambda: client.list(APP) == [], timeout=60, message="the archived tasks to leave the cluster")
    rows = archive_rows(archive_db, namespace)
    assert sorted(r[0] for r in rows) == sorted(s.id for s in sent) and len(rows) == 5
    arch.start()


def test_upgrading_archives_the_finished_tasks_already_in_the_cluster(
        cluster: Cluster, namespace: str, arch: ArchiveOperator, operator: Operator, archive_db: str,
        web: Web) -> None:
    """An installation without the archive holds finished LimeTasks; once the operator has the archive,
    each is archived (once) and leaves the cluster, and reads as before."""
    arch.stop()
    operator.start()  # the chart's operator, with no archive
    try:
        client = client_for(cluster, namespace, web)
        sent = [client.send(f"{T}.add", APP, [i, 10]) for i in range(10)]
        failed = client.send(f"{T}.fail", APP, ["boom"])
        finals = {s.id: client.wait(s.id, APP, timeout=120) for s in [*sent, failed]}
        wait_until(lambda: all(client.get_status(i, APP).event_confirmed for i in finals), timeout=60,
                   message="every event confirmed")
    finally:
        operator.stop()
    time.sleep(KEEP_SECONDS + 1)
    assert len(client.list(APP)) == 11 and archive_rows(archive_db, namespace) == []
    arch.start()
    wait_until(lambda: client.list(APP, archive=False) == [], timeout=120, message="the tasks to leave the cluster")
    assert len(archive_rows(archive_db, namespace)) == 11
    for task_id, live in finals.items():
        archived = client.get_status(task_id, APP)
        assert archived.archived and (archived.status, archived.result, archived.error) == (
            live.status, live.result, live.error)
