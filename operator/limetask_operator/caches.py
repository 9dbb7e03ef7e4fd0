"""What the operator knows of LimeTasks, Jobs and Pods: caches fed by its watches.

The caches also remember the last statuses this operator wrote, so that a status written by
anyone else (a `kubectl patch --subresource=status`, a forged SUCCESS) is noticed: such a
task is marked untrusted, and the reconciler never acts on, nor publishes, what it says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict, deque
from typing import Any

from .model import JobView, PodView, TaskView

Key = tuple[str, str]  # (namespace, task name)
WRITES_REMEMBERED = 4


def _rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def status_digest(status: dict[str, Any]) -> str:
    """A digest of a status as the API server stores it.

    Whole floats are counted as ints: the API server keeps no difference (2.0 comes back as 2).
    """
    def canon(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [canon(v) for v in value]
        return value

    text = json.dumps(canon(status), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Caches:
    def __init__(self) -> None:
        self.tasks: dict[Key, TaskView] = {}
        self.jobs: dict[Key, dict[str, JobView]] = defaultdict(dict)
        self.pods: dict[Key, dict[str, PodView]] = defaultdict(dict)
        # Per unsettled task: its UID and the digests of the last statuses this operator wrote.
        self.written: dict[Key, tuple[str, deque[str]]] = {}

    def writing(self, task: TaskView, status: dict[str, Any]) -> None:
        """Remember a status this operator is about to write (before the write: the watch
        event of the write may arrive before the write's own answer)."""
        key = (task.namespace, task.name)
        uid, seen = self.written.get(key, ("", deque(maxlen=WRITES_REMEMBERED)))
        if uid != task.uid:
            # The first write of this process: what the task says now is what it found, and
            # trusted (a restarted operator trusts what it finds).
            seen = deque([status_digest(task.status)], maxlen=WRITES_REMEMBERED)
        seen.append(status_digest(status))
        self.written[key] = (task.uid, seen)

    def put_task(self, body: dict[str, Any], written: bool = False) -> TaskView:
        """Cache a LimeTask; `written`: the answer to this operator's own status write."""
        view = TaskView.from_body(body)
        key = (view.namespace, view.name)
        if written:
            self.writing(view, view.status)
        else:
            mine = self.written.get(key)
            if mine is not None and mine[0] == view.uid and status_digest(view.status) not in mine[1]:
                view = dataclasses.replace(view, trusted=False)
        old = self.tasks.get(key)
        # Our own status write already updated the cache: never go back to an older version.
        if old is None or old.uid != view.uid or _rv(view.resource_version) >= _rv(old.resource_version):
            if view.settled and view.trusted:
                self.written.pop(key, None)  # never written again: nothing left to compare
            self.tasks[key] = view.compact() if view.settled else view
        return self.tasks[key]

    def drop_task(self, key: Key) -> None:
        self.tasks.pop(key, None)
        self.jobs.pop(key, None)
        self.pods.pop(key, None)
        self.written.pop(key, None)

    def jobs_of(self, key: Key, uid: str) -> dict[int, JobView]:
        """The Jobs of the task `key` whose UID is `uid`: never a predecessor's of the same name."""
        return {j.attempt: j for j in self.jobs.get(key, {}).values() if j.attempt and j.task_uid in (uid, "")}

    def pods_of(self, key: Key, uid: str) -> dict[int, list[PodView]]:
        out: dict[int, list[PodView]] = defaultdict(list)
        for p in self.pods.get(key, {}).values():
            if p.attempt and p.task_uid in (uid, ""):
                out[p.attempt].append(p)
        return dict(out)
