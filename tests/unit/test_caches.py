"""The caches notice a status this operator did not write."""

from __future__ import annotations

import copy
from typing import Any

from limetask_operator.caches import Caches, status_digest
from limetask_operator.model import TaskView

BODY: dict[str, Any] = {
    "metadata": {"name": "t1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5"},
    "spec": {"task": "a.b", "app": "x"},
    "status": {"state": "STARTED", "attempts": 1},
}


def body(rv: str, status: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    b["metadata"].update(resourceVersion=rv, uid=uid)
    b["status"] = status
    return b


def test_own_writes_are_trusted_and_foreign_ones_are_not() -> None:
    caches = Caches()
    seen = caches.put_task(body("5", {"state": "STARTED", "attempts": 1}))
    assert seen.trusted  # nothing written yet: what is found is trusted
    ours = {"state": "SUCCESS", "result": 2.0, "attempts": 1, "event": {"confirmed": False}}
    caches.writing(seen, ours)
    # The watch echo of our own write may come before its answer; the API keeps 2.0 as 2.
    assert caches.put_task(body("6", {**ours, "result": 2})).trusted
    assert caches.put_task(body("6", {**ours, "result": 2}), written=True).trusted
    forged = caches.put_task(body("7", {**ours, "result": "forged"}))
    assert not forged.trusted
    # Another incarnation under the same name starts afresh.
    assert caches.put_task(body("8", {"state": "SUCCESS", "result": "x"}, uid="uid-2")).trusted


def test_the_status_found_before_the_first_write_stays_trusted() -> None:
    """After a restart the first write may conflict: re-reading the status the previous process
    wrote is not a foreign write."""
    caches = Caches()
    found = caches.put_task(body("5", {"state": "STARTED", "attempts": 1}))
    caches.writing(found, {"state": "SUCCESS", "attempts": 1})
    assert caches.put_task(body("5", {"state": "STARTED", "attempts": 1})).trusted


def test_nothing_is_kept_for_settled_or_deleted_tasks() -> None:
    caches = Caches()
    found = caches.put_task(body("5", {"state": "STARTED"}))
    settled = {"state": "SUCCESS", "event": {"confirmed": True}}
    caches.writing(found, settled)
    caches.put_task(body("6", settled), written=True)
    assert caches.written == {}
    found = caches.put_task(body("7", {"state": "STARTED"}, uid="uid-3"))
    caches.writing(found, {"state": "STARTED", "attempts": 2})
    caches.drop_task(("ns", "t1"))
    assert caches.written == {} and caches.tasks == {}


def test_digest_ignores_what_the_api_does_not_keep() -> None:
    assert status_digest({"a": 2.0, "b": None, "c": [1.0]}) == status_digest({"c": [1], "a": 2})
    assert status_digest({"a": 2.5}) != status_digest({"a": 2})


def test_untrusted_survives_compaction() -> None:
    caches = Caches()
    found = caches.put_task(body("5", {"state": "STARTED"}))
    caches.writing(found, {"state": "STARTED", "attempts": 1})
    view = caches.put_task(body("6", {"state": "SUCCESS", "event": {"confirmed": True}}))
    assert isinstance(view, TaskView) and not view.trusted and view.settled


def test_resource_versions_are_never_compared_as_numbers() -> None:
    """Opaque versions: "9" after "10" is not older because it is smaller (etcd's are not ours)."""
    caches = Caches()
    caches.put_task(body("b-10", {"state": "STARTED"}))
    assert caches.put_task(body("a-9", {"state": "STARTED", "attempts": 2})).resource_version == "a-9"


def test_watch_events_older_than_our_own_write_are_skipped() -> None:
    caches = Caches()
    found = caches.put_task(body("x1", {"state": "PENDING"}))
    caches.writing(found, {"state": "STARTED"})
    caches.put_task(body("x3", {"state": "STARTED"}), written=True)
    # A watch event from before the write (x2) arrives late: the cache keeps the newer one.
    assert caches.put_task(body("x2", {"state": "PENDING", "attempts": 1})).resource_version == "x3"
    assert caches.put_task(body("x3", {"state": "STARTED"})).resource_version == "x3"  # the echo
    assert caches.put_task(body("x4", {"state": "STARTED", "attempts": 1})).resource_version == "x4"


def test_an_echo_that_came_first_is_not_waited_for() -> None:
    caches = Caches()
    found = caches.put_task(body("x1", {"state": "PENDING"}))
    caches.writing(found, {"state": "STARTED"})
    caches.put_task(body("x3", {"state": "STARTED"}))           # the watch delivered our write ...
    caches.put_task(body("x4", {"state": "STARTED", "attempts": 1}))  # ... and something newer
    caches.put_task(body("x3", {"state": "STARTED"}), written=True)   # then the write's answer came
    assert caches.tasks[("ns", "t1")].resource_version == "x4"
    assert caches.put_task(body("x5", {"state": "STARTED", "attempts": 2})).resource_version == "x5"


def test_a_listing_is_taken_as_it_is() -> None:
    caches = Caches()
    found = caches.put_task(body("x1", {"state": "PENDING"}))
    caches.writing(found, {"state": "STARTED"})
    caches.put_task(body("x3", {"state": "STARTED"}), written=True)
    # The watch broke before the echo; the relist is authoritative.
    assert caches.put_task(body("x7", {"state": "STARTED"}), listed=True).resource_version == "x7"
    assert caches.put_task(body("x8", {"state": "STARTED", "attempts": 1})).resource_version == "x8"


def test_looking_up_a_tasks_children_never_makes_an_entry() -> None:
    """A task with no Jobs or pods has no key in the caches: reading one (as the queues do for
    every task they count) must not leave an empty entry behind for each task ever read."""
    import pytest

    caches = Caches()
    key = ("ns", "never-ran")
    with pytest.raises(KeyError):
        caches.jobs[key]
    with pytest.raises(KeyError):
        caches.pods[key]
    assert caches.jobs_of(key, "uid-1") == {} and caches.pods_of(key, "uid-1") == {}
    assert key not in caches.jobs and key not in caches.pods
