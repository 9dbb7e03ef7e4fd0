"""Queues in the operator (admission/): limits, order, fair share, ageing and the Job-creation rate,
against the caches alone (no cluster)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from limetask_operator.admission import (
    QUEUE_NOT_FOUND,
    QUEUE_PAUSED,
    WAITING,
    Admission,
    Admitted,
    TokenBucket,
    Waiting,
    holds_slot,
)
from limetask_operator.caches import Caches
from limetask_operator.model import JobView, PodView


class Clock:
    def __init__(self, now: float = 1_800_003_600.0) -> None:  # 09:00, an hour after the tasks below
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(name: str, app: str = "a", ns: str = "ns", queue: str | None = "q", priority: int | None = None,
         created: str = "2027-01-15T08:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {"task": "pkg.tasks.t", "app": app}
    if queue:
        spec["queue"] = queue
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "1",
                         "creationTimestamp": created},
            "spec": spec, "status": {}}


def queue(name: str = "q", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": spec}


class Harness:
    """An Admission over real caches; what it hands out is recorded."""

    def __init__(self, rate: float = 0, burst: int = 20, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.caches = Caches()
        self.enqueued: list[tuple[str, str]] = []
        self.later: list[tuple[tuple[str, str], float]] = []
        self.adm = Admission(None, self.caches, self.enqueued.append,  # type: ignore[arg-type]
                             lambda k, d: self.later.append((k, d)), rate=rate, burst=burst, clock=self.clock)

    def task(self, b: dict[str, Any]) -> Any:
        return self.caches.put_task(b, listed=True)

    def ask(self, b: dict[str, Any], attempt: int = 1) -> Admitted | Waiting:
        return self.adm.admit(self.task(b), attempt)

    def start_job(self, name: str, ns: str = "ns", attempt: int = 1) -> None:
        self.caches.jobs.setdefault((ns, name), {})[f"{name}-{attempt}"] = JobView(f"{name}-{attempt}", name, attempt,
                                                                    task_uid=f"uid-{name}")

    def finish_job(self, name: str, ns: str = "ns", attempt: int = 1) -> None:
        self.caches.jobs.setdefault((ns, name), {})[f"{name}-{attempt}"] = JobView(f"{name}-{attempt}", name, attempt,
                                                                    complete=True, task_uid=f"uid-{name}")


def test_a_queue_limit_holds_and_a_finished_task_frees_its_slot() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=2))
    assert isinstance(h.ask(body("t1")), Admitted)
    assert isinstance(h.ask(body("t2")), Admitted)
    third = h.ask(body("t3"))
    assert isinstance(third, Waiting) and third.reason == WAITING and third.queue == "q"
    assert "position 1 of 1" in third.message and "maxRunning 2" in third.message
    # The grants count until their Jobs appear; then the Jobs count.
    h.start_job("t1")
    h.start_job("t2")
    assert h.adm.dispatch() == 0
    assert h.adm.count_running().queue["q"] == 2 and h.adm.grants == {}
    h.finish_job("t1")
    assert h.adm.dispatch() == 1 and h.enqueued == [("ns", "t3")]
    assert isinstance(h.adm.admit(h.caches.tasks[("ns", "t3")], 1), Admitted)


def test_a_stuck_or_ending_attempt_holds_no_slot() -> None:
    caches = Caches()
    task = caches.put_task(body("t1"), listed=True)
    running = {"j": JobView("j", "t1", 1, task_uid="uid-t1")}
    assert holds_slot(task, running, {})
    assert not holds_slot(task, {"j": JobView("j", "t1", 1, deleting=True, task_uid="uid-t1")}, {})
    assert not holds_slot(task, {"j": JobView("j", "t1", 1, failed=True, task_uid="uid-t1")}, {})
    ended = {"p": PodView("p", "t1", 1, phase="Failed", task_uid="uid-t1")}
    assert not holds_slot(task, running, ended)  # the pod ended; the Job does not say so yet
    final = caches.put_task({**body("t1"), "status": {"state": "FAILURE"}}, listed=True)
    assert not holds_slot(final, running, {})  # cancelled: its Job is being stopped
    other = {"j": JobView("j", "t1", 1, task_uid="uid-earlier")}
    assert not holds_slot(task, other, {})  # an earlier task of the same name
    alive = {"p": PodView("p", "t1", 1, phase="Pending", task_uid="uid-t1")}
    assert holds_slot(task, {}, alive)  # its Job went first (stopped): the pod still holds the slot
    assert not holds_slot(task, {}, {"p": PodView("p", "t1", 1, deleting=True, task_uid="uid-t1")})


def test_limits_per_namespace_and_per_application_do_not_block_the_others() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=10, maxRunningPerApp=1, maxRunningPerNamespace=2))
    assert isinstance(h.ask(body("a1", app="a")), Admitted)
    assert isinstance(h.ask(body("a2", app="a")), Waiting)  # a runs 1 of its 1
    for n in ("b1", "c1"):
        h.ask(body(n, app=n[0]))  # waiting behind a2 (no jumping the line) ...
    assert h.adm.dispatch() == 1  # ... but a2 at its limit does not block b1; c1 then meets ns's 2
    assert h.enqueued == [("ns", "b1")]
    assert isinstance(h.ask(body("x1", app="x", ns="other")), Waiting)  # others wait in the queue
    assert h.adm.dispatch() == 1 and h.enqueued[-1] == ("other", "x1")


def test_priority_first_then_first_in_first_out() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=0))  # paused while the line forms
    names = [("low-old", 0, "08:00:00"), ("high", 5, "08:00:03"), ("low-new", 0, "08:00:02"), ("mid", 1, "08:00:04")]
    for name, prio, at in names:
        w = h.ask(body(name, priority=prio, created=f"2027-01-15T{at}Z"))
        assert isinstance(w, Waiting) and w.reason == QUEUE_PAUSED
    order = [e.key[1] for e in h.adm.positions("q", now=h.clock.now)]
    # All were made before now; a point of priority is worth agingSeconds (60) of waiting.
    assert order == ["high", "mid", "low-old", "low-new"]
    h.adm.queue_event("MODIFIED", queue(maxRunning=1))
    assert h.adm.dispatch() == 1 and h.enqueued[-1] == ("ns", "high")


def test_ageing_lets_an_old_task_pass_newer_ones_of_higher_priority() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=0, agingSeconds=10))
    h.ask(body("patient", priority=0, created="2027-01-15T08:00:00Z"))
    h.ask(body("urgent", priority=3, created="2027-01-15T08:00:20Z"))
    h.ask(body("newest", priority=3, created="2027-01-15T08:00:50Z"))
    # At 08:00:50: patient aged 5 points (50 s), urgent 3 + 3, newest 3 + 0.
    for at in (1_800_000_050.0, 1_800_003_600.0, 1_800_090_000.0):  # the order is the same at any time
        assert [e.key[1] for e in h.adm.positions("q", now=at)] == ["urgent", "patient", "newest"]


def test_ageing_between_applications_reaches_the_top_class_and_fair_share_decides_there() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=0, agingSeconds=60))
    h.ask(body("patient", app="a", priority=0, created="2027-01-15T08:00:00Z"))  # an hour: 60 points
    h.ask(body("urgent", app="b", priority=3, created="2027-01-15T08:59:00Z"))
    h.ask(body("flood-old", app="c", priority=3, created="2027-01-15T08:10:00Z"))
    h.start_job("c-running", ns="ns")
    h.caches.put_task(body("c-running", app="c"), listed=True)
    # All three at the top class (3): c runs one already; of a and b, the older head goes first.
    assert [e.key[1] for e in h.adm.positions("q")] == ["patient", "urgent", "flood-old"]
    fresh = Harness()
    fresh.adm.queue_event("ADDED", queue(maxRunning=0, agingSeconds=60))
    fresh.ask(body("patient", app="a", priority=0, created="2027-01-15T08:58:30Z"))  # 1.5 min: 1 point
    fresh.ask(body("urgent", app="b", priority=3, created="2027-01-15T08:59:00Z"))
    assert [e.key[1] for e in fresh.adm.positions("q")] == ["urgent", "patient"]


def test_fair_share_with_a_small_limit_takes_turns_between_applications() -> None:
    """Two slots, three applications, the flood's tasks oldest: the first six starts are two
    of each (fewest running, then fewest started lately), not the flood's first."""
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=0))
    for i in range(8):
        h.ask(body(f"f{i}", app="flood", created=f"2027-01-15T08:00:0{i}Z"))
    for app in ("b", "c"):
        for i in range(2):
            h.ask(body(f"{app}{i}", app=app, created=f"2027-01-15T08:00:1{i}Z"))
    h.adm.queue_event("MODIFIED", queue(maxRunning=2))
    started: list[str] = []
    running: list[str] = []
    while len(started) < 6:
        h.enqueued.clear()
        h.adm.dispatch()
        for key in h.enqueued:
            h.start_job(key[1])
            started.append(key[1])
            running.append(key[1])
        h.adm.count_running()  # a pass sees the Jobs (their grants go)
        h.clock.now += 1
        done = running.pop(0)  # the oldest run ends; the operator deletes its Job
        del h.caches.jobs[("ns", done)]
    first = started[:6]
    assert Counter(n[0] for n in first) == {"f": 2, "b": 2, "c": 2}, started


def test_after_a_start_the_tasks_found_waiting_keep_their_place() -> None:
    """A restarted operator puts every task whose status says it waits back in line, in its
    order, before reconciling any: the first one reconciled takes no slot ahead of older ones."""
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1))
    for name, since in (("old", "2027-01-15T08:00:00Z"), ("new", "2027-01-15T08:30:00Z")):
        b = body(name)
        b["status"] = {"state": "PENDING", "attempts": 1,
                       "queue": {"name": "q", "position": 1, "since": since},
                       "conditions": [{"type": "Queued", "status": "True", "reason": "Waiting"}]}
        h.task(b)
    h.task({**body("done"), "status": {"state": "SUCCESS", "conditions": [
        {"type": "Queued", "status": "True", "reason": "Waiting"}]}})
    assert h.adm.seed() == 2
    # "new" is reconciled first: it waits; the dispatcher starts "old".
    assert isinstance(h.adm.admit(h.caches.tasks[("ns", "new")], 1), Waiting)
    assert h.adm.dispatch() == 1 and h.enqueued == [("ns", "old")]


def test_a_queue_that_does_not_exist_holds_its_tasks_until_it_is_made() -> None:
    h = Harness()
    w = h.ask(body("t1", queue="nightly"))
    assert isinstance(w, Waiting) and w.reason == QUEUE_NOT_FOUND and "kubectl get ltq" in w.message
    assert h.adm.dispatch() == 0
    h.adm.queue_event("ADDED", queue("nightly", maxRunning=1))
    assert h.enqueued == [("ns", "t1")]  # its status is to say why it waits now
    assert h.adm.dispatch() == 1
    # The default queue needs no LimeTaskQueue: it is unlimited until one is made.
    assert isinstance(h.ask(body("t2", queue=None)), Admitted)


def test_a_task_without_a_queue_goes_to_the_installations_default_queue() -> None:
    h = Harness()
    h.adm = Admission(None, h.caches, h.enqueued.append,  # type: ignore[arg-type]
                      lambda k, d: h.later.append((k, d)), clock=h.clock, default_queue="standard",
                      open_queues=["asap", "background"])
    h.adm.queue_event("ADDED", queue("standard", maxRunning=1))
    assert isinstance(h.ask(body("t1", queue=None)), Admitted)
    second = h.ask(body("t2", queue=None))
    assert isinstance(second, Waiting) and second.queue == "standard" and "maxRunning 1" in second.message
    # The open queues run their tasks with no limit until their LimeTaskQueues are made; then those hold.
    assert isinstance(h.ask(body("t3", queue="asap")), Admitted)
    h.adm.queue_event("ADDED", queue("background", maxRunning=0))
    assert isinstance(h.ask(body("t4", queue="background")), Waiting)
    # "default" is now a queue like any other: without its LimeTaskQueue, its tasks wait for it.
    missing = h.ask(body("t5", queue="default"))
    assert isinstance(missing, Waiting) and missing.reason == QUEUE_NOT_FOUND


def test_the_queue_of_a_task_that_names_none() -> None:
    from limetask_operator.model import TaskView
    from limetask_operator.queues import queue_name

    assert queue_name(TaskView.from_body(body("t1", queue=None))) == "default"
    assert queue_name(TaskView.from_body(body("t1", queue=None)), "standard") == "standard"
    assert queue_name(TaskView.from_body(body("t1", queue="asap")), "standard") == "asap"


def test_without_the_crd_every_queue_is_unlimited() -> None:
    h = Harness()
    h.adm.enabled = False
    assert isinstance(h.ask(body("t1", queue="nightly")), Admitted)


def test_a_grant_is_given_up_when_its_job_never_comes() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1))
    assert isinstance(h.ask(body("t1")), Admitted)
    assert h.adm.count_running().queue["q"] == 1
    h.clock.now += 61
    assert h.adm.count_running().queue["q"] == 0 and h.enqueued == [("ns", "t1")]


def test_a_refused_job_releases_its_slot() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1))
    h.ask(body("t1"))
    h.ask(body("t2"))
    h.adm.release(("ns", "t1"))
    assert h.adm.dispatch() == 1 and h.enqueued == [("ns", "t2")]


def test_the_job_creation_rate_paces_admissions_without_writing_anything() -> None:
    h = Harness(rate=10, burst=2)
    first = [h.ask(body(f"t{i}", queue=None)) for i in range(3)]
    assert [type(a).__name__ for a in first] == ["Admitted"] * 3
    assert [a.delay for a in first if isinstance(a, Admitted)] == [0, 0, pytest.approx(0.1)]
    # Past a second ahead, no token is reserved: the task waits in line (its status says so).
    rest = [h.ask(body(f"u{i}", queue=None)) for i in range(12)]
    assert sum(isinstance(a, Admitted) for a in rest) == 9 and isinstance(rest[-1], Waiting)
    assert h.adm.dispatch() == 0
    h.clock.now += 1.0
    assert h.adm.dispatch() == 3  # ten tokens a second, a second ahead at most


def test_token_bucket() -> None:
    clock = Clock(0.0)
    bucket = TokenBucket(2, 1, clock)
    assert bucket.reserve(1.0) == 0
    assert bucket.reserve(1.0) == pytest.approx(0.5)
    assert bucket.reserve(1.0) == pytest.approx(1.0)
    assert bucket.reserve(1.0) is None
    clock.now = 10
    assert bucket.reserve(0) == 0 and bucket.reserve(0) is None
    assert TokenBucket(0, 1, clock).reserve(0) == 0  # 0: no limit


def test_fair_share_and_the_limit_in_a_flood_from_one_application() -> None:
    """2,000 tasks, 80 % from one application, a limit of 20: never more than 20 run, and while
    all three have work waiting, each starts about a third of the tasks."""
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=20))
    rng = random.Random(7)
    apps = ["flood"] * 1600 + ["b"] * 200 + ["c"] * 200
    rng.shuffle(apps)
    pending = {f"t{i}": app for i, app in enumerate(apps)}
    running: dict[str, float] = {}
    for name, app in pending.items():
        if isinstance(h.ask(body(name, app=app)), Admitted):
            h.start_job(name)
            running[name] = h.clock.now + rng.uniform(0.5, 1.5)
    starts: Counter[str] = Counter()
    most = 0
    while h.adm.entries or running:
        h.enqueued.clear()
        h.adm.dispatch()
        waiting_apps = {e.app for e in h.adm.entries.values()}
        for key in h.enqueued:
            name = key[1]
            assert isinstance(h.adm.admit(h.caches.tasks[key], 1), Admitted)
            h.start_job(name)
            running[name] = h.clock.now + rng.uniform(0.5, 1.5)
            if len(waiting_apps) == 3:
                starts[pending[name]] += 1
        most = max(most, h.adm.count_running().queue["q"])
        h.clock.now += 0.1
        for name, end in list(running.items()):
            if end <= h.clock.now:
                h.finish_job(name)
                del h.caches.jobs[("ns", name)]  # the operator deletes a finished task's Job
                del running[name]
    assert most == 20
    total = sum(starts.values())
    assert total > 300
    for app in ("flood", "b", "c"):
        assert abs(starts[app] / total - 1 / 3) < 0.05, starts


class CountingTasks(dict):  # type: ignore[type-arg]
    """The task cache, counting the statuses read from it."""

    reads = 0

    def get(self, key: Any, default: Any = None) -> Any:
        CountingTasks.reads += 1
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        CountingTasks.reads += 1
        return super().__getitem__(key)


def burst(h: Harness, waiting: int = 20000, pairs: int = 300, namespaces: int = 30) -> None:
    """A nightly burst: `waiting` tasks from `pairs` (namespace, application) pairs of 30 tenants,
    priorities 0 to 2, in a queue whose 20 slots are taken."""
    h.adm.queue_event("ADDED", queue("bg", maxRunning=20))
    for i in range(20):
        h.start_job(f"run{i}")
        h.task(body(f"run{i}", queue="bg"))
    for i in range(waiting):
        b = body(f"t{i}", app=f"app{i % pairs}", ns=f"ns{i % namespaces}", queue="bg", priority=i % 3,
                 created=f"2027-01-15T08:{i // 6000:02d}:{i // 100 % 60:02d}Z")
        assert isinstance(h.ask(b), Waiting)


def test_a_pass_over_twenty_thousand_waiting_ranks_each_application_once_not_each_task() -> None:
    """20,000 waiting over 300 (namespace, application) pairs: counting positions, or admitting,
    ranks each application's next task about once plus once per task handed out, and reads the
    statuses of the first POSITIONS_COUNTED only; never every waiting task against every
    application (6 million rankings, seconds of the event loop)."""
    from limetask_operator.admission import POSITIONS_COUNTED, line

    h = Harness()
    burst(h)
    ranked = 0
    real_rank = line.rank

    def counting_rank(*args: Any) -> Any:
        nonlocal ranked
        ranked += 1
        return real_rank(*args)

    class Kube:
        async def request(self, *args: Any, **kwargs: Any) -> None:
            return None

    async def count() -> None:
        h.adm.refresh_positions()  # (the queue's status is written by a task of its own)

    h.adm.kube = Kube()  # type: ignore[assignment]
    h.caches.tasks = CountingTasks(h.caches.tasks)
    CountingTasks.reads = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(line, "rank", counting_rank)
        asyncio.run(count())
        assert ranked <= 2 * (300 + POSITIONS_COUNTED), ranked
        assert CountingTasks.reads <= 2 * POSITIONS_COUNTED + 40, CountingTasks.reads  # (+ the running ones)
        assert len(h.adm.places) == POSITIONS_COUNTED
        ranked = 0
        for i in range(5):  # five slots free
            del h.caches.jobs[("ns", f"run{i}")]
        assert h.adm.dispatch() == 5
        assert ranked <= 2 * (300 + 5), ranked


def settle(h: Harness, keys: list[tuple[str, str]]) -> None:
    """Reconcile these tasks as the operator does: ask for a slot, and write the status derived
    from the answer into the cache (as the API server would store it)."""
    import datetime as dt

    from limetask_operator.derivation import derive

    for key in keys:
        task = h.caches.tasks[key]
        answer = h.adm.admit(task, 1)
        if not isinstance(answer, Waiting):
            continue
        plan = derive(task, {}, {}, dt.datetime.fromtimestamp(h.clock.now, dt.timezone.utc), 10, queued=answer)
        if plan.status is not None:
            b = body(key[1], app=task.spec["app"], ns=key[0], queue=task.spec.get("queue"))
            b["metadata"]["creationTimestamp"] = task.created
            h.caches.put_task({**b, "status": plan.status}, listed=True)


def shown(h: Harness, name: str) -> tuple[Any, Any]:
    block = h.caches.tasks[("ns", name)].status["queue"]
    return block.get("position"), block.get("waiting")


def count(h: Harness) -> None:
    """A count of positions (in an event loop: the queue's status is written by a task)."""
    class Kube:
        async def request(self, *args: Any, **kwargs: Any) -> None:
            return None

    async def run() -> None:
        h.adm.refresh_positions()

    h.adm.kube = Kube()  # type: ignore[assignment]
    h.enqueued.clear()
    asyncio.run(run())
    settle(h, list(dict.fromkeys(h.enqueued)))


def test_tasks_that_join_together_show_the_whole_count_soon_after() -> None:
    """Three tasks join a full queue together: each status first says what was true then ("1 of
    1", "2 of 2", "3 of 3"); the next count, seconds later, writes "of 3" into each."""
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1))
    h.start_job("running")
    h.task(body("running"))
    for name in ("a", "b", "c"):
        h.task(body(name))
        settle(h, [("ns", name)])
    assert [shown(h, n) for n in ("a", "b", "c")] == [(1, 1), (2, 2), (3, 3)]
    h.clock.now += 2
    count(h)
    assert [shown(h, n) for n in ("a", "b", "c")] == [(1, 3), (2, 3), (3, 3)]
    assert "position 1 of 3" in h.caches.tasks[("ns", "a")].status["conditions"][-1]["message"]


def test_a_task_far_back_shows_no_position_until_it_is_among_the_first_ones() -> None:
    """150 wait: the last 50 have no position in their status ("its position is written once it
    is among the first 100"), never a stale one; as the line moves, each gets its exact place,
    with the count of those waiting then."""
    from limetask_operator.admission import POSITIONS_COUNTED

    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1))
    h.start_job("running")
    h.task(body("running"))
    names = [f"t{i:03d}" for i in range(150)]
    for n in names:
        h.task(body(n))
        settle(h, [("ns", n)])
    assert POSITIONS_COUNTED == 100
    assert shown(h, "t099")[0] == 100 and shown(h, "t149")[0] is None
    message = h.caches.tasks[("ns", "t149")].status["conditions"][-1]["message"]
    assert "its position is written once it is among the first 100" in message
    h.clock.now += 2
    count(h)
    assert shown(h, "t000") == (1, 150) and shown(h, "t149")[0] is None
    # 60 start (the queue grows to 61 slots): 90 wait; the back of the line moves up.
    h.adm.queue_event("MODIFIED", queue(maxRunning=61))
    assert h.adm.dispatch() == 60
    for n in names[:60]:
        h.start_job(n)
    for _ in range(3):  # a few counts, seconds apart (ten rewrites a second at most)
        h.clock.now += 5
        count(h)
    assert [shown(h, n) for n in names[60:]] == [(i, 90) for i in range(1, 91)]


@pytest.mark.parametrize("shown_place, counted, seconds, expected", [
    (None, (3, 9), 0, (3, 9)),  # the first word of a wait: at once
    (None, None, 0, (None, 40)),  # far back: no position, the count now
    ((None, 40), None, 100, None),  # still far back: nothing to write
    ((None, 40), (90, 40), 0, (90, 40)),  # now among the first ones: at once
    ((90, 40), None, 10, None),  # pushed back behind the first ones: not before the refresh period
    ((90, 40), None, 30, (None, 40)),
    ((40, 100), (30, 100), 0, (30, 100)),  # moved by a quarter: at once
    ((40, 100), (35, 100), 29, None),  # a small move far from the head: not at all
    ((40, 100), (35, 100), 300, None),
    ((8, 100), (7, 100), 10, None),  # a small move near the head: after the refresh period
    ((8, 100), (7, 100), 30, (7, 100)),
    ((2, 100), (1, 100), 0, (1, 100)),  # 2 to 1 is half: at once
    ((1, 1), (1, 3), 0, (1, 3)),  # the count moved by a quarter or more: at once
    ((5, 100), (5, 90), 0, None),
])
def test_which_place_a_status_shows(shown_place: Any, counted: Any, seconds: float, expected: Any) -> None:
    from limetask_operator.admission import Shown, place_to_show

    now = 1_800_000_000.0
    before = None if shown_place is None else Shown(shown_place[0], shown_place[1], now - seconds)
    assert place_to_show(before, counted, 40, now, refresh_seconds=30) == expected


def test_a_job_suspended_for_kueue_waits_and_is_said_to_wait_when_kueue_is_not_served() -> None:
    """admission: Kueue: the task's Job is made suspended, and it waits in Kueue's line: the queue
    counts it as waiting, not running. Without Kueue's API on the server, its condition says
    that nothing will admit it."""
    import datetime as dt

    from limetask_operator.derivation import derive

    class Kube:
        async def get(self, path: str) -> None:
            assert path == "/apis/kueue.x-k8s.io"
            return None  # 404: not served

    h = Harness()
    h.adm.kube = Kube()  # type: ignore[assignment]
    h.adm.queue_event("ADDED", queue(admission="Kueue", kueueQueueName="team-a"))
    answer = h.ask(body("t1"))
    assert isinstance(answer, Admitted) and answer.kueue_queue == "team-a"
    h.caches.jobs.setdefault(("ns", "t1"), {})["t1-1"] = JobView("t1-1", "t1", 1, task_uid="uid-t1", suspended=True)
    run = h.adm.count_running()
    assert run.queue["q"] == 0 and run.kueue["q"] == 1
    assert h.adm.kueue_note("q") == ""  # not asked yet
    asyncio.run(h.adm.check_kueue())
    note = h.adm.kueue_note("q")
    assert "does not serve Kueue's API (kueue.x-k8s.io)" in note and "admission: Operator" in note
    assert ("ns", "t1") in h.enqueued  # its condition is to say so
    task = h.caches.put_task({**body("t1"), "status": {"state": "PENDING", "attempts": 1, "jobName": "t1-1"}},
                             listed=True)
    plan = derive(task, {1: JobView("t1-1", "t1", 1, task_uid="uid-t1", suspended=True)}, {},
                  dt.datetime.now(dt.timezone.utc), 10, kueue_note=note)
    assert plan.status is not None and plan.queued
    queued = next(c for c in plan.status["conditions"] if c["type"] == "Queued")
    assert queued["reason"] == "Kueue" and "nothing admits it" in queued["message"]


def test_a_flood_in_one_queue_takes_no_more_than_its_turn_of_the_job_creation_pace() -> None:
    """10,000 tasks of one namespace land at once in the default queue (unlimited), while five other
    namespaces send 10 a second, half into the default queue and half into another unlimited one,
    each asking right after a pass (when the tokens within the horizon are taken).
    The pace (200 Jobs a second, a second ahead at most) is the installation's: the flood must not
    take every token because its oldest task waited longest. Every other task's token is due within
    the horizon and a pass of its asking; the flood still gets the rest of the pace."""
    from limetask_operator.admission import HORIZON
    from limetask_operator.admission.line import stamp

    step = 0.05
    h = Harness(rate=200, burst=20)
    h.adm.queue_event("ADDED", queue("std", maxRunningPerApp=100))
    asked: dict[tuple[str, str], float] = {}
    waits: list[float] = []
    starts: dict[float, list[tuple[str, str]]] = {}
    ends: list[tuple[float, tuple[str, str]]] = []

    def granted(key: tuple[str, str], delay: float) -> None:
        when = round(h.clock.now + delay, 2)
        starts.setdefault(when, []).append(key)
        if key[0] != "flood":
            waits.append(h.clock.now + delay - asked.pop(key))

    def ask(name: str, ns: str, app: str, q: str | None) -> None:
        key = (ns, name)
        if ns != "flood":
            asked[key] = h.clock.now
        answer = h.ask(body(name, app=app, ns=ns, queue=q, created=stamp(h.clock.now)))
        if isinstance(answer, Admitted):
            granted(key, answer.delay)

    for i in range(10000):
        ask(f"f{i}", "flood", "flooder", None)
    flood_done = 0
    seconds = 10
    for tick in range(int(seconds / step)):
        h.enqueued.clear()
        h.later.clear()
        h.adm.dispatch()
        for key in [*h.enqueued, *(k for k, _ in h.later)]:
            answer = h.adm.admit(h.caches.tasks[key], 1)
            assert isinstance(answer, Admitted)
            granted(key, answer.delay)
        if tick % 2 == 0:  # ten a second from the others, each asking right after a pass
            n = tick // 2
            ask(f"o{n}", f"ns{n % 5}", f"app{n % 5}", "std" if n % 2 else None)
        for key in starts.pop(round(h.clock.now, 2), []):  # its Job made when its token is due
            h.start_job(key[1], ns=key[0])
            ends.append((h.clock.now + 1.0, key))
            flood_done += key[0] == "flood"
        h.clock.now = round(h.clock.now + step, 2)
        while ends and ends[0][0] <= h.clock.now:  # it ran a second: its Job goes
            _, key = ends.pop(0)
            del h.caches.jobs[key]
            h.adm.leave(key)
        for when in [w for w in starts if w < h.clock.now]:  # due between two steps
            starts.setdefault(round(h.clock.now, 2), []).extend(starts.pop(when))
    # Each other task waited for the next pass, then for a token at most the horizon ahead.
    assert not asked, f"{len(asked)} of the others' tasks were never admitted"
    assert len(waits) == 10 * seconds and max(waits) <= HORIZON + step, sorted(waits)[-5:]
    # The flood had the rest of the pace: what its Jobs were made of, less the others' and a pass.
    assert flood_done >= 200 * seconds - len(waits) - 200 * step, flood_done
