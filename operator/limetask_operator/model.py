"""Snapshots of the objects the operator reads: small, plain, and easy to test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lime_task.resource import LABEL_ATTEMPT, LABEL_TASK_ID, LABEL_TASK_UID

CONTAINER = "task"


@dataclass(frozen=True)
class TaskView:
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]
    created: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # False when the status was written by someone other than this operator (see caches.py).
    trusted: bool = True

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "TaskView":
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 1), resource_version=str(meta.get("resourceVersion", "")),
            spec=dict(body.get("spec") or {}), status=dict(body.get("status") or {}),
            annotations=dict(meta.get("annotations") or {}), created=meta.get("creationTimestamp"),
            # A status PUT ignores all metadata but these: keep no more (managedFields alone
            # is larger than the rest of a small task).
            metadata={k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
        )

    def compact(self) -> "TaskView":
        """What the operator still needs of a finished task whose event is delivered.

        Such a task is never written again; retention, metrics and a late cancel only read its
        state, reason, completion time and event. With thousands of finished tasks present,
        this keeps the cache small.
        """
        st = self.status
        status: dict[str, Any] = {"state": st.get("state"), "completedAt": st.get("completedAt"),
                                  "event": {"confirmed": True}}
        if isinstance(st.get("error"), dict):
            status["error"] = {"reason": st["error"].get("reason", "")}
        return TaskView(namespace=self.namespace, name=self.name, uid=self.uid, generation=self.generation,
                        resource_version=self.resource_version, spec={}, status=status, annotations={},
                        created=self.created, metadata=self.metadata, trusted=self.trusted)

    @property
    def settled(self) -> bool:
        """Finished, and its completion event delivered: nothing left to do but keep it."""
        return self.status.get("state") in ("SUCCESS", "FAILURE") and bool(
            (self.status.get("event") or {}).get("confirmed"))

    def with_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """The body of a PUT to the status subresource.

        The API server takes only the status (and the resourceVersion precondition) from it
        and keeps the stored spec, so the spec is not sent: it may be up to 32 KiB, and a
        hostile one may not even survive being serialised again.
        """
        from lime_task.resource import API_VERSION, KIND

        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": self.metadata, "status": status}


@dataclass(frozen=True)
class JobView:
    name: str
    task_id: str
    attempt: int
    complete: bool = False
    failed: bool = False
    failed_reason: str | None = None
    failed_message: str | None = None
    active: int = 0
    deleting: bool = False
    created: str = ""
    task_uid: str = ""  # "" for Jobs made before the label existed
    gone: bool = False  # deleted: its last state, kept until its task's final status is stored
    suspended: bool = False  # spec.suspend: made so for Kueue, not admitted yet, or suspended again (evicted)
    # When the job controller last marked it suspended or resumed (its Suspended condition): a
    # pod made before then belongs to an earlier admission, which Kueue evicted.
    suspend_changed: str = ""
    started: str = ""  # status.startTime: its deadline counts from here (reset when resumed)
    # spec.activeDeadlineSeconds: the task's timeout, or the installation's default when it set none.
    deadline: int | None = None

    @property
    def finished(self) -> bool:
        return self.complete or self.failed

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "JobView":
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        st = body.get("status") or {}
        complete = failed = False
        reason = message = None
        suspend_changed = next((str(c.get("lastTransitionTime") or "") for c in st.get("conditions") or []
                                if c.get("type") == "Suspended"), "")
        for c in st.get("conditions") or []:
            if c.get("status") != "True":
                continue
            if c.get("type") == "Complete":
                complete = True
            elif c.get("type") == "Failed":
                failed, reason, message = True, c.get("reason"), c.get("message")
        return cls(name=meta.get("name", ""), task_id=labels.get(LABEL_TASK_ID, ""),
                   attempt=_int(labels.get(LABEL_ATTEMPT)), complete=complete, failed=failed,
                   failed_reason=reason, failed_message=message, active=int(st.get("active") or 0),
                   deleting=bool(meta.get("deletionTimestamp")), created=meta.get("creationTimestamp") or "",
                   task_uid=labels.get(LABEL_TASK_UID, ""),
                   suspended=bool((body.get("spec") or {}).get("suspend")), suspend_changed=suspend_changed,
                   started=str(st.get("startTime") or ""),
                   deadline=_int((body.get("spec") or {}).get("activeDeadlineSeconds")) or None)


@dataclass(frozen=True)
class PodView:
    name: str
    task_id: str
    attempt: int
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    disruption: str | None = None
    running_since: str | None = None
    terminated: dict[str, Any] | None = None
    deleting: bool = False
    created: str = ""
    # Why a pod that has not started waits, when it is more than the usual start-up
    # (unschedulable, an image that cannot be pulled, ...): (reason, message).
    waiting: tuple[str, str] | None = None
    task_uid: str = ""
    gone: bool = False  # deleted: its last state, kept until its task's final status is stored

    @property
    def ended(self) -> bool:
        return self.terminated is not None or self.phase in ("Succeeded", "Failed")

    @property
    def finished(self) -> bool:
        return self.ended

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "PodView":
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        st = body.get("status") or {}
        disruption = None
        for c in st.get("conditions") or []:
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                disruption = c.get("message") or c.get("reason") or "disrupted"
        running = terminated = waiting = None
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason"):
                waiting = (str(c["reason"]), str(c.get("message") or ""))
        statuses = st.get("containerStatuses") or []
        mine = next((s for s in statuses if s.get("name") == CONTAINER), statuses[0] if statuses else None)
        if mine:
            state = mine.get("state") or {}
            if "running" in state:
                running = (state["running"] or {}).get("startedAt") or ""
            if "terminated" in state:
                terminated = dict(state["terminated"] or {})
            why = (state.get("waiting") or {}).get("reason")
            if why and why not in ("ContainerCreating", "PodInitializing"):
                waiting = (str(why), str((state.get("waiting") or {}).get("message") or ""))
        return cls(name=meta.get("name", ""), task_id=labels.get(LABEL_TASK_ID, ""),
                   attempt=_int(labels.get(LABEL_ATTEMPT)), phase=st.get("phase") or "Pending",
                   reason=st.get("reason"), message=st.get("message"), disruption=disruption,
                   running_since=running, terminated=terminated,
                   deleting=bool(meta.get("deletionTimestamp")), created=meta.get("creationTimestamp") or "",
                   waiting=waiting, task_uid=labels.get(LABEL_TASK_UID, ""))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
