"""Names and limits of the LimeTask custom resource: the contract shared by client and operator."""

from __future__ import annotations

import re

GROUP = "limetask.io"
VERSION = "v1alpha1"
PLURAL = "limetasks"
KIND = "LimeTask"
API_VERSION = f"{GROUP}/{VERSION}"

# Labels on LimeTasks, Jobs and Pods.
LABEL_APP = "limetask.io/app"
LABEL_TASK_ID = "limetask.io/task-id"
LABEL_ATTEMPT = "limetask.io/attempt"
LABEL_TASK_NAME = "limetask.io/task"
# The UID of the LimeTask a Job or pod belongs to: a task re-created under the same name is
# another task, and never takes its predecessor's Jobs, pods or verdicts for its own.
LABEL_TASK_UID = "limetask.io/task-uid"
# Schedules (LimeTaskSchedule, short name lts): a run carries its schedule's name, its
# schedule's UID and its tick (Unix seconds) as labels (no owner reference: deleting a schedule
# never deletes its runs).
SCHEDULE_KIND = "LimeTaskSchedule"
SCHEDULE_PLURAL = "limetaskschedules"
LABEL_SCHEDULE = "limetask.io/schedule"
LABEL_SCHEDULE_UID = "limetask.io/schedule-uid"
LABEL_TICK = "limetask.io/tick"
# `kubectl annotate lt ID limetask.io/cancel=true` asks the operator to cancel a task.
ANNOTATION_CANCEL = "limetask.io/cancel"

PENDING = "PENDING"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
STATES = (PENDING, STARTED, SUCCESS, FAILURE)
FINAL_STATES = frozenset({SUCCESS, FAILURE})

# Dotted Python name: no `*` or `#`, which are wildcards in AMQP routing keys.
TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
TASK_NAME_MAX = 200
# A Kubernetes label value, so that tasks can be listed by application.
APP_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# Arguments travel in the LimeTask and in the Job's environment: keep them small.
MAX_ARGUMENTS_BYTES = 32 * 1024
# Arguments nest at most this deep (`[[1]]` is 2): deeper JSON is refused by the client, the
# HTTP endpoint and the operator alike.
MAX_ARGUMENT_DEPTH = 64
# Numbers in arguments stay strictly within this magnitude: the Kubernetes API keeps integers
# as 64-bit, and turns larger ones into floats (2**64 - 1 arrives as 18446744073709551616).
MAX_ARGUMENT_NUMBER = 2**63
# The termination message of a container holds at most 4096 bytes.
MAX_VERDICT_BYTES = 4096

# A non-negative Kubernetes quantity ("500m", "1Gi", "2", "1e3"): what resources may hold. The
# CRD and the chart's schema use the same pattern.
QUANTITY_PATTERN = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
QUANTITY_RE = re.compile(QUANTITY_PATTERN)

# A time of the spec (eta, expires) as the API server's validation rules (CEL, Go's RFC 3339)
# can read it: a four-digit year, upper-case T and Z, an offset within 23:59, at most nine
# fractional digits. The `date-time` format alone also takes `t`, `z` and `+25:00`, which every
# later rule then fails on, refusing each status write. The CRD uses the same pattern.
TIME_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                     r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")

# `@task(memory_on_oom=[...])`: at most this many larger memory sizes (spec.memoryOnOOM), one for
# each attempt after an OOMKilled one. The CRD says the same.
MEMORY_ON_OOM_MAX_STEPS = 5

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_CEILING = 10

# Queues (LimeTaskQueue, short name ltq; cluster-scoped): `@task(qos=...)` and
# `send_task(..., qos=)` put a task in spec.queue; a task without one is in the default queue.
QUEUE_KIND = "LimeTaskQueue"
QUEUE_PLURAL = "limetaskqueues"
DEFAULT_QUEUE = "default"
# A queue's name is an object name and a label value: a DNS-1123 label.
QUEUE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_QUEUE = "limetask.io/queue"
# Order among waiting tasks: higher priority first (as Kubernetes' PriorityClasses), then FIFO.
PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
# A waiting task has a condition of this type (True while it waits for a slot).
CONDITION_QUEUED = "Queued"
# A queue with `admission: Kueue` hands its Jobs to Kueue: created suspended, with this label.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
