"""Tenants (admission/tenancy.py): a LimeTaskQueue's namespaceSelector names the namespaces that may
use it. A task of another namespace waits with reason QueueForbidden, out of the queue's line (no
slot, no place, no part in fair share), until its namespace's labels or the selector change; the
operator's whole path, with its watch of Namespaces, at the end."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest
from limetask_operator.admission import QUEUE_FORBIDDEN, WAITING, Admission, Admitted, Waiting
from limetask_operator.caches import Caches
from limetask_operator.kube import KubeError
from limetask_operator.model import JobView
from limetask_operator.reconciler import Reconciler
from limetask_operator.settings import OperatorSettings

TEAM_A = {"matchLabels": {"team": "a"}}


class Clock:
    def __init__(self, now: float = 1_800_003_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(name: str, ns: str = "ns-a", app: str = "app", queue: str = "q", priority: int = 0,
         status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "1",
                         "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {"task": "pkg.tasks.t", "app": app, "queue": queue, "priority": priority},
            "status": status or {}}


def queue(name: str = "q", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": spec}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


class Harness:
    """An Admission over real caches, its namespaces listed (ns-a labelled team=a, ns-b not)."""

    def __init__(self, listed: bool = True, **spec: Any) -> None:
        self.clock = Clock()
        self.caches = Caches()
        self.enqueued: list[tuple[str, str]] = []
        self.adm = Admission(None, self.caches, self.enqueued.append,  # type: ignore[arg-type]
                             lambda k, d: None, rate=0, burst=1000, clock=self.clock)
        self.adm.queue_event("ADDED", queue(**spec))
        for ns in (namespace("ns-a", team="a"), namespace("ns-b")):
            self.adm.namespace_event("LISTED", ns)
        if listed:
            self.list_namespaces()

    def list_namespaces(self) -> None:
        self.adm.listed_namespaces({("", n) for n in self.adm.tenancy.labels})

    def ask(self, b: dict[str, Any], attempt: int = 1) -> Admitted | Waiting:
        return self.adm.admit(self.caches.put_task(b, listed=True), attempt)

    def again(self, name: str, ns: str) -> Admitted | Waiting:
        return self.adm.admit(self.caches.tasks[(ns, name)], 1)

    def start_job(self, name: str, ns: str) -> None:
        self.caches.jobs.setdefault((ns, name), {})[f"{name}-1"] = JobView(f"{name}-1", name, 1,
                                                                           task_uid=f"uid-{name}")


def test_a_task_of_a_namespace_the_selector_does_not_match_waits_with_queue_forbidden() -> None:
    h = Harness(namespaceSelector=TEAM_A)
    assert isinstance(h.ask(body("a1", ns="ns-a")), Admitted)
    held = h.ask(body("b1", ns="ns-b"))
    assert isinstance(held, Waiting) and held.reason == QUEUE_FORBIDDEN and held.queue == "q"
    assert held.position is None and held.waiting == 0 and held.since == "2027-01-15T08:00:00Z"
    assert held.message == (
        "namespace ns-b may not use queue q: its labels do not match LimeTaskQueue q's namespaceSelector "
        "(team=a); label the namespace so that it matches (kubectl get namespaces -l 'team=a' lists "
        "those that do), or send the task to another queue")
    # Free slots do not admit it: it is in no line, and no pass hands it out.
    assert h.adm.entries == {} and h.adm.lines == {} and h.adm.dispatch() == 0
    assert h.adm.grants.keys() == {("ns-a", "a1")}
    again = h.again("b1", "ns-b")
    assert isinstance(again, Waiting) and again.reason == QUEUE_FORBIDDEN and again.since == held.since


def test_without_a_selector_or_with_an_empty_one_every_namespace_may_use_the_queue() -> None:
    for spec in ({}, {"namespaceSelector": {}}):
        h = Harness(**spec)
        assert isinstance(h.ask(body("b1", ns="ns-b")), Admitted), spec
        assert isinstance(h.ask(body("x1", ns="not-seen-yet")), Admitted), spec
    h = Harness(listed=False)  # no selector: the namespaces' listing is not waited for
    assert isinstance(h.ask(body("b1", ns="ns-b")), Admitted)


def test_forbidden_tasks_hold_no_place_nor_slot_and_do_not_block_the_allowed() -> None:
    h = Harness(namespaceSelector=TEAM_A, maxRunning=1)
    for n in range(5):  # older and of higher priority than the allowed ones
        assert h.ask(body(f"b{n}", ns="ns-b", priority=100)).reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    assert isinstance(h.ask(body("a1", ns="ns-a")), Admitted)
    second = h.ask(body("a2", ns="ns-a"))
    assert isinstance(second, Waiting) and second.reason == WAITING
    assert "position 1 of 1" in second.message  # the five of ns-b are not ahead, nor counted
    assert len(h.adm.lines["q"]) == 1 and len(h.adm.tenancy.shut) == 5
    h.start_job("a1", "ns-a")
    h.caches.jobs[("ns-a", "a1")]["a1-1"] = JobView("a1-1", "a1", 1, complete=True, task_uid="uid-a1")
    assert h.adm.dispatch() == 1 and ("ns-a", "a2") in h.adm.grants  # the slot goes to a2, not b*


def test_labelling_the_namespace_admits_its_tasks_without_a_restart() -> None:
    h = Harness(namespaceSelector=TEAM_A)
    assert h.ask(body("b1", ns="ns-b")).reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    h.enqueued.clear()
    h.adm.namespace_event("MODIFIED", namespace("ns-c", team="a"))  # another namespace: b1 is not asked again
    assert h.enqueued == []
    h.adm.namespace_event("MODIFIED", namespace("ns-b", team="a"))
    assert h.enqueued == [("ns-b", "b1")] and h.adm.tenancy.shut == {}
    assert isinstance(h.again("b1", "ns-b"), Admitted)


def test_a_namespace_that_stops_matching_keeps_its_running_tasks_and_its_waiting_ones_leave_the_line() -> None:
    h = Harness(namespaceSelector=TEAM_A, maxRunning=1)
    assert isinstance(h.ask(body("a1", ns="ns-a")), Admitted)
    h.start_job("a1", "ns-a")
    assert h.ask(body("a2", ns="ns-a")).reason == WAITING  # type: ignore[union-attr]
    h.enqueued.clear()
    h.adm.namespace_event("MODIFIED", namespace("ns-a", team="b"))
    # The waiting one leaves the line at once (no pass can admit it meanwhile) and is told why.
    assert h.adm.lines == {} and set(h.adm.tenancy.shut) == {("ns-a", "a2")}
    assert h.enqueued == [("ns-a", "a2")]
    assert h.again("a2", "ns-a").reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    # The running one goes on, and still holds its slot.
    assert h.adm.count_running().queue["q"] == 1
    h.caches.jobs[("ns-a", "a1")]["a1-1"] = JobView("a1-1", "a1", 1, complete=True, task_uid="uid-a1")
    assert h.adm.dispatch() == 0 and h.adm.grants == {}


def test_a_changed_selector_regroups_its_queue_only() -> None:
    h = Harness(namespaceSelector=TEAM_A)
    h.adm.queue_event("ADDED", queue("other", namespaceSelector=TEAM_A))
    assert h.ask(body("b1", ns="ns-b")).reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    assert h.ask(body("b2", ns="ns-b", queue="other")).reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    h.enqueued.clear()
    h.adm.queue_event("MODIFIED", queue(namespaceSelector={"matchExpressions": [
        {"key": "team", "operator": "NotIn", "values": ["c"]}]}))
    assert h.enqueued == [("ns-b", "b1")]
    assert isinstance(h.again("b1", "ns-b"), Admitted)
    assert set(h.adm.tenancy.shut) == {("ns-b", "b2")}
    # And back: a waiting task of a namespace the new selector leaves out is held out.
    assert h.ask(body("b3", ns="ns-b", queue="other")).reason == QUEUE_FORBIDDEN  # type: ignore[union-attr]
    h.adm.queue_event("MODIFIED", queue("other"))  # the selector removed: every namespace may
    assert isinstance(h.again("b2", "ns-b"), Admitted) and h.adm.tenancy.shut == {}


def test_a_queue_that_narrows_its_selector_holds_out_its_waiting_tasks_of_other_namespaces() -> None:
    h = Harness(maxRunning=0)  # paused: everyone waits in line
    for n, ns in (("a1", "ns-a"), ("b1", "ns-b"), ("b2", "ns-b")):
        h.ask(body(n, ns=ns))
    assert len(h.adm.lines["q"]) == 3
    h.enqueued.clear()
    h.adm.queue_event("MODIFIED", queue(maxRunning=0, namespaceSelector=TEAM_A))
    assert sorted(h.enqueued) == [("ns-b", "b1"), ("ns-b", "b2")]
    assert list(h.adm.lines["q"].members) == [("ns-a", "a1")]


def test_no_slot_before_the_namespaces_are_listed_then_the_forbidden_leave_the_line() -> None:
    h = Harness(listed=False, namespaceSelector=TEAM_A)
    assert not h.adm.decidable("q") and h.adm.decidable("open")
    first = h.ask(body("a1", ns="ns-a"))
    assert isinstance(first, Waiting) and first.reason == WAITING  # not known yet: in line, no slot
    h.ask(body("b1", ns="ns-b"))
    assert h.adm.dispatch() == 0
    h.enqueued.clear()
    h.list_namespaces()
    assert h.enqueued == [("ns-b", "b1")] and list(h.adm.lines["q"].members) == [("ns-a", "a1")]
    assert h.adm.dispatch() == 1 and ("ns-a", "a1") in h.adm.grants


def test_a_restarted_operator_holds_out_the_tasks_its_status_says_were_forbidden() -> None:
    waiting = {"state": "PENDING", "attempts": 0, "conditions": [
        {"type": "Queued", "status": "True", "reason": QUEUE_FORBIDDEN, "message": "..."}],
        "queue": {"name": "q", "attempt": 1, "waiting": 0, "since": "2027-01-15T08:30:00Z"}}
    h = Harness(namespaceSelector=TEAM_A)
    h.caches.put_task(body("b1", ns="ns-b", status=waiting), listed=True)
    h.caches.put_task(body("a1", ns="ns-a", status=copy.deepcopy(waiting)), listed=True)
    assert h.adm.seed() == 1
    assert list(h.adm.entries) == [("ns-a", "a1")] and list(h.adm.tenancy.shut) == [("ns-b", "b1")]
    held = h.again("b1", "ns-b")
    assert isinstance(held, Waiting) and held.since == "2027-01-15T08:30:00Z"  # its wait goes on, not anew


def test_a_selector_that_is_not_one_admits_no_namespace_and_says_so() -> None:
    h = Harness(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]})
    held = h.ask(body("a1", ns="ns-a"))
    assert isinstance(held, Waiting) and held.reason == QUEUE_FORBIDDEN
    assert held.message.startswith("LimeTaskQueue q has a namespaceSelector that is not valid "
                                   "(namespaceSelector.matchExpressions[0].operator must be one of")
    assert held.message.endswith("fix its namespaceSelector (kubectl edit ltq q)")


def test_namespaces_that_cannot_be_read_hold_out_a_selecting_queue_only() -> None:
    h = Harness(listed=False, namespaceSelector=TEAM_A)
    h.adm.queue_event("ADDED", queue("open"))
    h.adm.namespaces_unreadable("namespaces cannot be listed: KubeError: 403 forbidden")
    held = h.ask(body("a1", ns="ns-a"))
    assert isinstance(held, Waiting) and held.reason == QUEUE_FORBIDDEN
    assert "the operator cannot read namespaces (namespaces cannot be listed: KubeError: 403 forbidden)" in \
        held.message and "grant its ServiceAccount list and watch on namespaces" in held.message
    assert isinstance(h.ask(body("o1", ns="ns-b", queue="open")), Admitted)
    # It may read them again: once listed, the selector decides.
    h.enqueued.clear()
    h.adm.namespaces_unreadable(None)
    assert h.enqueued == [] and not h.adm.decidable("q")
    h.list_namespaces()
    assert h.enqueued == [("ns-a", "a1")] and isinstance(h.again("a1", "ns-a"), Admitted)


def test_leaving_forgets_a_held_out_task() -> None:
    h = Harness(namespaceSelector=TEAM_A)
    h.ask(body("b1", ns="ns-b"))
    h.adm.leave(("ns-b", "b1"))
    assert h.adm.tenancy.shut == {} and h.adm.tenancy.by_namespace == {} and h.adm.tenancy.by_queue == {}


def test_a_label_change_costs_the_tasks_of_that_namespace_not_every_waiting_one() -> None:
    """Thousands held out of one namespace and thousands waiting from others: a pass and a label
    change of an unrelated namespace stay cheap (a scan of every waiting task would not)."""
    h = Harness(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Exists"}]}, maxRunning=0)
    for n in range(3000):
        h.ask(body(f"a{n}", ns="ns-a", app=f"app{n % 50}"))
        h.ask(body(f"b{n}", ns="ns-b", app=f"app{n % 50}"))
    assert len(h.adm.lines["q"]) == 3000 and len(h.adm.tenancy.shut) == 3000
    h.enqueued.clear()
    started = time.perf_counter()
    for i in range(200):
        h.adm.namespace_event("MODIFIED", namespace(f"ns-x{i}", team="x"))
    spent = time.perf_counter() - started
    assert h.enqueued == [] and spent < 0.05, spent
    h.adm.namespace_event("MODIFIED", namespace("ns-b", team="b"))
    assert len(h.enqueued) == 3000 and h.adm.tenancy.shut == {}


# -- the operator's whole path ------------------------------------------------------------------

TASK: dict[str, Any] = {
    "apiVersion": "limetask.io/v1alpha1", "kind": "LimeTask",
    "metadata": {"name": "t1", "namespace": "ns-b", "uid": "uid-t1", "resourceVersion": "5", "generation": 1,
                 "creationTimestamp": "2027-01-15T08:00:00Z"},
    "spec": {"task": "acme_solution.tasks.lime.add", "app": "my-app", "args": [1, 2], "queue": "q"},
    "status": {},
}


class Kube:
    """The API as the operator's watches and reconciles use it: listings (namespaces refused with 403
    when `namespaces_forbidden`), status writes and Job creations recorded; no watch event ever comes."""

    server = "https://fake"

    def __init__(self, namespaces_forbidden: bool = False) -> None:
        self.namespaces_forbidden = namespaces_forbidden
        self.calls: list[tuple[str, str, Any]] = []
        self.stored = copy.deepcopy(TASK)

    async def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        if method == "GET" and path == "/api/v1/namespaces":
            if self.namespaces_forbidden:
                raise KubeError(403, 'namespaces is forbidden: User "op" cannot list resource "namespaces"', "GET",
                                path)
            return {"metadata": {"resourceVersion": "1"}, "items": [namespace("ns-b")]}
        if method == "GET":
            items = {"limetasks": [copy.deepcopy(self.stored)],
                     "limetaskqueues": [queue(namespaceSelector=TEAM_A)]}.get(path.rsplit("/", 1)[1], [])
            return {"metadata": {"resourceVersion": "1"}, "items": items}
        if method == "PUT":
            self.stored = {**self.stored, "status": copy.deepcopy(body["status"]),
                           "metadata": {**self.stored["metadata"], "resourceVersion": str(10 + len(self.calls))}}
            return copy.deepcopy(self.stored)
        raise AssertionError(f"unexpected {method} {path}")

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("POST", path, body))
        return body

    async def get(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path, None))
        return None

    def watch_session(self) -> Any:
        class Stream:
            status = 200

            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            @property
            def content(self) -> Any:
                async def lines() -> Any:
                    await asyncio.sleep(3600)
                    yield b""
                return lines()

        class Session:
            def get(self, *args: Any, **kwargs: Any) -> Any:
                return Stream()
        return Session()


async def _drain(rec: Reconciler) -> None:
    for _ in range(20):
        await asyncio.sleep(0.05)
        while rec.work:
            await rec.reconcile(rec.work.take_nowait())


def _queued(kube: Kube) -> dict[str, Any]:
    return next(c for c in kube.stored["status"]["conditions"] if c["type"] == "Queued")


def test_the_operator_holds_a_forbidden_task_and_admits_it_once_its_namespace_is_labelled() -> None:
    async def main() -> None:
        kube = Kube()
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.start_watches(["ns-b"])
        await _drain(rec)
        assert [c for c in kube.calls if c[0] == "POST"] == []  # no Job
        queued = _queued(kube)
        assert (queued["status"], queued["reason"]) == ("True", QUEUE_FORBIDDEN)
        assert queued["message"].startswith("namespace ns-b may not use queue q: its labels do not match")
        assert kube.stored["status"]["state"] == "PENDING"
        writes = len([c for c in kube.calls if c[0] == "PUT"])
        rec.enqueue(("ns-b", "t1"))  # asked again: the same words are not written again
        await _drain(rec)
        assert len([c for c in kube.calls if c[0] == "PUT"]) == writes
        rec.admission.namespace_event("MODIFIED", namespace("ns-b", team="a"))  # kubectl label namespace ns-b team=a
        await _drain(rec)
        assert [c[1] for c in kube.calls if c[0] == "POST"] == ["/apis/batch/v1/namespaces/ns-b/jobs"]
        assert rec.health(grace=0.0) == [] and rec.degraded() == []
        await rec.stop()

    asyncio.run(main())


def test_an_operator_that_may_not_read_namespaces_says_so_and_stays_healthy(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        kube = Kube(namespaces_forbidden=True)
        rec = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
        rec.start_watches(["ns-b"])
        await _drain(rec)
        assert [c for c in kube.calls if c[0] == "POST"] == []
        queued = _queued(kube)
        assert (queued["status"], queued["reason"]) == ("True", QUEUE_FORBIDDEN)
        assert "the operator cannot read namespaces (namespaces cannot be listed: " in queued["message"]
        assert "grant its ServiceAccount list and watch on namespaces" in queued["message"]
        assert rec.health(grace=0.0) == []  # no restart loop for it
        assert [d for d in rec.degraded() if "namespaceSelector" in d] == [
            "queues ['q'] admit no one: they have a namespaceSelector, and namespaces cannot be listed: "
            "KubeError: " + str(KubeError(403, 'namespaces is forbidden: User "op" cannot list resource '
                                          '"namespaces"', "GET", "/api/v1/namespaces"))]
        await rec.stop()

    with caplog.at_level("DEBUG", logger="limetask.operator"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warnings if "cannot read namespaces" in w]) == 1, warnings
    assert not [w for w in warnings if w.startswith("watching namespaces")], warnings
