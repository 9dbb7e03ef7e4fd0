"""The Job of one attempt of a task, as a plain dict (pure: tested without a cluster)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from lime_task.resource import (
    API_VERSION,
    DEFAULT_QUEUE,
    KIND,
    KUEUE_QUEUE_LABEL,
    LABEL_APP,
    LABEL_ATTEMPT,
    LABEL_QUEUE,
    LABEL_TASK_ID,
    LABEL_TASK_UID,
)

from .features import NONE, ServerFeatures
from .model import CONTAINER, TaskView
from .resources import merge_resources, with_memory
from .settings import OperatorSettings
from .tracing import runner_env

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
JOB_NAME_MAX = 52  # pods add "-xxxxx", and the job-name label must stay within 63


def job_name(task_name: str, attempt: int) -> str:
    """Deterministic: a restarted operator finds the Job it made instead of making another.

    `{task}-{attempt}` when that fits; else the task name shortened with a hash of all of it,
    `{head}-{hash}-a{attempt}`. A plain name always ends in `-` and digits, a shortened one
    never does, so the two forms can never name the same Job for two different tasks.
    """
    name = f"{task_name}-{attempt}"
    if len(name) <= JOB_NAME_MAX:
        return name
    digest = hashlib.sha256(task_name.encode()).hexdigest()[:12]
    tail = f"-{digest}-a{attempt}"
    head = task_name[: JOB_NAME_MAX - len(tail)].rstrip("-.")
    return f"{head}{tail}"


def env_json(value: Any) -> str:
    """JSON for an environment variable, with no `$` in it.

    Kubernetes expands `$(VAR)` in env values and turns `$$` into `$`, so a `$` would reach
    the task changed. In JSON a `$` can only stand inside a string, where `\\u0024` is the
    same character: the runner's json.loads gives back the arguments byte for byte.
    """
    return json.dumps(value, separators=(",", ":")).replace("$", "\\u0024")


HASHED_SPEC_FIELDS = ("task", "app", "args", "kwargs", "acksLate", "maxAttempts", "timeoutSeconds", "image",
                      "resources", "nodeSelector", "tolerations", "imagePullSecrets", "queue", "priority",
                      "memoryOnOOM")


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of what the user asked for (fields added later with defaults do not change it)."""
    asked = {k: spec[k] for k in HASHED_SPEC_FIELDS if spec.get(k) not in (None, [], {}, False)}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def labels(task: TaskView, attempt: int, default_queue: str = DEFAULT_QUEUE) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "limetask-operator",
        "app.kubernetes.io/name": "limetask-runner",
        LABEL_TASK_ID: task.name,
        LABEL_TASK_UID: task.uid,
        LABEL_ATTEMPT: str(attempt),
        LABEL_APP: str(task.spec.get("app", "")),
        LABEL_QUEUE: str(task.spec.get("queue") or default_queue),
    }


def time_limit(spec: dict[str, Any], settings: OperatorSettings) -> int | None:
    """The attempt's hard limit in seconds: the task's timeout, else the installation's default."""
    own = spec.get("timeoutSeconds")
    return int(own) if own else (settings.default_time_limit or None)


def build_job(task: TaskView, attempt: int, settings: OperatorSettings,
              features: ServerFeatures = NONE, kueue_queue: str | None = None,
              created_at: dt.datetime | None = None, memory: str | None = None) -> dict[str, Any]:
    """The Job of one attempt. With `kueue_queue`, it is made suspended with Kueue's queue label,
    and Kueue admits (resumes) it. `created_at`: when it is made, for the runner (below).
    `memory`: the container's memory request and limit, over the task's own (the size of its
    memoryOnOOM for the attempts OOMKilled before this one: Plan.memory)."""
    spec = task.spec
    image = spec.get("image") if settings.allow_image_override and spec.get("image") else settings.runner_image
    env = {
        **settings.runner_env,
        "LIMETASK_TASK_ID": task.name,
        "LIMETASK_TASK": spec["task"],
        "LIMETASK_APP": spec["app"],
        "LIMETASK_ARGS": env_json(spec.get("args") or []),
        "LIMETASK_KWARGS": env_json(spec.get("kwargs") or {}),
        "LIMETASK_ATTEMPT": str(attempt),
        "LIMETASK_NAMESPACE": task.namespace,
        "LIMETASK_VERDICT_PATH": TERMINATION_MESSAGE_PATH,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": "/tmp",
    }
    if created_at is not None and not kueue_queue:
        # The Job's deadline counts from its start, just after this, and the pod's from later (an
        # image pull, scheduling): the runner counts the soft time limit from here, so that it
        # comes timeout - soft_time_limit seconds before the hard deadline, whatever came first.
        # A Job Kueue admits starts when it is resumed, which is not known yet.
        env["LIMETASK_JOB_CREATED_AT"] = (created_at.astimezone(dt.timezone.utc)
                                          .isoformat(timespec="microseconds").replace("+00:00", "Z"))
    env.update(runner_env(task.annotations))  # the sender's trace context, which the runner's span links to
    timeout = time_limit(spec, settings)
    soft = settings.default_soft_time_limit
    if soft and (timeout is None or soft < timeout):
        # For a task whose @task sets no soft_time_limit (the runner decides): only below the
        # hard limit, which would otherwise stop the task first.
        env["LIMETASK_DEFAULT_SOFT_TIME_LIMIT"] = f"{soft:g}"
    if isinstance(spec.get("session"), dict) and spec["session"]:
        env["LIMETASK_SESSION"] = env_json(spec["session"])  # who a scheduled task runs as
    resources = with_memory(merge_resources(settings.runner_resources, spec.get("resources") or {}), memory)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": list(settings.runner_command),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": resources,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # The verdict is always in the file; logs never stand in for it.
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.runner_user_id,
            "runAsGroup": settings.runner_user_id,
            "fsGroup": settings.runner_user_id,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if settings.runner_service_account:
        pod_spec["serviceAccountName"] = settings.runner_service_account
    own = settings.allow_placement_override  # the task's own placement counts only when allowed
    node_selector = {**settings.runner_node_selector, **(spec.get("nodeSelector") or {} if own else {})}
    tolerations = [*settings.runner_tolerations, *(spec.get("tolerations") or [] if own else [])]
    pull_secrets = [*settings.runner_image_pull_secrets, *(spec.get("imagePullSecrets") or [] if own else [])]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in dict.fromkeys(pull_secrets)]
    if timeout:
        # The pod's own deadline too, so the kubelet stops the process even if the Job lags.
        pod_spec["activeDeadlineSeconds"] = timeout
    job_spec: dict[str, Any] = {
        # One pod per attempt: the operator owns retries, the Job controller never retries.
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "ttlSecondsAfterFinished": settings.job_ttl_seconds,
        "template": {"metadata": {"labels": labels(task, attempt, settings.default_queue)}, "spec": pod_spec},
    }
    if timeout:
        job_spec["activeDeadlineSeconds"] = timeout
    if features.pod_replacement_policy:
        # No replacement pod while a deleted or evicted one terminates; with backoffLimit 0
        # its failure then ends the Job: one pod per attempt (the server detected it has this).
        job_spec["podReplacementPolicy"] = "Failed"
    job_labels = labels(task, attempt, settings.default_queue)
    if kueue_queue:
        job_spec["suspend"] = True
        job_labels[KUEUE_QUEUE_LABEL] = kueue_queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(task.name, attempt),
            "namespace": task.namespace,
            "labels": job_labels,
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": task.name, "uid": task.uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": job_spec,
    }
