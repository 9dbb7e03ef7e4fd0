"""Queues: an attempt's Job is made only once its task has a slot in its queue.

A LimeTask names its queue in `spec.queue` (`@task(qos=...)`; none: "default"). The limits of a
queue are a cluster-scoped LimeTaskQueue of that name: `maxRunning` (the whole queue),
`maxRunningPerNamespace` and `maxRunningPerApp`. A queue that has no LimeTaskQueue is unlimited
if it is "default", and waits for one (reason QueueNotFound) otherwise.

What runs is counted from the caches, which mirror the cluster (a task holds a slot while the
Job of its current attempt exists and has not finished), plus the grants made and not yet
seen as Jobs. Nothing is counted from memory of past decisions, so the limits hold after a
restart or a change of leader (see `hold` for the grants of a leader that lost its lease); and
no admission is made in a queue with maxRunning before every namespace that can be listed is.

Order among the waiting tasks of a queue (line.py keeps them, and says what it costs):
- priority first, aged: a task's priority rises by one for every `agingSeconds` it has waited,
  up to the highest priority waiting, so that a task of lower priority is not overtaken for
  ever by newer ones of higher priority (a gap of n points closes in n x agingSeconds);
- then fair share: of the applications whose next task has the highest aged priority, the one
  with the fewest running tasks starts next, and of those the one that started fewest lately
  (a count that halves every minute), so that no application takes every slot by sending more;
- then first in, first out.
A task's priority counts at most as its ceiling: the lower of the queue's `maxPriority` and its
namespace's (`ceiling`). So a task of priority p reaches the highest class after (C - p) x
agingSeconds at most, where fair share puts it before any application that runs more or started
more lately: a flood at the top priority holds no task back longer than that and a slot.

Positions: a waiting task's status shows its exact place while it is among the first
POSITIONS_COUNTED of its queue, counted every few seconds; further back it says how many wait
and that its place is written once it is among the first ones. A place is rewritten when it
moved by a quarter (any move near the head) or the count of waiting tasks did, at most every
`refresh_seconds` per task and POSITION_WRITES_PER_SECOND in all: each task's rewrites are few,
and bounded whatever the length of the queue.

Job creations are paced by a token bucket (`job_creates_per_second`, `job_creates_burst`),
over every queue: a burst of tasks becomes pods at that pace. The queues with tasks waiting
take its tokens in turns, one task each per round, so that a flood in one queue (an unlimited
one too) takes no more than its turn while other queues have tasks waiting, and within a queue
fair share puts the other applications first: a namespace that floods slows its own tasks.
A queue with `maxStartsPerSecond` has a bucket of its own (one token, made empty: a new leader
waits 1/rate before its first start), whose token counts as taken when its Job is made; its
tasks held back by it say QueueRateLimited while it held the queue in the last count period,
not at each token. A grant may reserve a token up to a second ahead; its task comes back when
the token is due, with nothing written meanwhile.
Many tasks are admitted in one pass, never one per pass.

Tenants: a LimeTaskQueue may name the namespaces that may use it (`namespaceSelector`, a label
selector, as a Kueue ClusterQueue's). A task of another namespace waits with reason
QueueForbidden, out of the queue's line: it holds no slot, has no place, and counts in no one's
fair share. A change of a namespace's labels or of a queue's selector looks again at the tasks
it concerns only, never at every waiting task at every pass.

A queue with `admission: Kueue` is not limited here: each attempt's Job is made suspended, with
Kueue's queue label, and Kueue admits it. Whether the cluster serves Kueue's API is asked (and
asked again while it does not): without it, the tasks' conditions and the log say that nothing
will admit their Jobs.

The modules, one concern each:
    admission.py    the Admission: asking for a slot, the dispatcher's pass, the queues' statuses
    limits.py       a queue's limits (QueueSpec) and what holds a slot now (SlotCounts)
    line.py         the waiting line: ageing, fair share, first in first out
    positions.py    the place a waiting task's status shows, and when it is written again
    selector.py     a label selector (a queue's namespaceSelector), read and matched
    tenancy.py      which namespaces may use which queue, and the tasks held out of a line
    token_bucket.py the pace of Job creations, and a queue's own pace of starts
    waiting.py      a task's wait as its status says it (what the derivation reads)
"""

from .admission import Admission, Admitted, Grant
from .limits import KUEUE, OPERATOR, QueueSpec, SlotCounts, holds_slot, queue_name, queue_path, waits_for_kueue
from .line import Entry, Line, Merge, aged, rank, stamp
from .positions import POSITIONS_COUNTED, Shown, place_to_show, shown_place
from .selector import LabelSelector, SelectorError
from .selector import parse as parse_selector
from .tenancy import Tenancy
from .token_bucket import HORIZON, TokenBucket
from .waiting import (
           ADMITTED,
           KUEUE_WAITING,
           QUEUE_FORBIDDEN,
           QUEUE_NOT_FOUND,
           QUEUE_PAUSED,
           QUEUE_RATE_LIMITED,
           WAITING,
           Waiting,
           queued_now,
           waiting_attempt,
)

__all__ = ["ADMITTED", "HORIZON", "KUEUE", "KUEUE_WAITING", "OPERATOR", "POSITIONS_COUNTED", "QUEUE_FORBIDDEN",
           "QUEUE_NOT_FOUND", "QUEUE_PAUSED", "QUEUE_RATE_LIMITED", "WAITING", "Admission", "Admitted", "Entry",
           "Grant", "LabelSelector", "Line", "Merge", "QueueSpec", "SelectorError", "Shown", "SlotCounts", "Tenancy",
           "TokenBucket", "Waiting", "aged", "holds_slot", "parse_selector", "place_to_show", "queue_name",
           "queue_path", "queued_now", "rank", "shown_place", "stamp", "waiting_attempt", "waits_for_kueue"]
