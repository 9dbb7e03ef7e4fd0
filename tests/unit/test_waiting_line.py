"""The order of a queue's waiting tasks (admission/line.py), against the rule written plainly: at
each step, rank the next task of every application and take the best. Random queues, limits,
counts and times; the merge over the applications' heads must give the same order."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from limetask_operator.admission import Admission, QueueSpec, SlotCounts
from limetask_operator.admission.line import Entry, Line, Merge, rank

from tests.unit.test_admission import Clock, Harness, body, queue

NOW = 1_800_003_600.0


def plain_order(entries: list[Entry], aging: float, now: float, running: Counter[tuple[str, str, str]],
                usage: dict[tuple[str, str, str], float], eligible: Any = None, limit: int | None = None,
                after: Any = None) -> list[Entry]:
    """The rule, at O(waiting x applications): each step ranks every application's next task
    (its best by `priority - since / agingSeconds`) and takes the best of the eligible ones."""
    left = list(entries)
    out: list[Entry] = []
    while left and (limit is None or len(out) < limit):
        heads: dict[tuple[str, str], Entry] = {}
        for e in left:
            app = (e.namespace, e.app)
            best = heads.get(app)
            if best is None or (-(e.priority - e.since / aging), e.since) < (-(best.priority - best.since / aging),
                                                                             best.since):
                heads[app] = e
        candidates = [h for h in heads.values() if eligible is None or eligible(h.namespace, h.app)]
        if not candidates:
            break
        top = max(h.priority for h in candidates)
        pick = min(candidates, key=lambda h: rank(h, aging, now, top, running[(h.queue, h.namespace, h.app)],
                                                  usage.get((h.queue, h.namespace, h.app), 0.0)))
        out.append(pick)
        left.remove(pick)
        app3 = (pick.queue, pick.namespace, pick.app)
        running[app3] += 1
        usage[app3] = usage.get(app3, 0.0) + 1
        if after is not None:
            after(pick)
    return out


def random_entries(rng: random.Random, n: int) -> list[Entry]:
    apps = [(f"ns{rng.randrange(3)}", f"app{rng.randrange(6)}") for _ in range(rng.randrange(1, 9))]
    out = []
    for i in range(n):
        ns, app = rng.choice(apps)
        out.append(Entry((ns, f"t{i}"), f"u{i}", 1, "q", ns, app, rng.choice([-2, 0, 0, 1, 5, 40]),
                         NOW - rng.choice([0.0, 5.0, 59.0, 61.0, 600.0, 3600.0, rng.uniform(0, 7200)])))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_the_merge_gives_the_order_of_the_plain_rule(seed: int) -> None:
    rng = random.Random(seed)
    entries = random_entries(rng, rng.randrange(1, 60))
    aging = rng.choice([1.0, 10.0, 60.0, 600.0])
    running = Counter({("q", e.namespace, e.app): rng.randrange(3) for e in entries if rng.random() < 0.3})
    usage = {("q", e.namespace, e.app): rng.choice([0.0, 0.5, 1.0, 3.25]) for e in entries if rng.random() < 0.3}
    line = Line(aging)
    for e in entries:
        line.add(e)
    gone = rng.sample(entries, len(entries) // 5)  # some left the line (admitted, cancelled)
    for e in gone:
        line.remove(e.key)
    expected = plain_order([e for e in entries if e not in gone], aging, NOW, Counter(running), dict(usage))
    run: Counter[tuple[str, str, str]] = Counter(running)
    used = dict(usage)
    merge = Merge(line, "q", NOW, running=lambda k: run[k], usage=lambda k: used.get(k, 0.0))
    got = []
    while (e := merge.peek()) is not None:
        got.append(e)
        app = ("q", e.namespace, e.app)
        run[app] += 1
        used[app] = used.get(app, 0.0) + 1
        merge.taken(e)
    assert [e.key for e in got] == [e.key for e in expected]


@pytest.mark.parametrize("seed", range(40))
def test_dispatch_admits_in_the_order_of_the_plain_rule_within_the_limits(seed: int) -> None:
    """Admission with maxRunning, maxRunningPerNamespace and maxRunningPerApp: an application at
    its limit is passed over (and its priority no longer caps the others' ageing)."""
    rng = random.Random(1000 + seed)
    spec: dict[str, Any] = {"maxRunning": rng.randrange(1, 30), "agingSeconds": rng.choice([1, 60, 600])}
    if rng.random() < 0.6:
        spec["maxRunningPerNamespace"] = rng.randrange(1, 6)
    if rng.random() < 0.6:
        spec["maxRunningPerApp"] = rng.randrange(1, 4)
    h = Harness(clock=Clock(NOW))
    h.adm.queue_event("ADDED", queue(maxRunning=0, **{k: v for k, v in spec.items() if k != "maxRunning"}))
    for e in random_entries(rng, rng.randrange(1, 50)):
        since = e.since
        b = body(e.key[1], app=e.app, ns=e.namespace, priority=e.priority)
        b["metadata"]["creationTimestamp"] = _stamp(since)
        h.ask(b)
    q = QueueSpec.from_body(queue(**spec))
    run = SlotCounts()
    expected = plain_order(list(h.adm.entries.values()), q.aging_seconds, NOW, Counter(), {},
                           eligible=lambda ns, app: run.full(q, ns, app) is None,
                           after=lambda e: run.add("q", e.namespace, e.app))
    h.adm.queue_event("MODIFIED", queue(**spec))
    h.enqueued.clear()
    h.adm.dispatch()
    assert h.enqueued == [e.key for e in expected]


def _stamp(epoch: float) -> str:
    from limetask_operator.admission.line import stamp

    return stamp(epoch)


def test_a_line_forgets_what_left_it() -> None:
    line = Line(60.0)
    entries = [Entry(("ns", f"t{i}"), f"u{i}", 1, "q", "ns", "a", 0, NOW + i) for i in range(100)]
    for e in entries:
        line.add(e)
    for e in entries[:90]:
        line.remove(e.key)
    assert len(line) == 10 and line.oldest() is entries[90]
    assert len(line.heaps[("ns", "a")]) <= 2 * 10 + 8  # dead items do not pile up
    for e in entries[90:]:
        line.remove(e.key)
    assert not line and line.heaps == {} and line.oldest() is None


def test_order_counts_only_as_far_as_asked() -> None:
    h = Harness(clock=Clock(NOW))
    h.adm.queue_event("ADDED", queue(maxRunning=0))
    for i in range(50):
        h.ask(body(f"t{i}", app=f"a{i % 5}"))
    whole = h.adm.positions("q")
    assert [e.key for e in h.adm.positions("q", limit=7)] == [e.key for e in whole[:7]]
    assert isinstance(h.adm, Admission) and len(whole) == 50
