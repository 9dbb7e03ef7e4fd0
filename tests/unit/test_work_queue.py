"""The reconcile loop's work queue (work.py): each key once while it waits, and turns between
namespaces, so that one namespace's flood of keys does not hold the others' back."""

from __future__ import annotations

import asyncio

import pytest
from limetask_operator.work import WorkQueue


def test_a_flood_of_one_namespace_holds_back_its_own_keys_not_the_others() -> None:
    """100,000 keys of one namespace wait (a flood just created); a key of each of three other
    namespaces then comes: each is taken within one turn of every namespace with keys waiting,
    not after the flood's backlog; the flood's keys keep their order, and none is lost."""
    work: WorkQueue[tuple[str, str]] = WorkQueue()
    for i in range(100_000):
        work.add(("flood", f"f{i}"))
    for ns in ("a", "b", "c"):
        work.add((ns, "ended"))
    first = [work.take_nowait() for _ in range(4)]
    assert sorted(first) == [("a", "ended"), ("b", "ended"), ("c", "ended"), ("flood", "f0")]
    # Another key of a coming later waits for one turn of each namespace with keys waiting.
    work.add(("a", "later"))
    assert work.take_nowait() == ("flood", "f1") and work.take_nowait() == ("a", "later")
    rest = [work.take_nowait() for _ in range(len(work))]
    assert rest == [("flood", f"f{i}") for i in range(2, 100_000)]
    with pytest.raises(asyncio.QueueEmpty):
        work.take_nowait()


def test_a_key_waits_once_and_may_come_again_once_taken() -> None:
    async def run() -> None:
        work: WorkQueue[tuple[str, str]] = WorkQueue()
        work.add(("ns", "t1"))
        work.add(("ns", "t1"))
        work.add(("ns", "t2"))
        assert len(work) == 2 and ("ns", "t1") in work
        assert await work.take() == ("ns", "t1")
        assert ("ns", "t1") not in work
        work.add(("ns", "t1"))  # changed again while it was being worked on
        assert [await work.take(), await work.take()] == [("ns", "t2"), ("ns", "t1")]
        waiter = asyncio.create_task(work.take())
        await asyncio.sleep(0)
        assert not waiter.done()
        work.add(("other", "t3"))
        assert await asyncio.wait_for(waiter, 1) == ("other", "t3") and len(work) == 0

    asyncio.run(run())
