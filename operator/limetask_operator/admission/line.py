"""The waiting tasks of one queue, and the order in which they start (admission.py decides when).

The order: priority with ageing first, then fair share between applications, then first in,
first out (`rank`). Its cost is what keeps the operator's event loop free with thousands waiting:
- Within one (namespace, application) the order never changes while they wait: a task's aged
  priority is `priority + (now - since) / agingSeconds`, so `priority - since / agingSeconds`
  orders its tasks at any time. A heap per (namespace, application) keeps them (`Line`).
- Between applications only their next tasks, the heads, compete, and a head's rank depends on
  the time, on the highest priority among the heads (`top`: ageing stops there) and on what its
  application runs and started lately. So the heads are ranked anew for each pass, into a heap
  (`Merge`, O(A) for A heads), and handed out best first at O(log A) each: a pick changes only
  the picked application's head and counts. Should a pick change `top`, every head is ranked
  again (O(A)); with few priority classes that is rare.
A pass that hands out k tasks costs O(A + k log A), never O(waiting x A): the admission of k
tasks, or the positions of a queue's first k.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace, task name)
AppKey = tuple[str, str]  # (namespace, application)
_Item = tuple[float, float, int, "Entry"]  # (-static score, since, sequence, entry)


def stamp(epoch: float) -> str:
    """Unix seconds as the API's RFC 3339 time (UTC)."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Entry:
    key: Key
    uid: str
    attempt: int
    queue: str
    namespace: str
    app: str
    priority: int  # as it counts in the line: the task's own, lowered to the ceilings (Admission.ceiling)
    since: float  # epoch seconds: when this attempt began to wait (FIFO and ageing)
    asked: int | None = None  # the task's own priority, when a ceiling lowered it

    @property
    def since_text(self) -> str:
        return stamp(self.since)


def aged(entry: Entry, aging_seconds: float, now: float, top: int) -> int:
    """A waiting task's priority, raised by one for every agingSeconds it has waited, up to `top`
    (the highest priority waiting): a task that waited long enough competes with the highest
    class, where fair share and then age decide; ageing never puts an application ahead of
    another of the same class."""
    return min(entry.priority + int(max(0.0, now - entry.since) // aging_seconds), max(top, entry.priority))


def rank(entry: Entry, aging_seconds: float, now: float, top: int, running: int, usage: float) -> tuple[Any, ...]:
    """The order of applications' next tasks (lowest first): aged priority, then the application
    running fewest, then the one that started fewest lately, then the oldest."""
    return (-aged(entry, aging_seconds, now, top), running, round(usage, 6), entry.since, entry.key)


class Line:
    """One queue's waiting tasks: a heap per (namespace, application), and the oldest first.

    Taking a task out is O(1): its heap items go when they reach the top (or when a heap holds
    more dead items than live ones)."""

    def __init__(self, aging_seconds: float) -> None:
        self.aging_seconds = aging_seconds
        self.members: dict[Key, Entry] = {}
        self.heaps: dict[AppKey, list[_Item]] = {}
        self._live: Counter[AppKey] = Counter()
        self._oldest: list[tuple[float, int, Entry]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, entry: Entry) -> None:
        self.remove(entry.key)
        self.members[entry.key] = entry
        app = (entry.namespace, entry.app)
        self._live[app] += 1
        seq = next(self._seq)
        heapq.heappush(self.heaps.setdefault(app, []), (-(entry.priority - entry.since / self.aging_seconds),
                                                         entry.since, seq, entry))
        heapq.heappush(self._oldest, (entry.since, seq, entry))

    def remove(self, key: Key) -> Entry | None:
        entry = self.members.pop(key, None)
        if entry is None:
            return None
        app = (entry.namespace, entry.app)
        self._live[app] -= 1
        heap = self.heaps.get(app, [])
        if self._live[app] <= 0:
            del self._live[app]
            self.heaps.pop(app, None)
        elif len(heap) > 2 * self._live[app] + 8:
            self.heaps[app] = [item for item in heap if self._alive(item[3])]
            heapq.heapify(self.heaps[app])
        while self._oldest and not self._alive(self._oldest[0][2]):
            heapq.heappop(self._oldest)
        if len(self._oldest) > 2 * len(self.members) + 8:
            self._oldest = [item for item in self._oldest if self._alive(item[2])]
            heapq.heapify(self._oldest)
        return entry

    def _alive(self, entry: Entry) -> bool:
        return self.members.get(entry.key) is entry

    def oldest(self) -> Entry | None:
        """The task that has waited longest."""
        while self._oldest and not self._alive(self._oldest[0][2]):
            heapq.heappop(self._oldest)
        return self._oldest[0][2] if self._oldest else None

    def rescore(self, aging_seconds: float) -> None:
        """A new agingSeconds: every heap is ordered again (O(waiting); only when the queue changes)."""
        entries = list(self.members.values())
        self.aging_seconds = aging_seconds
        self.members, self.heaps, self._live, self._oldest = {}, {}, Counter(), []
        for entry in entries:
            self.add(entry)

    def walks(self) -> Iterator[tuple[AppKey, "_Walk"]]:
        for app, heap in self.heaps.items():
            yield app, _Walk(heap, self.members)


class _Walk:
    """One application's waiting tasks in their order, read without taking them out (a heap
    is walked from its root, a small heap of the next candidates holding its frontier)."""

    def __init__(self, heap: list[_Item], members: dict[Key, Entry]) -> None:
        self.heap = heap
        self.members = members
        self.frontier: list[tuple[_Item, int]] = [(heap[0], 0)] if heap else []

    def head(self) -> Entry | None:
        while self.frontier:
            entry = self.frontier[0][0][3]
            if self.members.get(entry.key) is entry:
                return entry
            self._step()
        return None

    def past(self, entry: Entry) -> Entry | None:
        """The task after `entry`, which was this walk's head (and may have left the line since)."""
        while self.frontier:
            first = self.frontier[0][0][3]
            self._step()
            if first is entry:
                break
        return self.head()

    def _step(self) -> None:
        _, i = heapq.heappop(self.frontier)
        for child in (2 * i + 1, 2 * i + 2):
            if child < len(self.heap):
                heapq.heappush(self.frontier, (self.heap[child], child))


class _Priorities:
    """A bag of the heads' priorities; the highest at hand."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self.heap: list[int] = []

    def add(self, priority: int) -> None:
        if not self.count[priority]:
            heapq.heappush(self.heap, -priority)
        self.count[priority] += 1

    def discard(self, priority: int) -> None:
        self.count[priority] -= 1
        if self.count[priority] <= 0:
            del self.count[priority]

    def top(self) -> int:
        while self.heap and -self.heap[0] not in self.count:
            heapq.heappop(self.heap)
        return -self.heap[0] if self.heap else 0


class Merge:
    """A queue's waiting tasks handed out in the order they start, one at a time.

    `running` and `usage` give an application's counts for fair share (by (queue, namespace,
    app)); the caller changes them as it hands out (a grant, or a step of a simulation) and
    says so with `taken`. `eligible` leaves out the applications at a limit; `recheck(namespace)`
    after a pick leaves out those that reached one then. `ranked` counts the heads ranked, the
    measure of the work done.
    """

    def __init__(self, line: Line, queue: str, now: float, running: Callable[[tuple[str, str, str]], int],
                 usage: Callable[[tuple[str, str, str]], float],
                 eligible: Callable[[str, str], bool] = lambda namespace, app: True) -> None:
        self.queue = queue
        self.aging_seconds = line.aging_seconds
        self.now = now
        self.running = running
        self.usage = usage
        self.eligible = eligible
        self.walks: dict[AppKey, _Walk] = {}
        self.heads: dict[AppKey, Entry] = {}
        self.by_namespace: dict[str, set[AppKey]] = {}
        self.priorities = _Priorities()
        self.ranked = 0
        self._versions: dict[AppKey, int] = {}
        self._heap: list[tuple[tuple[Any, ...], AppKey, int]] = []
        for app, walk in line.walks():
            head = walk.head()
            if head is not None and eligible(*app):
                self.walks[app] = walk
                self._set_head(app, head)
        self.top = self.priorities.top()
        self._rank_all()

    def _set_head(self, app: AppKey, head: Entry | None) -> None:
        old = self.heads.pop(app, None)
        if old is not None:
            self.priorities.discard(old.priority)
        self._versions[app] = self._versions.get(app, 0) + 1
        if head is None:
            self.walks.pop(app, None)
            self.by_namespace.get(app[0], set()).discard(app)
            return
        self.heads[app] = head
        self.by_namespace.setdefault(app[0], set()).add(app)
        self.priorities.add(head.priority)

    def _rank(self, app: AppKey) -> tuple[tuple[Any, ...], AppKey, int]:
        self.ranked += 1
        head = self.heads[app]
        counts = (self.queue, app[0], app[1])
        return (rank(head, self.aging_seconds, self.now, self.top, self.running(counts), self.usage(counts)),
                app, self._versions[app])

    def _rank_all(self) -> None:
        self._heap = [self._rank(app) for app in self.heads]
        heapq.heapify(self._heap)

    def _settle(self) -> None:
        """Rank every head again if the highest priority among them moved."""
        top = self.priorities.top()
        if top != self.top:
            self.top = top
            self._rank_all()

    def peek(self) -> Entry | None:
        """The next to start, or None when no application has a task (or all are at a limit)."""
        while self._heap:
            _, app, version = self._heap[0]
            if self._versions.get(app) == version and app in self.heads:
                return self.heads[app]
            heapq.heappop(self._heap)
        return None

    def taken(self, entry: Entry) -> None:
        """`entry` was handed out (the counts already say so): its application's next task competes."""
        app = (entry.namespace, entry.app)
        walk = self.walks.get(app)
        following = walk.past(entry) if walk is not None else None
        if following is not None and not self.eligible(*app):
            following = None
        self._set_head(app, following)
        if following is not None:
            heapq.heappush(self._heap, self._rank(app))
        self._settle()

    def recheck(self, namespace: str) -> None:
        """Leave out the applications of `namespace` that are at a limit now."""
        dropped = False
        for app in list(self.by_namespace.get(namespace, ())):
            if not self.eligible(*app):
                self._set_head(app, None)
                dropped = True
        if dropped:
            self._settle()
