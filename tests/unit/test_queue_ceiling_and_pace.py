"""A queue shared by many teams: the ceiling of priorities (a queue's maxPriority, the
installation's and the namespaces' ceilings) and the bound on the longest wait it gives; and a
queue's own pace of starts (maxStartsPerSecond). Against the real admission code and caches,
on a fake clock (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from limetask_operator.admission import QUEUE_RATE_LIMITED, WAITING, Admission, Admitted, TokenBucket, Waiting
from limetask_operator.admission.line import stamp
from limetask_operator.settings import OperatorSettings, SettingsError

from tests.unit.test_admission import Clock, Harness, body, count, queue, settle


def now_body(h: Harness, name: str, **kw: Any) -> dict[str, Any]:
    """A task made now, on the harness's clock."""
    return body(name, created=stamp(h.clock.now), **kw)


# -- the ceiling -------------------------------------------------------------------------------

def flood(max_priority: int | None, aging: int = 60, duration: float = 20.0, hostile_every: float = 5.0,
          slots: int = 2, give_up: float = 4000.0) -> tuple[float, int]:
    """A hostile application sends a task of priority 1000 every `hostile_every` seconds into a
    queue of `slots` slots whose tasks run `duration` seconds: twice what the queue drains. After
    ten minutes of that, a well-behaved application sends one task of priority 0. How long it
    waited before its start (`give_up` when it had not started by then), and how many of the
    flood's tasks waited then (the flood never stopped)."""
    spec: dict[str, Any] = {"maxRunning": slots, "agingSeconds": aging}
    if max_priority is not None:
        spec["maxPriority"] = max_priority
    h = Harness()
    h.adm.queue_event("ADDED", queue(**spec))
    ends: dict[str, float] = {}
    started: dict[str, float] = {}
    sent_at: float | None = None
    begin = h.clock.now
    n = 0
    next_hostile = begin
    while h.clock.now - begin < 600 + give_up:
        if h.clock.now >= next_hostile:
            name = f"h{n}"
            n += 1
            next_hostile += hostile_every
            if isinstance(h.ask(now_body(h, name, app="flood", ns="hostile", priority=1000)), Admitted):
                started[name] = h.clock.now
        if sent_at is None and h.clock.now - begin >= 600:
            sent_at = h.clock.now
            answer = h.ask(now_body(h, "patient", app="reports", ns="team", priority=0))
            assert isinstance(answer, Waiting), "the queue is full: the task waits"
        h.enqueued.clear()
        h.adm.dispatch()
        for key in h.enqueued:
            started[key[1]] = h.clock.now
        for name, at in started.items():
            if name not in ends:
                ends[name] = at + duration
                ns = "team" if name == "patient" else "hostile"
                h.start_job(name, ns=ns)
        h.adm.count_running()  # a pass sees the Jobs (their grants go)
        assert h.adm.count_running().queue["q"] <= slots
        if "patient" in started:
            break
        h.clock.now += 1.0
        for name, end in ends.items():
            ns = "team" if name == "patient" else "hostile"
            if end <= h.clock.now and (ns, name) in h.caches.jobs:
                del h.caches.jobs[(ns, name)]  # it finished; the operator deletes its Job
    waiting = sum(1 for e in h.adm.entries.values() if e.app == "flood")
    assert sent_at is not None
    return started.get("patient", sent_at + give_up) - sent_at, waiting


def test_a_flood_at_the_top_priority_holds_a_priority_0_task_back_at_most_the_stated_bound() -> None:
    """The README's bound: a task of priority p waits at most (C - p) x agingSeconds to reach
    the ceiling C, then at most until the next slot frees (here every task runs 20 s), since
    fair share gives that slot to the application that runs fewest, not to the flood. With the
    queue's maxPriority 10 and agingSeconds 60: ten minutes, plus at most 20 s (and the 1 s
    step of this simulation). It does not start before the ten minutes either: the flood's
    tasks are at the ceiling all along, and rank first until then."""
    waited, flood_waiting = flood(max_priority=10)
    assert 600 <= waited <= 600 + 20 + 1, waited
    assert flood_waiting > 50  # the flood went on all the while, twice faster than the queue drains


def test_without_a_ceiling_the_same_flood_holds_it_back_for_hours() -> None:
    """Priority 1000 against 0 with agingSeconds 60 is 1000 minutes of ageing (about 17 hours):
    the task is still waiting more than an hour later."""
    waited, _ = flood(max_priority=None)
    assert waited >= 4000


def test_the_lower_ceiling_applies_and_the_waiting_task_says_its_priority_was_lowered() -> None:
    h = Harness()
    h.adm = Admission(None, h.caches, h.enqueued.append,  # type: ignore[arg-type]
                      lambda k, d: h.later.append((k, d)), clock=h.clock, max_priority=50,
                      namespace_max_priority={"batch": 5, "platform": 1000})
    h.adm.queue_event("ADDED", queue(maxRunning=0, maxPriority=200))
    old = "2027-01-15T08:59:30Z"  # half a minute before the clock: no ageing worth a point yet
    answers = {name: h.ask(body(name, ns=ns, priority=p, created=old))
               for name, ns, p in (("t-batch", "batch", 100), ("t-ns", "ns", 100), ("t-platform", "platform", 999),
                                   ("t-low", "ns", 7))}
    counted = {e.key[1]: e.priority for e in h.adm.entries.values()}
    assert counted == {"t-batch": 5, "t-ns": 50, "t-platform": 200, "t-low": 7}
    messages = {n: a.message for n, a in answers.items() if isinstance(a, Waiting)}
    assert messages["t-batch"].endswith("; its priority 100 counts as 5 here (the ceiling of namespace batch)")
    assert messages["t-ns"].endswith("; its priority 100 counts as 50 here (the installation's ceiling)")
    assert messages["t-platform"].endswith("; its priority 999 counts as 200 here (maxPriority of queue q)")
    assert "counts as" not in messages["t-low"]
    assert [e.key[1] for e in h.adm.positions("q")] == ["t-platform", "t-ns", "t-low", "t-batch"]
    # The queue's maxPriority lowered: the line is ordered again, and every waiting task is
    # reconciled (its condition says the new ceiling).
    h.enqueued.clear()
    h.adm.queue_event("MODIFIED", queue(maxRunning=0, maxPriority=6))
    assert {e.key[1]: e.priority for e in h.adm.entries.values()} == {"t-batch": 5, "t-ns": 6, "t-platform": 6,
                                                                      "t-low": 6}
    assert sorted(k[1] for k in h.enqueued) == ["t-batch", "t-low", "t-ns", "t-platform"]
    assert [e.key[1] for e in h.adm.positions("q")][-1] == "t-batch"
    low = h.adm.admit(h.caches.tasks[("ns", "t-low")], 1)
    assert isinstance(low, Waiting) and "its priority 7 counts as 6 here (maxPriority of queue q)" in low.message
    # Raised again: each counts with its own priority once more.
    h.adm.queue_event("MODIFIED", queue(maxRunning=0))
    assert {e.key[1]: e.priority for e in h.adm.entries.values()} == {"t-batch": 5, "t-ns": 50, "t-platform": 999,
                                                                      "t-low": 7}


def test_the_lowered_priority_is_written_once_into_the_status_not_at_every_count() -> None:
    h = Harness()
    h.adm.queue_event("ADDED", queue(maxRunning=1, maxPriority=3))
    h.start_job("running")
    h.task(body("running"))
    h.task(body("greedy", priority=900))
    settle(h, [("ns", "greedy")])
    status = h.caches.tasks[("ns", "greedy")].status
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Queued")
    assert message == ("waiting in queue q: position 1 of 1 (maxRunning 1); its priority 900 counts as 3 here "
                       "(maxPriority of queue q)")
    version = dict(status)
    for _ in range(3):
        h.clock.now += 10
        count(h)
    assert h.caches.tasks[("ns", "greedy")].status == version


def test_the_installations_ceilings_are_checked_at_start() -> None:
    settings = OperatorSettings.from_env({"LIMETASK_NAMESPACE_MAX_PRIORITY": '{"batch": -5, "platform": 1000}'})
    assert settings.max_priority == 100 and settings.namespace_max_priority == {"batch": -5, "platform": 1000}
    with pytest.raises(SettingsError, match="LIMETASK_MAX_PRIORITY"):
        OperatorSettings.from_env({"LIMETASK_MAX_PRIORITY": "1001"})
    with pytest.raises(SettingsError, match=r"priorities go from -1000 to 1000, not 'batch': 5000"):
        OperatorSettings.from_env({"LIMETASK_NAMESPACE_MAX_PRIORITY": '{"batch": 5000}'})


# -- the pace ---------------------------------------------------------------------------------

def paced_run(h: Harness, arrivals: list[float], step: float, seconds: float, busy: float = 0.0) -> list[float]:
    """Passes every `step` seconds for `seconds`; tasks join queue "paced" at the `arrivals`
    (seconds from now), and `busy` tasks a second join queue "busy", taking the installation's
    tokens too. When each paced task has its Job made: its grant's token due, at once or as its
    task comes back later."""
    begin = h.clock.now
    left = sorted(arrivals)
    made: list[float] = []
    sent = busy_sent = 0
    while h.clock.now < begin + seconds:
        while busy and busy_sent < (h.clock.now - begin) * busy + 1e-9:
            h.ask(now_body(h, f"b{busy_sent}", queue="busy", app="busy"))
            busy_sent += 1
        while left and left[0] <= h.clock.now - begin + 1e-9:
            left.pop(0)
            answer = h.ask(now_body(h, f"p{sent}", queue="paced"))
            sent += 1
            if isinstance(answer, Admitted):
                made.append(h.clock.now + answer.delay)
        h.enqueued.clear()
        h.later.clear()
        h.adm.dispatch()
        made += [h.clock.now for k in h.enqueued if k[1].startswith("p")]
        made += [h.clock.now + d for k, d in h.later if k[1].startswith("p")]
        h.clock.now = round(h.clock.now + step, 6)
    return sorted(made)


def test_a_queues_pace_starts_its_waiting_tasks_no_faster_than_its_rate() -> None:
    """Ten join a queue of maxStartsPerSecond 2 with room for all: one Job each half second,
    never two closer, the first half a second after the queue was made (its bucket starts
    empty). The installation's own pace (20 a second) would have made them all at once."""
    h = Harness(rate=20, burst=20)
    made_at = h.clock.now
    h.adm.queue_event("ADDED", queue("paced", maxStartsPerSecond=2))
    made = paced_run(h, [0.0] * 10, 0.05, 6.0)
    assert len(made) == 10
    assert made[0] == pytest.approx(made_at + 0.5, abs=1e-6)
    gaps = [b - a for a, b in zip(made, made[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-6, gaps
    assert made[-1] - made[0] <= 9 * 0.5 + 0.05, made


def test_the_pace_holds_when_the_installations_tokens_delay_its_jobs() -> None:
    """The installation's bucket (3 a second, taken by another queue's tasks as fast as it
    gives them) delays the paced queue's Jobs by up to a second, one more than the next: the
    paced queue's own token is counted as taken when its Job is made, so two of its Jobs are
    never closer than its pace (1 a second). Its tasks come two at a time, 0.2 s apart, every
    2.5 s: the first finds a token saved, the second waits for the next."""
    h = Harness(rate=3, burst=3)
    h.adm.queue_event("ADDED", queue("paced", maxStartsPerSecond=1))
    h.adm.queue_event("ADDED", queue("busy"))
    arrivals = [t + d for t in (1.0, 3.5, 6.0, 8.5, 11.0, 13.5) for d in (0.0, 0.2)]
    made = paced_run(h, arrivals, 0.1, 20.0, busy=3.0)
    assert len(made) == 12
    gaps = [b - a for a, b in zip(made, made[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-6, gaps


def test_a_reconcile_that_comes_late_makes_no_two_jobs_closer_than_the_pace() -> None:
    """The reconciler makes a Job when its task comes back and admit() says its token is due;
    a busy reconciler comes back late, by up to a second here, one task later than the next.
    The queue's Jobs are still made at least 1/rate apart: admit() holds a task back until
    1/rate after the queue's last Job."""
    import random

    rng = random.Random(5)
    h = Harness(rate=0)
    h.adm.queue_event("ADDED", queue("paced", maxStartsPerSecond=2))
    back: dict[tuple[str, str], float] = {}  # when each granted task comes back to the reconciler
    for i in range(20):
        answer = h.ask(now_body(h, f"p{i}", queue="paced"))
        if isinstance(answer, Admitted):
            back[("ns", f"p{i}")] = h.clock.now + answer.delay + rng.uniform(0, 1.0)
    made: list[float] = []
    end = h.clock.now + 15
    while h.clock.now < end:
        h.enqueued.clear()
        h.later.clear()
        h.adm.dispatch()
        for key in h.enqueued:
            back[key] = h.clock.now + rng.uniform(0, 1.0)
        for key, delay in h.later:
            back[key] = h.clock.now + delay + rng.uniform(0, 1.0)
        for key, at in sorted(back.items(), key=lambda kv: kv[1]):
            if at > h.clock.now:
                continue
            answer = h.adm.admit(h.caches.tasks[key], 1)
            assert isinstance(answer, Admitted)
            if answer.delay > 0:
                back[key] = h.clock.now + answer.delay
                continue
            del back[key]
            made.append(h.clock.now)
            h.start_job(key[1])
        h.clock.now = round(h.clock.now + 0.05, 6)
    assert len(made) == 20
    gaps = [b - a for a, b in zip(made, made[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-6, gaps


def test_a_new_leader_starts_the_paced_queue_with_an_empty_bucket() -> None:
    """The previous leader made a Job just before it stopped; the new leader (a new Admission,
    made when it takes over) makes its queue's first one no sooner than 1/rate after it began,
    so the two are never closer than the pace, whoever made them."""
    clock = Clock()
    old = Harness(clock=clock)
    old.adm.queue_event("ADDED", queue("paced", maxStartsPerSecond=0.5))
    clock.now += 2.0
    last_old = clock.now
    answer = old.ask(now_body(old, "p-old", queue="paced"))
    assert isinstance(answer, Admitted) and answer.delay == 0
    new = Harness(clock=clock)  # takes over at once (no lease in between: the worst case)
    new.adm.queue_event("ADDED", queue("paced", maxStartsPerSecond=0.5))
    made = paced_run(new, [0.0, 0.0], 0.05, 5.0)
    assert made == [pytest.approx(last_old + 2.0, abs=1e-6), pytest.approx(last_old + 4.0, abs=1e-6)]


def test_tasks_held_by_the_pace_say_so_and_keep_saying_it_between_tokens() -> None:
    """The reason QueueRateLimited holds while the pace holds the queue: a token that comes and
    goes does not turn it back to Waiting (each turn would rewrite every waiting status). Once
    the queue is full (maxRunning) rather than paced, it says Waiting again, within a count."""
    h = Harness()
    h.adm.queue_event("ADDED", queue("paced", maxRunning=3, maxStartsPerSecond=1))
    for i in range(6):
        h.task(now_body(h, f"p{i}", queue="paced"))
        settle(h, [("ns", f"p{i}")])
    # The first has its token (due in a second); the next find none: held by the pace.
    message = next(c["message"] for c in h.caches.tasks[("ns", "p1")].status["conditions"] if c["type"] == "Queued")
    assert message == ("waiting in queue paced at its pace of 1 a second: position 1 of 1 (maxRunning 3, "
                       "maxStartsPerSecond 1)")
    reasons: set[str] = set()
    for _ in range(40):  # 4 s, a pass every 0.1 s; the statuses follow each count (budgeted)
        h.enqueued.clear()
        h.later.clear()
        h.adm.dispatch()
        for key in [*h.enqueued, *(k for k, _ in h.later)]:
            h.start_job(key[1])
        for i in range(6):
            entry = h.adm.entries.get(("ns", f"p{i}"))
            if entry is not None:
                reasons.add(h.adm._waiting(entry, h.caches.tasks[("ns", f"p{i}")], h.clock.now).reason)
        h.clock.now = round(h.clock.now + 0.1, 6)
    assert h.adm.count_running().queue["paced"] == 3  # the queue is full now
    assert reasons == {QUEUE_RATE_LIMITED}
    h.clock.now += 6  # no pass was held by the pace for a count's period: they wait for a slot
    count(h)
    for i in range(3, 6):
        status = h.caches.tasks[("ns", f"p{i}")].status
        assert next(c["reason"] for c in status["conditions"] if c["type"] == "Queued") == WAITING


def test_token_bucket_reservations_after_another_delay() -> None:
    clock = Clock(0.0)
    pace = TokenBucket(1, 1, clock, full=False)
    assert pace.reserve(1.0) == pytest.approx(1.0)  # empty: the first token after 1/rate
    assert pace.reserve(1.0) is None
    clock.now = 2.0
    assert pace.reserve(1.0, after=0.75) == pytest.approx(0.75)  # due now, used at 2.75 ...
    assert pace.reserve(2.0) == pytest.approx(1.75)  # ... so the next one is due at 3.75
    assert TokenBucket(0, 1, clock).reserve(1.0, after=0.3) == pytest.approx(0.3)
