"""A de-duplicating work queue of keys: what a reconcile loop has still to look at.

Not a LimeTaskQueue (admission/): this one holds the keys of objects whose state changed, each
at most once while it waits, for the loop's workers to take.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

K = TypeVar("K")


class WorkQueue(Generic[K]):
    """Keys waiting to be worked on; a key added again while it waits is not added twice."""

    def __init__(self) -> None:
        self._keys: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()

    def add(self, key: K) -> None:
        if key not in self._waiting:
            self._waiting.add(key)
            self._keys.put_nowait(key)

    async def take(self) -> K:
        """The next key (waiting until there is one); it may be added again from now on."""
        key = await self._keys.get()
        self._waiting.discard(key)
        return key

    def take_nowait(self) -> K:
        """The next key, or asyncio.QueueEmpty."""
        key = self._keys.get_nowait()
        self._waiting.discard(key)
        return key

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    def __len__(self) -> int:
        return self._keys.qsize()
