"""Tenants: which namespaces may use a queue (its LimeTaskQueue's `namespaceSelector`).

A queue without a namespaceSelector is open to every namespace. With one, a task whose
namespace's labels do not match it never gets a slot there: it waits with reason QueueForbidden,
out of the queue's line, so that it holds no slot and counts neither in the places nor in the
fair share of the tenants the queue admits. When the namespace's labels or the selector change,
only the tasks they concern are looked at again (`Tenancy.regroup`), never every waiting task
at every pass.

The namespaces' labels come from one cluster-wide watch of Namespaces (the operator keeps their
labels only). Until that watch has listed, a queue with a selector gives no slot (the answer is
not known yet). Should the operator not be allowed to read namespaces, a queue with a selector
admits no one, and its tasks say why and what to grant: a rule that cannot be checked is not
taken to allow everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .line import Entry, Key, Line
from .selector import LabelSelector, SelectorError, parse

LOG = logging.getLogger("limetask.operator.queues")


class Tenancy:
    """The queues' namespaceSelectors, the namespaces' labels, and the tasks held out of their
    queue's line because their namespace may not use it."""

    def __init__(self) -> None:
        self.selectors: dict[str, LabelSelector | SelectorError] = {}  # queue: its selector (absent: open)
        self.labels: dict[str, dict[str, str]] = {}  # namespace: its labels
        self.listed = False  # the namespaces were listed once
        self.unreadable: str | None = None  # why the operator cannot read namespaces, or None
        # Tasks that may not use their queue, by key; and their keys by namespace and by queue.
        self.shut: dict[Key, Entry] = {}
        self.by_namespace: dict[str, set[Key]] = {}
        self.by_queue: dict[str, set[Key]] = {}

    # -- what decides -------------------------------------------------------------------
    def selects(self, queue: str) -> bool:
        """Whether the queue has a namespaceSelector (only then is anything asked here)."""
        return queue in self.selectors

    @property
    def known(self) -> bool:
        """Whether a selector can be decided now: the namespaces were listed, or cannot be read."""
        return self.listed or self.unreadable is not None

    def forbids(self, queue: str, namespace: str) -> str | None:
        """Why a task of `namespace` may not use `queue` (the task's message), or None when it may
        (or the namespaces are not listed yet: `known` says so)."""
        selector = self.selectors.get(queue)
        if selector is None:
            return None
        if isinstance(selector, SelectorError):
            return (f"LimeTaskQueue {queue} has a namespaceSelector that is not valid ({selector}), so no namespace "
                    f"may use the queue: fix its namespaceSelector (kubectl edit ltq {queue})")
        if self.unreadable is not None:
            return (f"LimeTaskQueue {queue} admits only namespaces its namespaceSelector matches "
                    f"({selector.text()}), and the operator cannot read namespaces ({self.unreadable}): grant its "
                    f"ServiceAccount list and watch on namespaces (the chart's ClusterRole does), or remove "
                    f"the queue's namespaceSelector")
        if not self.listed or selector.matches(self.labels.get(namespace)):
            return None
        return (f"namespace {namespace} may not use queue {queue}: its labels do not match LimeTaskQueue "
                f"{queue}'s namespaceSelector ({selector.text()}); label the namespace so that it matches "
                f"(kubectl get namespaces -l '{selector.text()}' lists those that do), or send the task to "
                f"another queue")

    # -- what changes -------------------------------------------------------------------
    def queue_changed(self, name: str, body: dict[str, Any] | None) -> bool:
        """A LimeTaskQueue was added, changed (body) or deleted (None): whether its selector changed."""
        spec = (body or {}).get("spec") or {}
        old = self.selectors.get(name)
        new: LabelSelector | SelectorError | None = None
        if body is not None and spec.get("namespaceSelector") is not None:
            try:
                new = parse(spec["namespaceSelector"])
            except SelectorError as exc:
                new = exc
                LOG.warning("LimeTaskQueue %s: %s; no namespace may use the queue until it is fixed", name, exc)
        if new is None:
            self.selectors.pop(name, None)
        else:
            self.selectors[name] = new
        changed = _text(old) != _text(new)
        if changed and new is not None and self.unreadable is not None:
            LOG.warning("LimeTaskQueue %s has a namespaceSelector, but the operator cannot read namespaces (%s): "
                        "its tasks wait (QueueForbidden) until it can", name, self.unreadable)
        return changed

    def namespace_event(self, event_type: str | None, body: dict[str, Any]) -> str | None:
        """A Namespace from the watch: its name if its labels changed (it came or went too), else None."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name", ""))
        old = self.labels.get(name)
        if event_type == "DELETED":
            self.labels.pop(name, None)
            return name if old is not None else None
        raw = meta.get("labels") or {}
        labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        self.labels[name] = labels
        return name if labels != old else None

    def listed_namespaces(self, seen: Iterable[str]) -> tuple[bool, list[str]]:
        """A listing of the namespaces ended: whether it is the first (every selector can be decided
        from now on), and the namespaces it no longer held (gone meanwhile)."""
        names = set(seen)
        gone = [n for n in self.labels if n not in names]
        for name in gone:
            del self.labels[name]
        first, self.listed = not self.listed, True
        return first, gone

    def set_unreadable(self, why: str | None) -> bool:
        """The operator cannot read namespaces (why), or can again (None): whether that changed."""
        if why == self.unreadable:
            return False
        before, self.unreadable = self.unreadable, why
        selecting = sorted(self.selectors)
        if why is not None and before is None:
            if selecting:
                LOG.warning("the operator cannot read namespaces (%s): the queues %s have a namespaceSelector, and "
                            "their tasks wait (QueueForbidden) until it can; grant it list and watch on "
                            "namespaces", why, selecting)
            else:
                LOG.info("the operator cannot read namespaces (%s): a LimeTaskQueue with a namespaceSelector "
                         "would admit no one", why)
        elif why is None:
            LOG.info("the operator can read namespaces again: the queues' namespaceSelectors are applied")
        return (why is None) != (before is None)

    # -- the tasks held out -------------------------------------------------------------
    def hold_out(self, entry: Entry) -> None:
        self.release(entry.key)
        self.shut[entry.key] = entry
        self.by_namespace.setdefault(entry.namespace, set()).add(entry.key)
        self.by_queue.setdefault(entry.queue, set()).add(entry.key)

    def release(self, key: Key) -> Entry | None:
        entry = self.shut.pop(key, None)
        if entry is None:
            return None
        for index, at in ((self.by_namespace, entry.namespace), (self.by_queue, entry.queue)):
            keys = index.get(at)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[at]
        return entry

    def held_in(self, namespace: str | None = None, queue: str | None = None) -> list[Entry]:
        """The tasks held out of a namespace's queues, or of one queue (at the cost of their number)."""
        if namespace is not None:
            keys = self.by_namespace.get(namespace, set())
        else:
            keys = self.by_queue.get(queue or "", set())
        return [self.shut[k] for k in keys]


def _text(selector: LabelSelector | SelectorError | None) -> str | None:
    if selector is None:
        return None
    return f"invalid: {selector}" if isinstance(selector, SelectorError) else selector.text()


def namespace_members(line: Line, namespace: str) -> list[Entry]:
    """The waiting tasks of a line that belong to `namespace`, found through the line's heap of
    each (namespace, application): the cost is that namespace's tasks, not the whole line's."""
    found: list[Entry] = []
    for (ns, _), heap in line.heaps.items():
        if ns == namespace:
            found += [item[3] for item in heap if line.members.get(item[3].key) is item[3]]
    return found
