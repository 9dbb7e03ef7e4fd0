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
