"""Hostile tenants, end to end: many teams on one installation, one of them misbehaving.

Each test puts one hostile tenant beside a well-behaved one, and asserts the good tenant's
outcomes: its tasks finish with SUCCESS and its get_status answers, within the test's timeouts.
The hostile tenants: the flood (hundreds of tasks into a limited queue), the priority abuser
(priority 1000 in a queue with a ceiling), the retrying client (the same POST with an
Idempotency-Key, again and again), the stream hog (more event streams than a token may hold)
and the unpublishable exchange (an application whose events no exchange takes).

The queue tenants have a namespace each (the good tenant's is made here, beside the test's
own); the HTTP endpoint serves one namespace, where the tenants are applications with their
own tokens. `make bench` (bench/tenants.py) measures the good tenant's reaction beside the same
hostile tenants.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import test_e2e_dashboard
import test_e2e_queues
from conftest import Cluster, fresh_namespace, wait_until
from test_e2e_dashboard import A, B, Web
from test_e2e_dead_letter import DEAD_LETTER, dead_letters_of, refuse_events_of, remove_exchange_and_queue
from test_e2e_events import Collector
from test_e2e_queues import PodWatch, all_final, queued

from lime_task import SUCCESS, TaskClient
from lime_task.server.limits import Limits

pytestmark = pytest.mark.e2e

T = "acme_solution.tasks.lime"
GOOD_APP = "good-app"

# The fixtures of the queue tests (a watch of the namespace's pods, LimeTaskQueues made for the
# test) and of the dashboard's (the HTTP endpoint for the test's namespace).
pods = test_e2e_queues.pods
queues = test_e2e_queues.queues
web = test_e2e_dashboard.web


@pytest.fixture
def good_namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """The well-behaved tenant's own namespace, beside the test's (the hostile tenant's)."""
    with fresh_namespace(api_client, f"good-{request.node.name}") as name:
        yield name


@pytest.fixture
def good(cluster: Cluster, good_namespace: str, running_operator: Any) -> TaskClient:
    """The well-behaved tenant's client, in its own namespace."""
    return TaskClient(kubeconfig=cluster.kubeconfig, namespace=good_namespace)


def good_tenant_is_served(good: TaskClient, sent: list[Any], app: str = GOOD_APP, timeout: float = 180) -> None:
    """The good tenant's outcomes: each task ends with SUCCESS (all_final reads them with
    get_status, which must answer all along)."""
    found = all_final(good, [s.id for s in sent], app, timeout=timeout)
    assert {i: s.status for i, s in found.items()} == {s.id: SUCCESS for s in sent}, found


def send_many(tasks: TaskClient, count: int, *args: Any, **kwargs: Any) -> list[Any]:
    """`count` tasks sent at once from a few threads, as a client in a loop with no brakes would."""
    with cf.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: tasks.send(*args, **kwargs), range(count)))


# -- the flood --------------------------------------------------------------------------------

def test_a_flooding_namespace_keeps_to_its_limit_and_the_good_tenant_runs(
        tasks: TaskClient, good: TaskClient, pods: PodWatch, queues: Any) -> None:
    """300 tasks from one namespace into a queue of 3 with 2 per namespace: the flood never holds
    more than its 2 slots, and the good tenant's 3 tasks, sent after it, start and finish."""
    q = queues(maxRunning=3, maxRunningPerNamespace=2)
    flood = send_many(tasks, 300, f"{T}.sleep", "flood", [1], qos=q)
    wait_until(lambda: queued(tasks, flood[-1].id, "flood"), timeout=120, message="the flood to wait in the queue")
    sent = [good.send(f"{T}.add", GOOD_APP, [i, 1], qos=q) for i in range(3)]
    good_tenant_is_served(good, sent)
    # The flood is still there, held to its limit all along, and it did use it.
    still = sum(1 for s in flood[-50:] if queued(tasks, s.id, "flood"))
    assert still == 50, f"only {still} of the flood's last 50 tasks still wait: the flood was not held back"
    assert pods.most == 2, f"the flooding namespace ran {pods.most} tasks at once, with maxRunningPerNamespace 2"


# -- the priority abuser ----------------------------------------------------------------------

def test_a_priority_abuser_counts_at_the_ceiling_and_the_good_tenant_gets_its_turn(
        tasks: TaskClient, good: TaskClient, queues: Any) -> None:
    """Six tasks of priority 1000 in a queue of 1 with maxPriority 0, then the good tenant's one of
    priority 0: at the ceiling they are one class, and fair share starts the good task second,
    not after the abuser's backlog."""
    q = queues(maxRunning=0, maxPriority=0)  # paused while the line forms
    hostile = [tasks.send(f"{T}.sleep", "abuser", [2], qos=q, priority=1000) for _ in range(6)]
    mine = good.send(f"{T}.sleep", GOOD_APP, [3], qos=q, priority=0)
    wait_until(lambda: all(queued(tasks, s.id, "abuser") for s in hostile) and queued(good, mine.id, GOOD_APP),
               timeout=60, message="all to wait in the paused queue")
    held = queued(tasks, hostile[0].id, "abuser")
    assert held.queue_message.endswith(f"; its priority 1000 counts as 0 here (maxPriority of queue {q})"), \
        held.queue_message
    queues.patch(q, maxRunning=1)

    def hostile_started_when_mine_started() -> tuple[int] | None:
        if queued(good, mine.id, GOOD_APP):
            return None
        # Mine holds the queue's one slot for 3 s: no hostile task starts meanwhile.
        return (sum(1 for s in hostile if not queued(tasks, s.id, "abuser")),)

    (before,) = wait_until(hostile_started_when_mine_started, timeout=120, message="the good task to start")
    assert before <= 1, f"{before} of the abuser's 6 tasks started before the good tenant's one"
    good_tenant_is_served(good, [mine])


# -- the HTTP endpoint: the retrying client, the stream hog ------------------------------------

def bearer(web: Web, app: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {web.tokens[app]}"}


def http_task_is_served(http: httpx.Client, web: Web, app: str) -> None:
    """A task started through the endpoint ends with SUCCESS, its status read through it."""
    created = http.post(f"/v1/apps/{app}/tasks", headers=bearer(web, app), json={"task": f"{T}.add", "args": [2, 3]})
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]

    def final() -> dict[str, Any] | None:
        answer = http.get(f"/v1/apps/{app}/tasks/{task_id}", headers=bearer(web, app))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["status"] in ("SUCCESS", "FAILURE") else None

    done = wait_until(final, timeout=120, interval=0.5, message=f"{app}'s task to finish")
    assert (done["status"], done["result"]) == (SUCCESS, 5), done


@pytest.mark.archive
def test_a_retrying_client_starts_one_task_and_the_good_tenant_runs(web: Web, namespace: str, cluster: Cluster,
                                                                    running_operator: Any) -> None:
    """The same POST with one Idempotency-Key, five times at once (a client retrying on its own
    timeouts): one LimeTask, one id; the first answer is 202, the others replay it."""
    key = f"order-{uuid.uuid4()}"
    body = {"task": f"{T}.add", "args": [20, 22]}
    with httpx.Client(base_url=web.url, timeout=30) as http:
        def post(_: int) -> httpx.Response:
            return http.post(f"/v1/apps/{A}/tasks", headers={**bearer(web, A), "Idempotency-Key": key}, json=body)

        with cf.ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(post, range(5)))
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202], [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert all(a.headers.get("idempotent-replayed") == "true" for a in answers if a.status_code == 200)
        http_task_is_served(http, web, B)
    tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
    assert [t.id for t in tasks.list(A)] == [answers[0].json()["id"]]
    final = tasks.wait(answers[0].json()["id"], A, timeout=120)
    assert (final.status, final.result) == (SUCCESS, 42)


@pytest.mark.archive
def test_a_stream_hog_is_refused_past_its_cap_and_the_good_tenant_streams(web: Web, running_operator: Any) -> None:
    """A token that opens more event streams than its cap (LIMETASK_WEB_STREAMS_PER_TOKEN) is
    refused with 429 TooManyStreams, saying so; another token's stream and requests answer."""
    cap = Limits.from_env().streams_per_token
    with httpx.Client(base_url=web.url, timeout=30) as http, contextlib.ExitStack() as held:
        for _ in range(cap):
            stream = held.enter_context(http.stream("GET", "/v1/dashboard/stream", headers=bearer(web, A)))
            assert stream.status_code == 200
        refused = http.get("/v1/dashboard/stream", headers=bearer(web, A))
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "TooManyStreams" and refused.headers["retry-after"] == "5"
        assert f"this token has {cap} event streams open, its limit" in refused.json()["detail"]
        mine = held.enter_context(http.stream("GET", "/v1/dashboard/stream", headers=bearer(web, B)))
        assert mine.status_code == 200
        http_task_is_served(http, web, B)


# -- the unpublishable exchange ---------------------------------------------------------------

@pytest.mark.broker
def test_an_unpublishable_exchange_dead_letters_its_own_events_and_the_good_tenants_arrive(
        tasks: TaskClient, good: TaskClient, cluster: Cluster, namespace: str) -> None:
    """An application whose exchange refuses every event (made a fanout: the operator's topic
    declaration is refused): its tasks settle, their events dead-lettered; the good tenant's
    events arrive on its own exchange meanwhile."""
    app, good_app = (f"{who}-{uuid.uuid4().hex[:10]}" for who in ("app", "good"))
    dead_letters = f"dead-letters-{app}"
    asyncio.run(refuse_events_of(app, dead_letters))
    collector = Collector(good_app)
    try:
        hostile = [tasks.send(f"{T}.add", app, [i, 1]) for i in range(3)]
        sent = [good.send(f"{T}.add", good_app, [i, 2]) for i in range(3)]
        good_tenant_is_served(good, sent, good_app)
        wait_until(lambda: {f"{s.id}.SUCCESS" for s in sent} <= collector.ids(), timeout=60,
                   message="the good tenant's events")

        def settled() -> dict[str, Any] | None:
            found = {}
            for s in hostile:
                raw = cluster.run_kubectl("get", "lt", s.id, "-o", "jsonpath={.status.event}",
                                          namespace=namespace).stdout
                event = json.loads(raw) if raw else {}
                if not event.get("confirmed"):
                    return None
                found[s.id] = event
            return found

        events = wait_until(settled, timeout=120, interval=1, message="the hostile tasks to settle")
        assert {i: (e["deadLetter"]["exchange"], e["deadLetter"]["reason"]) for i, e in events.items()} == {
            s.id: (DEAD_LETTER, "Refused") for s in hostile}
        dead: list[Any] = []

        def drained() -> bool:
            dead.extend(asyncio.run(dead_letters_of(app, dead_letters)))
            return len(dead) >= 3

        wait_until(drained, timeout=60, interval=1, message="the hostile events in the dead-letter queue")
        assert sorted(body["id"] for body, _, _ in dead) == sorted(s.id for s in hostile)
    finally:
        collector.stop()
        asyncio.run(remove_exchange_and_queue(app, dead_letters))
