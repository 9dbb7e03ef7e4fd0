"""The `limetask` command line against the local cluster: every command, exit codes, bad input.

Commands run in process (typer's CliRunner) with LIMETASK_KUBECONFIG and `--namespace` of the
test; `events` and `web` run as real processes. Tests without the e2e mark need no cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import Cluster, broker_url, wait_until
from typer.testing import CliRunner

import lime_task.cli.options
from lime_task import FAILURE, SUCCESS, TaskClient
from lime_task.cli.app import app
from lime_task.cli.output import age
from tests.unit.fake_api import FakeCustomObjects, api_error, fake_client, live_task

T = "acme_solution.tasks.lime"
CLI = [sys.executable, "-m", "lime_task.cli"]
Run = Callable[..., Result]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def limetask(cluster: Cluster, namespace: str, tasks: TaskClient) -> Run:
    """`limetask ARGS...` on the test's namespace (the operator running)."""
    env = {"LIMETASK_KUBECONFIG": str(cluster.kubeconfig)}

    def run(*args: str) -> Result:
        return invoke(*args, "--namespace", namespace, env=env)
    return run


def sent_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def run_cli(*args: str, kubeconfig: Path | str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`limetask ARGS...` as a real process (what a user sees: no CliRunner catching exceptions)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMETASK_")}
    env["LIMETASK_KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """The documented exit code and one `error:` line (a usage hint may follow), never a traceback."""
    detail = (proc.returncode, proc.stderr[:3000])
    assert proc.returncode == code, detail
    assert "Traceback" not in proc.stderr, detail
    lines = proc.stderr.splitlines()
    assert lines, detail
    assert len(lines) <= 2, detail
    assert lines[0].startswith("error: "), detail
    assert fragment in lines[0], detail
    assert proc.stdout == "", proc.stdout[:3000]


# -- against the cluster -----------------------------------------------------------------------

@pytest.mark.e2e
def test_send_text_and_json_then_status(limetask: Run, tasks: TaskClient) -> None:
    text = limetask("send", f"{T}.add", "my-app", "[1, 2]")
    assert text.exit_code == 0, text.output
    task_id, state, name, app_name = text.stdout.split()[:4]
    assert (state, name, app_name) == ("PENDING", f"{T}.add", "app=my-app")

    as_json = limetask("send", f"{T}.get_lime_company", "my-app", "[7]", "--kwargs", '{"props": ["name"]}',
                       "-o", "json")
    body = json.loads(as_json.stdout)
    assert (body["status"], body["task"], body["app"]) == ("PENDING", f"{T}.get_lime_company", "my-app")

    tasks.wait(task_id, "my-app", timeout=60)
    tasks.wait(body["id"], "my-app", timeout=60)
    status = limetask("status", task_id, "my-app")
    assert status.exit_code == 0, status.output
    assert status.stdout.split()[:2] == [task_id, "SUCCESS"] and "result: 3" in status.stdout
    status = limetask("status", body["id"], "my-app", "-o", "json")
    assert json.loads(status.stdout)["result"] == "company 7 of my-app: updated 1 properties on 50 deals"
    shown, actual = json.loads(status.stdout), tasks.get_status(body["id"], "my-app").to_dict()
    shown.pop("event_confirmed"), actual.pop("event_confirmed")  # the operator may confirm it in between
    assert shown == actual


@pytest.mark.e2e
def test_send_wait_exit_codes(limetask: Run) -> None:
    ok = limetask("send", f"{T}.add", "my-app", "[2, 3]", "--wait", "--timeout", "60")
    assert ok.exit_code == 0, ok.output
    assert "SUCCESS" in ok.stdout and "result: 5" in ok.stdout
    assert "SUCCESS" in ok.stderr  # progress, on stderr
    failed = limetask("send", f"{T}.fail", "my-app", '["the CRM said no"]', "--wait", "-o", "json")
    assert failed.exit_code == 1, failed.output
    body = json.loads(failed.stdout)
    assert body["status"] == FAILURE
    assert body["error"] == {"type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}


@pytest.mark.e2e
def test_wait_exit_codes(limetask: Run, tasks: TaskClient) -> None:
    ok = tasks.send(f"{T}.add", "my-app", [1, 1])
    bad = tasks.send(f"{T}.fail", "my-app", ["x"])
    slow = tasks.send(f"{T}.sleep", "my-app", [30])
    waited = limetask("wait", ok.id, "my-app", "--timeout", "60", "-o", "json")
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout)["result"] == 2
    waited = limetask("wait", bad.id, "my-app", "--timeout", "60")
    assert waited.exit_code == 1, waited.output
    assert "FAILURE" in waited.stdout and "ValueError: x (TaskRaised)" in waited.stdout
    began = time.monotonic()
    waited = limetask("wait", slow.id, "my-app", "--timeout", "1")
    assert waited.exit_code == 3, waited.output
    assert "still" in waited.stderr and time.monotonic() - began < 15
    tasks.cancel(slow.id, "my-app")


@pytest.mark.e2e
def test_send_wait_timeout_exits_3(cluster: Cluster, namespace: str, tasks: TaskClient) -> None:
    began = time.monotonic()
    proc = run_cli("send", f"{T}.sleep", "my-app", "[30]", "--wait", "--timeout", "1", "-o", "json",
                   "--namespace", namespace, kubeconfig=cluster.kubeconfig)
    assert_one_line_error(proc, 3, "WaitTimeoutError")
    assert "still" in proc.stderr and time.monotonic() - began < 20
    for status in tasks.list():
        tasks.cancel(status.id, status.app)


@pytest.mark.e2e
def test_list_filters_by_app_and_state(limetask: Run, tasks: TaskClient) -> None:
    a_ok = tasks.send(f"{T}.add", "app-a", [1, 2])
    a_bad = tasks.send(f"{T}.fail", "app-a", ["x"])
    b_ok = tasks.send(f"{T}.add", "app-b", [3, 4])
    for s in (a_ok, a_bad, b_ok):
        tasks.wait(s.id, s.app, timeout=60)

    def ids(*args: str) -> set[str]:
        result = limetask("list", *args, "-o", "json")
        assert result.exit_code == 0, result.output
        return {s["id"] for s in json.loads(result.stdout)}

    assert ids() == {a_ok.id, a_bad.id, b_ok.id}
    assert ids("--app", "app-a") == {a_ok.id, a_bad.id}
    assert ids("--app", "app-a", "--state", "FAILURE") == {a_bad.id}
    assert ids("--state", "success") == {a_ok.id, b_ok.id}
    assert ids("--app", "app-c") == set()
    table = limetask("list", "--app", "app-b")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "ATTEMPTS", "APP", "TASK"]
    assert lines[1].split() == [b_ok.id, SUCCESS, "1", "app-b", f"{T}.add"]
    bogus = limetask("list", "--state", "DONE")
    assert bogus.exit_code == 2 and "unknown state 'DONE'" in bogus.stderr


@pytest.mark.e2e
def test_cancel_and_cancel_finished(limetask: Run, tasks: TaskClient) -> None:
    slow = tasks.send(f"{T}.sleep", "my-app", [30])
    cancelled = limetask("cancel", slow.id, "my-app")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.startswith(slow.id)
    final = tasks.wait(slow.id, "my-app", timeout=60)
    assert final.status == FAILURE and final.error and final.error.reason == "Cancelled"
    again = limetask("cancel", slow.id, "my-app")
    assert again.exit_code == 2, again.output
    assert "TaskAlreadyFinishedError" in again.stderr and "already finished (FAILURE)" in again.stderr


@pytest.mark.e2e
def test_other_applications_tasks_are_not_found(limetask: Run, tasks: TaskClient) -> None:
    mine = tasks.send(f"{T}.add", "app-one", [1, 2])
    missing = "00000000-0000-0000-0000-000000000000"
    for command in ("status", "cancel", "wait"):
        other = limetask(command, mine.id, "app-two")
        absent = limetask(command, missing, "app-two")
        assert other.exit_code == absent.exit_code == 1, (command, other.output)
        assert other.stderr.replace(mine.id, "ID") == absent.stderr.replace(missing, "ID")
        assert "NotFoundError" in other.stderr


@pytest.mark.e2e
def test_send_refuses_bad_input_and_creates_nothing(limetask: Run, tasks: TaskClient) -> None:
    cases = [
        (["send", f"{T}.add", "my-app", "[1, 2"], "ARGS must be JSON"),
        (["send", f"{T}.add", "my-app", '{"a": 1}'], "ARGS must be a JSON array"),
        (["send", f"{T}.add", "my-app", "[1]", "--kwargs", "[2]"], "--kwargs must be a JSON object"),
        (["send", f"{T}.undecorated", "my-app"], "UnknownTaskError"),
        (["send", "os.system", "my-app", '["ls"]'], "UnknownTaskError"),
        (["send", f"{T}.add", "bad app", "[1, 2]"], "invalid application name"),
        (["send", f"{T}.add", "my-app", json.dumps(["x" * 40000])], "over the limit"),
    ]
    for args, fragment in cases:
        result = limetask(*args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (args, result.stderr)
    assert tasks.list() == []


@pytest.mark.e2e
@pytest.mark.broker
def test_events_while_a_task_runs(cluster: Cluster, tasks: TaskClient) -> None:
    app_name = f"cli-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([*CLI, "events", app_name, "--broker", broker_url(), "--count", "1",
                             "--timeout", "30", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        seen = ""
        while "listening on" not in seen:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the consumer did not start: {seen}"
            if select.select([proc.stderr], [], [], 0.5)[0]:
                seen += proc.stderr.readline()  # type: ignore[union-attr]
        assert f"lime.{app_name}" in seen and "guest:***@" in seen
        status = tasks.send(f"{T}.add", app_name, [40, 2])
        out, err = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    [line] = out.splitlines()
    event = json.loads(line)
    assert (event["id"], event["state"], event["result"], event["app"]) == (status.id, SUCCESS, 42, app_name)
    assert event["routing_key"] == f"core.task.{T}.add.success.v1"


@pytest.mark.broker
def test_broker_refusals_are_one_line(broker_proxy: Any, dead_kubeconfig: Path) -> None:
    """What RabbitMQ refuses (a channel closed, a login refused) is one line, as are reserved names."""
    import asyncio

    import aio_pika

    direct = f"limetask-test-direct-{uuid.uuid4().hex[:8]}"

    async def exchange(delete: bool) -> None:
        connection = await aio_pika.connect(broker_url())
        async with connection:
            channel = await connection.channel()
            if delete:
                await channel.exchange_delete(direct)
            else:
                await channel.declare_exchange(direct, aio_pika.ExchangeType.DIRECT)

    asyncio.run(exchange(delete=False))
    try:
        cases = [
            (["--exchange", direct, "--broker", broker_url()], "PRECONDITION_FAILED"),
            (["--exchange", "amq.direct", "--broker", broker_url()], "reserved"),
            (["--broker", broker_url().replace("guest:guest", "guest:wrong")], "ACCESS_REFUSED"),
        ]
        for args, fragment in cases:
            proc = run_cli("events", "my-app", "--timeout", "5", *args, kubeconfig=dead_kubeconfig)
            assert_one_line_error(proc, 2, fragment)
            assert "guest:guest@" not in proc.stderr and "guest:wrong@" not in proc.stderr
    finally:
        asyncio.run(exchange(delete=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.e2e
def test_web_serves_tasks(cluster: Cluster, namespace: str, tasks: TaskClient, tmp_path: Path) -> None:
    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text("my-app=s3cret\n")
    env = dict(os.environ, LIMETASK_KUBECONFIG=str(cluster.kubeconfig), LIMETASK_WEB_TOKENS_FILE=str(tokens))
    log = open(tmp_path / "web.log", "w+")
    proc = subprocess.Popen([*CLI, "web", "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace,
                             "--imports", T], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()
            try:
                return http_json("GET", f"{base}/healthz") == (200, {"status": "ok"})
            except OSError:
                return False
        wait_until(up, timeout=30, message="limetask web to answer")
        assert http_json("POST", f"{base}/v1/apps/my-app/tasks", {"task": f"{T}.add"})[0] == 401
        code, body = http_json("POST", f"{base}/v1/apps/my-app/tasks", {"task": f"{T}.add", "args": [20, 22]},
                               token="s3cret")
        assert code == 202, body
        final = tasks.wait(body["id"], "my-app", timeout=60)
        assert final.result == 42
        code, body = http_json("GET", f"{base}/v1/apps/my-app/tasks/{body['id']}", token="s3cret")
        assert (code, body["status"], body["result"]) == (200, SUCCESS, 42)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    text = (tmp_path / "web.log").read_text()
    assert (f"serving namespace {namespace} on http://127.0.0.1:{port} (applications: my-app; archive: none, "
            "live tasks only)") in text


# -- no cluster needed -------------------------------------------------------------------------

@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig that points nowhere: nothing that uses it may reach a cluster."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "u"}}],
    }))
    return kubeconfig


COMMANDS = [["send"], ["status"], ["wait"], ["list"], ["cancel"], ["run-local"], ["events"], ["operator"],
            ["web"], ["generate", "tasks"], ["queues"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_shows_an_example(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout and "limetask " in result.stdout


def test_top_level_help_lists_every_command() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ["send", "status", "wait", "list", "cancel", "run-local", "events", "operator", "web", "generate",
                 "queues"]:
        assert f" {name} " in result.stdout, name
    assert invoke("generate", "--help").exit_code == 0


def test_operator_help() -> None:
    result = invoke("operator", "--help")
    assert result.exit_code == 0, result.output
    assert "Run the operator" in result.stdout and "--all-namespaces" in result.stdout


def test_run_local_runs_without_a_cluster() -> None:
    env = {"LIMETASK_KUBECONFIG": "/nonexistent/kubeconfig"}
    ok = invoke("run-local", f"{T}.add", "my-app", "[1, 2]", env=env)
    assert ok.exit_code == 0, ok.output
    assert "SUCCESS" in ok.stdout and "result: 3" in ok.stdout
    as_json = invoke("run-local", f"{T}.get_lime_company", "my-app", "[5]", "-k", '{"props": []}', "-o", "json",
                     env=env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["result"] == "company 5 of my-app: updated 0 properties on 50 deals"
    failed = invoke("run-local", f"{T}.fail", "my-app", '["boom"]', "-o", "json", env=env)
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["error"] == {"type": "ValueError", "message": "boom", "reason": "TaskRaised"}


@pytest.mark.parametrize("args, fragment", [
    (["run-local", f"{T}.add", "my-app", "[1,"], "ARGS must be JSON"),
    (["run-local", f"{T}.add", "my-app", "1"], "ARGS must be a JSON array"),
    (["run-local", f"{T}.add", "my-app", "[1]", "-k", "b=2"], "--kwargs must be JSON"),
    (["run-local", f"{T}.add", "my-app", "[1]", "-k", "[2]"], "--kwargs must be a JSON object"),
    (["run-local", "os.system", "my-app", '["ls"]'], "UnknownTaskError"),
    (["run-local", f"{T}.undecorated", "my-app"], "is not a task"),
    (["run-local", "nodots", "my-app"], "invalid task name"),
    (["send", f"{T}.add", "my-app", "[1, 2"], "ARGS must be JSON"),  # before any cluster call
    (["events", "my-app", "--broker", "http://localhost/"], "must start with amqp://"),
    (["events", "my-app"], "no broker"),
    (["list", "--limit", "many"], "Invalid value for '--limit'"),
])
def test_bad_input_is_a_clear_error(args: list[str], fragment: str, dead_kubeconfig: Path) -> None:
    result = invoke(*args, env={"LIMETASK_KUBECONFIG": str(dead_kubeconfig), "LIMETASK_BROKER_URL": ""})
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr


NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there
DEEP_500, DEEP_5000 = "[" * 500 + "]" * 500, "[" * 5000 + "]" * 5000  # 5,000 is too deep for json.loads
HOSTILE = {
    "events bad app": (["events", "bad app", "--broker", NO_BROKER], "invalid application name"),
    "events amq.direct": (["events", "my-app", "--exchange", "amq.direct", "--broker", NO_BROKER], "reserved"),
    "events long pattern": (["events", "my-app", "-p", "x" * 300, "--broker", NO_BROKER], "longer than 255 bytes"),
    "events count 0": (["events", "my-app", "--count", "0", "--broker", NO_BROKER], "'--count'"),
    "events timeout nan": (["events", "my-app", "--timeout", "nan", "--broker", NO_BROKER], "'--timeout'"),
    "events no broker": (["events", "my-app", "--broker", NO_BROKER, "--timeout", "5"], "Connect call failed"),
    "send 500 deep": (["send", f"{T}.add", "my-app", DEEP_500], "deeper than 64 levels"),
    "send 5000 deep": (["send", f"{T}.add", "my-app", DEEP_5000], "deeper than 64 levels"),
    "send 5000 deep kwargs": (["send", f"{T}.add", "my-app", "[1]", "-k", f'{{"b": {DEEP_5000}}}'],
                              "deeper than 64 levels"),
    "run-local 500 deep": (["run-local", f"{T}.add", "my-app", DEEP_500], "deeper than 64 levels"),
    "run-local 5000 deep": (["run-local", f"{T}.add", "my-app", DEEP_5000], "deeper than 64 levels"),
    "send timeout -5": (["send", f"{T}.add", "my-app", "[1, 2]", "--wait", "--timeout", "-5"], "'--timeout'"),
    "wait timeout 0": (["wait", "some-id", "my-app", "--timeout", "0"], "'--timeout'"),
    "list limit -1": (["list", "--limit", "-1"], "'--limit'"),
    "list limit 0": (["list", "--limit", "0"], "'--limit'"),
    "list limit many": (["list", "--limit", "many"], "'--limit'"),
    "list bad queue": (["list", "--queued", "--queue", "Fast Lane"], "qos must be a queue name"),
    "send bad qos": (["send", f"{T}.add", "my-app", "[1, 2]", "--qos", "Fast Lane"],
                     "qos must be a queue name: lower-case letters, digits and '-'"),
    "send priority too high": (["send", f"{T}.add", "my-app", "[1, 2]", "--priority", "1001"],
                               "priority must be a whole number from -1000 to 1000"),
    "send priority not a number": (["send", f"{T}.add", "my-app", "[1, 2]", "--priority", "high"], "'--priority'"),
    "unknown option": (["list", "--no-such-option"], "No such option"),
    "status no cluster": (["status", "some-id", "my-app"], "unreachable"),
    "web log level": (["web", "--log-level", "loud"], "'--log-level'"),
    "web relative import": (["web", "--imports", "../etc"], "not a dotted module name"),
}


@pytest.mark.parametrize("args, fragment", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_one_line(args: list[str], fragment: str, dead_kubeconfig: Path) -> None:
    assert_one_line_error(run_cli(*args, kubeconfig=dead_kubeconfig), 2, fragment)


def test_web_refuses_bad_configuration(dead_kubeconfig: Path, tmp_path: Path) -> None:
    env = {"LIMETASK_KUBECONFIG": str(dead_kubeconfig), "LIMETASK_WEB_TOKENS_FILE": str(tmp_path / "missing")}
    result = invoke("web", env=env)
    assert result.exit_code == 2 and "cannot read the tokens" in result.stderr
    result = invoke("web", env={**env, "LIMETASK_WEB_TOKENS_FILE": "", "LIMETASK_WEB_TOKENS": '{"bad app": "x"}'})
    assert result.exit_code == 2 and "invalid application name" in result.stderr
    result = invoke("web", "--imports", "no_such_module_here", env={**env, "LIMETASK_WEB_TOKENS_FILE": ""})
    assert result.exit_code == 2 and "no_such_module_here" in result.stderr
    # The dashboard's platform tokens: a bad file is one line, not a traceback.
    result = invoke("web", env={**env, "LIMETASK_WEB_TOKENS_FILE": "",
                                "LIMETASK_WEB_PLATFORM_TOKENS_FILE": str(tmp_path / "missing-platform")})
    assert result.exit_code == 2 and "cannot read the tokens" in result.stderr and "missing-platform" in result.stderr
    result = invoke("web", env={**env, "LIMETASK_WEB_TOKENS_FILE": "", "LIMETASK_WEB_PLATFORM_TOKENS": "ops=two words"})
    assert result.exit_code == 2 and "LIMETASK_WEB_PLATFORM_TOKENS" in result.stderr


# -- queues, against a fake API (no cluster) ---------------------------------------------------

@pytest.fixture
def fake_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    """The commands' client talks to this fake instead of a cluster."""
    api = FakeCustomObjects()
    client = fake_client(tmp_path, api)
    monkeypatch.setattr(lime_task.cli.options, "task_client", lambda *args, **kwargs: client)
    return api


def ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_send_with_a_queue_and_priority(fake_api: FakeCustomObjects) -> None:
    result = invoke("send", f"{T}.add", "my-app", "[1, 2]", "--qos", "asap", "--priority", "-5")
    assert result.exit_code == 0, result.output
    spec = fake_api.created[0]["spec"]
    assert (spec["queue"], spec["priority"], spec["args"]) == ("asap", -5, [1, 2])
    assert result.stdout.split()[1:] == ["PENDING", f"{T}.add", "app=my-app", "attempts=0", "queue=asap",
                                         "priority=-5"]
    plain = invoke("send", f"{T}.add", "my-app", "[1, 2]", "-o", "json")
    assert "queue" not in fake_api.created[1]["spec"] and "priority" not in fake_api.created[1]["spec"]
    assert json.loads(plain.stdout)["queue"]["name"] == "default"


def test_status_of_a_waiting_task_says_where_it_stands(fake_api: FakeCustomObjects) -> None:
    fake_api.tasks = [live_task("t-1", queue="asap", waiting={"position": 3, "waiting": 7, "since": ago(65.2)}),
                      live_task("t-2", queue="nightly", waiting={"since": ago(5.2)}, reason="QueuePaused",
                                message="queue nightly has maxRunning 0")]
    waiting = invoke("list", "--queued", "-o", "json")
    assert [t["id"] for t in json.loads(waiting.stdout)] == ["t-1", "t-2"]
    first = invoke("status", "t-1", "my-app")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].endswith("queue=asap")
    assert lines[1] in ("  queued: position 3 of 7, waited 1m5s", "  queued: position 3 of 7, waited 1m6s")


def waiting_tasks() -> list[dict[str, Any]]:
    """In the order the API lists them (by name), not the order they start in."""
    return [
        live_task("t-a", queue="background", waiting={"position": 2, "waiting": 2, "since": ago(3600 * 3 + 120.2)}),
        live_task("t-b", queue="asap", priority=5, app="other-app", waiting={"position": 2, "waiting": 2,
                                                                             "since": ago(30.2)}),
        live_task("t-c", queue="nightly", waiting={"since": ago(125.2)}, reason="QueueNotFound",
                  message="no LimeTaskQueue named nightly:\ncreate it"),
        live_task("t-d", queue="asap", waiting={"position": 1, "waiting": 2, "since": ago(90.2)}),
        live_task("t-e", queue="background", waiting={"position": 1, "waiting": 2, "since": ago(86400 * 2.2)}),
        live_task("t-f", queue="asap", state="STARTED", admitted=True),
        live_task("t-g", state="SUCCESS"),
    ]


def test_list_queued_by_queue_and_position(fake_api: FakeCustomObjects) -> None:
    fake_api.tasks = waiting_tasks()
    result = invoke("list", "--queued")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["QUEUE", "POSITION", "WAITING", "PRIORITY", "WAITED", "ID", "APP", "TASK"]
    cells = [row.split()[:7] for row in rows]
    assert cells == [
        ["asap", "1", "2", "0", cells[0][4], "t-d", "my-app"],
        ["asap", "2", "2", "5", cells[1][4], "t-b", "other-app"],
        ["background", "1", "2", "0", "2d4h", "t-e", "my-app"],
        ["background", "2", "2", "0", "3h2m", "t-a", "my-app"],
        ["nightly", "-", "-", "0", cells[4][4], "t-c", "my-app"],
    ]
    assert cells[0][4] in ("1m30s", "1m31s") and cells[1][4] in ("30s", "31s") and cells[4][4] in ("2m5s", "2m6s")
    # Why a task waits, when it is not merely its turn: on its own line of the table, in one line.
    assert rows[4].endswith(f"{T}.add  (QueueNotFound: no LimeTaskQueue named nightly: create it)")
    assert all("(" not in row for row in rows[:4])


def test_list_queued_filters_by_queue_and_application(fake_api: FakeCustomObjects) -> None:
    fake_api.tasks = waiting_tasks()
    asap = invoke("list", "--queued", "--queue", "asap", "-o", "json")
    assert [t["id"] for t in json.loads(asap.stdout)] == ["t-d", "t-b"]
    mine = invoke("list", "--queued", "--app", "my-app", "-o", "json")
    assert [t["id"] for t in json.loads(mine.stdout)] == ["t-d", "t-e", "t-a", "t-c"]
    assert json.loads(mine.stdout)[0]["queue"] == {
        "name": "asap", "priority": 0, "queued": True, "reason": "Waiting", "message": None, "position": 1,
        "waiting": 2, "since": json.loads(mine.stdout)[0]["queue"]["since"], "updated_at": None}
    every = invoke("list", "--queue", "asap", "-o", "json")  # not only the waiting ones
    assert [t["id"] for t in json.loads(every.stdout)] == ["t-b", "t-d", "t-f"]
    empty = invoke("list", "--queued", "--queue", "default")
    assert empty.exit_code == 0 and empty.stdout.splitlines()[1:] == []


def test_queues_lists_limits_and_counts(fake_api: FakeCustomObjects) -> None:
    fake_api.queues = [
        {"metadata": {"name": "background"}, "spec": {"maxRunning": 2, "maxRunningPerNamespace": 2,
                                                      "maxRunningPerApp": 1, "admission": "Operator",
                                                      "maxStartsPerSecond": 0.5, "maxPriority": 10},
         "status": {"running": 2, "waiting": 3, "oldestWaitingSince": ago(3720.2)}},
        {"metadata": {"name": "asap"}, "spec": {"admission": "Kueue"}, "status": {"running": 0, "waiting": 0}},
        {"metadata": {"name": "new"}},
        {"metadata": {"name": "team-a"}, "spec": {"namespaceSelector": {
            "matchLabels": {"team": "a"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                {"key": "frozen", "operator": "DoesNotExist"}, {"key": "limetask.io/tenant", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]}]}}},
        {"metadata": {"name": "everyone"}, "spec": {"namespaceSelector": {}}},
    ]
    result = invoke("queues")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "MAX", "RUNNING", "PER", "NAMESPACE", "PER", "APP", "STARTS/S", "MAX", "PRIO",
                              "RUNNING", "WAITING", "ADMISSION", "OLDEST", "WAITING", "NAMESPACES"]
    assert [row.split() for row in rows] == [
        ["asap", "-", "-", "-", "-", "-", "0", "0", "Kueue", "-", "all"],
        ["background", "2", "2", "1", "0.5", "10", "2", "3", "Operator", "1h2m", "all"],
        ["everyone", "-", "-", "-", "-", "-", "-", "-", "-", "-", "all"],
        ["new", "-", "-", "-", "-", "-", "-", "-", "-", "-", "all"],
        ["team-a", "-", "-", "-", "-", "-", "-", "-", "-", "-",
         "team=a,tier", "in", "(gold,silver),!frozen,limetask.io/tenant,env", "notin", "(dev)"],
    ]
    as_json = json.loads(invoke("queues", "-o", "json").stdout)
    assert as_json[1] == {"name": "background", "max_running": 2, "max_running_per_namespace": 2,
                          "max_running_per_app": 1, "max_starts_per_second": 0.5, "max_priority": 10,
                          "admission": "Operator", "running": 2, "waiting": 3,
                          "oldest_waiting_since": fake_api.queues[0]["status"]["oldestWaitingSince"],
                          "namespace_selector": None}
    assert as_json[3] == {"name": "new", "max_running": None, "max_running_per_namespace": None,
                          "max_running_per_app": None, "max_starts_per_second": None, "max_priority": None,
                          "admission": None, "running": None, "waiting": None,
                          "oldest_waiting_since": None, "namespace_selector": None}
    assert as_json[4]["namespace_selector"] == fake_api.queues[3]["spec"]["namespaceSelector"]
    assert as_json[2]["namespace_selector"] == {}


@pytest.mark.parametrize("status, fragment", [
    (404, "queues are not installed in this cluster (no limetaskqueues.limetask.io resource): install the CRDs"),
    (403, "not allowed to list limetaskqueues.limetask.io (cluster-scoped)"),
])
def test_queues_without_the_crd_or_the_right_is_one_line(fake_api: FakeCustomObjects, status: int,
                                                         fragment: str) -> None:
    fake_api.queues_error = api_error(status, "the server could not find the requested resource")
    result = invoke("queues")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ClusterError: ") and fragment in lines[0], lines


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (59, "59s"), (60, "1m0s"), (125, "2m5s"), (599, "9m59s"),
                                            (600, "10m"), (3599, "59m"), (3600, "1h0m"), (3720, "1h2m"),
                                            (86399, "23h59m"), (86400 * 3 + 3600 * 4 + 5, "3d4h"), (-5, "0s")])
def test_ages_as_kubectl_shows_them(seconds: int, shown: str) -> None:
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert age(now - dt.timedelta(seconds=seconds), now) == shown
    assert age(None, now) == "-"


@pytest.mark.parametrize("options, words", [
    (["--countdown", "60", "--expires", "2"], "is not after the task's start"),
    (["--countdown", "nan"], "countdown must be a finite number of seconds"),
    (["--eta", "0001-01-01T00:00:00Z"], "eta 0001-01-01T00:00:00Z is before 1970"),
])
def test_send_refuses_times_by_the_clients_rule_and_creates_nothing(
        fake_api: FakeCustomObjects, options: list[str], words: str) -> None:
    result = invoke("send", f"{T}.add", "my-app", "[1, 2]", *options)
    assert result.exit_code != 0 and words in result.stderr, result.output
    assert fake_api.created == []


def test_list_without_the_crd_says_it_is_not_installed(fake_api: FakeCustomObjects) -> None:
    fake_api.tasks_error = api_error(404, "the server could not find the requested resource")
    for args in (["list"], ["list", "--app", "my-app"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "the LimeTask resource is not installed in this cluster" in lines[0], lines
        assert "install the CRDs" in lines[0]


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    """`limetask list | head -5`: the reader has gone, so the command stops, as Unix tools do,
    without a word on stderr (exit 141, as a process killed by SIGPIPE)."""
    script = tmp_path / "many.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "import lime_task.cli.options as options\n"
        "from lime_task.cli import main\n"
        "from tests.unit.fake_api import FakeCustomObjects, fake_client, live_task\n"
        "api = FakeCustomObjects([live_task(f't-{i:05}', app='my-app') for i in range(20000)])\n"
        "client = fake_client(Path(sys.argv[1]), api)\n"
        "options.task_client = lambda *args, **kwargs: client\n"
        "sys.argv = ['limetask', *sys.argv[2:]]\n"
        "sys.exit(main())\n")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(200)
    proc.stdout.close()  # as `head` does once it has its lines
    stderr = proc.stderr.read().decode()
    assert proc.wait(120) == 141, stderr
    assert first.startswith(b"ID") and stderr == "", stderr


def test_send_with_memory_on_oom_and_the_memory_each_attempt_had(fake_api: FakeCustomObjects) -> None:
    result = invoke("send", f"{T}.add", "my-app", "[1, 2]", "--memory-on-oom", "1Gi", "--memory-on-oom", "2Gi")
    assert result.exit_code == 0, result.output
    assert fake_api.created[0]["spec"]["memoryOnOOM"] == ["1Gi", "2Gi"]
    refused = invoke("send", f"{T}.add", "my-app", "[1, 2]", "--memory-on-oom", "2Gi", "--memory-on-oom", "1Gi")
    assert refused.exit_code != 0 and "strictly increasing" in refused.output and len(fake_api.created) == 1
    done = live_task("t-1", state="SUCCESS")
    done["status"]["history"] = [
        {"attempt": 1, "outcome": "OOMKilled", "reason": "OOMKilled", "memory": "512Mi"},
        {"attempt": 2, "outcome": "SUCCESS", "reason": "Succeeded", "memory": "1Gi"}]
    fake_api.tasks = [done]
    shown = invoke("status", "t-1", "my-app")
    assert shown.exit_code == 0, shown.output
    assert "  memory: attempt 1 512Mi (OOMKilled), attempt 2 1Gi (SUCCESS)" in shown.stdout.splitlines()
