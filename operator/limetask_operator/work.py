"""A de-duplicating work queue of keys: what a reconcile loop has still to look at.

Not a LimeTaskQueue (admission/): this one holds the keys of objects whose state changed, each
at most once while it waits, for the loop's workers to take.

Taken in turns between namespaces (a key's first part: keys are (namespace, name)), first in,
first out within each: a namespace that floods (100,000 LimeTasks created at once, each a key
to reconcile) delays its own keys, not the others'. Another namespace's key (a pod that ended,
whose task is to be made final) waits for one turn of each namespace with keys waiting, not
behind the flood's whole backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def namespace_of(key: Any) -> Hashable:
    """The group a key takes its turns in: its namespace, for a (namespace, name) key."""
    return key[0] if isinstance(key, tuple) and key else None


class WorkQueue(Generic[K]):
    """Keys waiting to be worked on; a key added again while it waits is not added twice."""

    def __init__(self, group: Callable[[K], Hashable] = namespace_of) -> None:
        self._group = group
        self._groups: dict[Hashable, deque[K]] = {}  # each group's keys, oldest first
        self._turns: deque[Hashable] = deque()  # the groups with keys waiting, next first
        self._ready: asyncio.Queue[None] = asyncio.Queue()  # one item per key waiting
        self._waiting: set[K] = set()

    def add(self, key: K) -> None:
        if key in self._waiting:
            return
        self._waiting.add(key)
        group = self._group(key)
        keys = self._groups.get(group)
        if keys is None:
            keys = self._groups[group] = deque()
            self._turns.append(group)
        keys.append(key)
        self._ready.put_nowait(None)

    def _next(self) -> K:
        """The next group's oldest key; the group goes to the back of the turns if it has more."""
        group = self._turns[0]
        keys = self._groups[group]
        key = keys.popleft()
        if keys:
            self._turns.rotate(-1)
        else:
            del self._groups[group]
            self._turns.popleft()
        self._waiting.discard(key)
        return key

    async def take(self) -> K:
        """The next key (waiting until there is one); it may be added again from now on."""
        await self._ready.get()
        return self._next()

    def take_nowait(self) -> K:
        """The next key, or asyncio.QueueEmpty."""
        self._ready.get_nowait()
        return self._next()

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)
