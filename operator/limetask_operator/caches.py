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
from collections.abc import Callable
from typing import Any

from .model import JobView, PodView, TaskView

Key = tuple[str, str]  # (namespace, task name)
WRITES_REMEMBERED = 4


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
        # Per task, its Jobs and pods by name. Plain dicts: a read never makes an entry (a task
        # with none has no key), so an empty entry is never left behind.
        self.jobs: dict[Key, dict[str, JobView]] = {}
        self.pods: dict[Key, dict[str, PodView]] = {}
        # Per unsettled task: its UID and the digests of the last statuses this operator wrote.
        self.written: dict[Key, tuple[str, deque[str]]] = {}
        # resourceVersions are opaque (never compared as numbers): per unsettled task, those the
        # watch delivered lately, and the one of this operator's last write while the watch has
        # not delivered it yet (events before it are older than what the cache holds).
        self.watched: dict[Key, deque[str]] = {}
        self.echo: dict[Key, str] = {}
        # Told of every settled task with its whole view, before it is compacted (the archive).
        self.on_settled: Callable[[TaskView], None] | None = None

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

    def put_task(self, body: dict[str, Any], written: bool = False, listed: bool = False) -> TaskView:
        """Cache a LimeTask from the watch, from a fresh listing or read (`listed`), or from the
        answer to this operator's own status write (`written`)."""
        view = TaskView.from_body(body)
        key = (view.namespace, view.name)
        old = self.tasks.get(key)
        rv = view.resource_version
        if written:
            self.writing(view, view.status)
            if rv in self.watched.get(key, ()):
                return old or self._store(key, view)  # the watch was there first, maybe further
            self.echo[key] = rv
            return self._store(key, view)
        mine = self.written.get(key)
        if mine is not None and mine[0] == view.uid and status_digest(view.status) not in mine[1]:
            view = dataclasses.replace(view, trusted=False)
        if listed:
            self.echo.pop(key, None)
        else:
            self.watched.setdefault(key, deque(maxlen=WRITES_REMEMBERED * 2)).append(rv)
            pending = self.echo.get(key)
            if pending is not None and old is not None and old.uid == view.uid:
                if rv != pending:
                    return old  # from before this operator's own write, which the cache holds
                del self.echo[key]
            else:
                self.echo.pop(key, None)
        return self._store(key, view)

    def _store(self, key: Key, view: TaskView) -> TaskView:
        if view.settled:
            if self.on_settled is not None:
                self.on_settled(view)
            # Never written again: nothing left to compare or order.
            if view.trusted:
                self.written.pop(key, None)
            self.watched.pop(key, None)
            self.echo.pop(key, None)
            view = view.compact()
        self.tasks[key] = view
        return view

    def drop_task(self, key: Key) -> None:
        self.tasks.pop(key, None)
        self.jobs.pop(key, None)
        self.pods.pop(key, None)
        self.written.pop(key, None)
        self.watched.pop(key, None)
        self.echo.pop(key, None)

    def job_deleted(self, key: Key, name: str) -> None:
        """The operator asked the API server to delete this Job: it is as good as deleting until the
        watch says more (a reconcile in between must not delete it again)."""
        job = self.jobs.get(key, {}).get(name)
        if job is not None and not job.deleting:
            self.jobs[key][name] = dataclasses.replace(job, deleting=True)

    def forget_gone(self, key: Key) -> None:
        """Drop the last states of a finished task's deleted Jobs and pods (see `gone`)."""
        for cache in (self.jobs, self.pods):
            children = cache.get(key)
            if children:
                for name in [n for n, child in children.items() if child.gone]:
                    del children[name]
                if not children:
                    del cache[key]

    def jobs_of(self, key: Key, uid: str) -> dict[int, JobView]:
        """The Jobs of the task `key` whose UID is `uid`: never a predecessor's of the same name."""
        return {j.attempt: j for j in self.jobs.get(key, {}).values() if j.attempt and j.task_uid in (uid, "")}

    def pods_of(self, key: Key, uid: str) -> dict[int, list[PodView]]:
        out: dict[int, list[PodView]] = defaultdict(list)
        for p in self.pods.get(key, {}).values():
            if p.attempt and p.task_uid in (uid, ""):
                out[p.attempt].append(p)
        return dict(out)
