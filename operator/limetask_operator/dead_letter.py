"""Bounds on an undeliverable completion event: how its tries are recorded, when they stop,
and where the event goes then.

Without bounds, etcd is the buffer of every downstream outage: a finished task keeps its
LimeTask (and, before, a status write per try) for as long as its event is not confirmed.
Three bounds apply, each a setting:

- the delivery state of a failing event is kept in memory and written into the LimeTask's
  status at most once per `event_status_write_seconds` (and when the event leaves the outbox),
  so that a restarted operator resumes the count instead of starting again;
- past `event_dead_letter_after_seconds` since its first failed try, or after
  `event_dead_letter_after_refusals` tries the broker answered with a refusal (a NACK, an
  unroutable message, an exchange that is missing or may not be used), the event goes to the
  installation's dead-letter exchange, with the reason in its headers, and the task settles;
- should even the dead-letter exchange not take it for `event_drop_after_seconds`, the event
  is written in full to the operator log (and a Kubernetes Event on the task), counted, and the
  task settles: it is not kept in etcd for ever either.

Pure functions and one small record: the dispatcher in `events.py` applies them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from .model import TaskView

STAMP = "%Y-%m-%dT%H:%M:%SZ"

# Why a try failed (CamelCase, as condition reasons are).
UNREACHABLE = "Unreachable"  # no connection to the broker
TIMED_OUT = "TimedOut"  # no confirmation within the publish timeout
NACKED = "Nacked"  # the broker refused to take responsibility (basic.nack)
UNROUTABLE = "Unroutable"  # a mandatory publish came back: no queue is bound (dead-letter exchange only)
EXCHANGE_MISSING = "ExchangeMissing"  # 404 NOT_FOUND
REFUSED = "Refused"  # 403 ACCESS_REFUSED, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED (another type)
FAILED = "Failed"  # anything else (a channel closed for another reason: not counted as a refusal)
# The broker answered, and said no: a bounded number of these sends the event on.
REFUSALS = frozenset({NACKED, UNROUTABLE, EXCHANGE_MISSING, REFUSED})


def classify(exc: BaseException) -> str:
    """The reason of one failed try, from the exception the sink raised."""
    try:
        from aiormq import exceptions as amqp
    except ImportError:  # pragma: no cover - aio-pika is a dependency of the operator
        amqp = None  # type: ignore[assignment]
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TIMED_OUT
    if amqp is not None:
        if isinstance(exc, amqp.PublishError):
            return UNROUTABLE
        if isinstance(exc, amqp.DeliveryError):
            return NACKED
        if isinstance(exc, amqp.ChannelNotFoundEntity):
            return EXCHANGE_MISSING
        if isinstance(exc, (amqp.ChannelAccessRefused, amqp.ChannelPreconditionFailed, amqp.ChannelLockedResource)):
            return REFUSED
    if isinstance(exc, ConnectionError):
        return UNREACHABLE
    return FAILED


@dataclass(frozen=True)
class Bounds:
    write_every: float
    dead_letter_after: float
    dead_letter_after_refusals: int
    drop_after: float

    @classmethod
    def from_settings(cls, settings: Any) -> "Bounds":
        return cls(write_every=settings.event_status_write_seconds,
                   dead_letter_after=settings.event_dead_letter_after_seconds,
                   dead_letter_after_refusals=settings.event_dead_letter_after_refusals,
                   drop_after=settings.event_drop_after_seconds)


def parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass
class Delivery:
    """The delivery state of one task's event, in memory: what the status holds, plus the
    tries since it was last written. Dropped on success, or once the task owes no event."""

    uid: str
    tries: int = 0  # every try, those of earlier operators included (as far as they were written)
    refusals: int = 0
    failures: int = 0  # failures in a row, for the backoff
    first_failed: dt.datetime | None = None
    written: dt.datetime | None = None  # when the status last recorded this state
    due: float = 0.0  # event-loop time of the next try; nothing publishes it before
    reason: str = ""
    error: str = ""
    dead_letter: str = ""  # why it goes to the dead-letter exchange, once a bound is passed

    @classmethod
    def from_status(cls, task: TaskView, now: dt.datetime) -> "Delivery":
        """Resume what the status recorded (an earlier operator's tries count)."""
        ev = task.status.get("event") if isinstance(task.status.get("event"), dict) else {}
        assert isinstance(ev, dict)
        dead = ev.get("deadLetter") if isinstance(ev.get("deadLetter"), dict) else {}
        assert isinstance(dead, dict)
        tries = _count(ev.get("deliveryAttempts"))
        return cls(uid=task.uid, tries=tries, refusals=_count(ev.get("refusedAttempts")), failures=tries,
                   first_failed=parse_time(ev.get("firstFailedAt")),
                   written=parse_time(ev.get("lastAttemptAt")) or parse_time(task.status.get("completedAt")) or now,
                   reason=str(ev.get("lastReason") or ""), error=str(ev.get("lastError") or ""),
                   dead_letter=str(dead.get("message") or ""))

    def failed(self, reason: str, error: str, now: dt.datetime) -> None:
        self.tries += 1
        self.failures += 1
        if reason in REFUSALS:
            self.refusals += 1
        if self.first_failed is None:
            self.first_failed = now
        self.reason, self.error = reason, error

    def past_bound(self, bounds: Bounds, now: dt.datetime) -> str:
        """Why the event goes to the dead-letter exchange now ('' while it is still tried)."""
        if self.dead_letter:
            return self.dead_letter
        if self.first_failed is None:
            return ""
        if now - self.first_failed >= dt.timedelta(seconds=bounds.dead_letter_after):
            return (f"not confirmed within {_span(bounds.dead_letter_after)} of its first failed try "
                    f"({self.tries} tries; the last: {self.reason})")
        if bounds.dead_letter_after_refusals and self.refusals >= bounds.dead_letter_after_refusals:
            return f"refused by the broker {self.refusals} times (the last: {self.reason})"
        return ""

    def past_drop(self, bounds: Bounds, now: dt.datetime) -> bool:
        return self.first_failed is not None and now - self.first_failed >= dt.timedelta(seconds=bounds.drop_after)

    def write_due(self, bounds: Bounds, now: dt.datetime) -> bool:
        return self.written is None or now - self.written >= dt.timedelta(seconds=bounds.write_every)


def headers(event: Any, delivery: Delivery, now: dt.datetime) -> dict[str, Any]:
    """What a dead-lettered event carries besides its body: where it was going and why it did not."""
    first = delivery.first_failed or now
    return {
        "x-limetask-reason": delivery.reason or FAILED,
        "x-limetask-why": delivery.dead_letter[:1000],
        "x-limetask-last-error": delivery.error[:1000],
        "x-limetask-tries": delivery.tries,
        "x-limetask-refusals": delivery.refusals,
        "x-limetask-first-failed-at": first.strftime(STAMP),
        "x-limetask-dead-lettered-at": now.strftime(STAMP),
        "x-limetask-exchange": event.exchange,
        "x-limetask-routing-key": event.routing_key,
    }


def record(delivery: Delivery, now: dt.datetime, exchange: str | None = None, logged: bool = False
           ) -> dict[str, Any]:
    """`status.event.deadLetter`: why the event left the outbox other than by confirmation, and
    where it went (`exchange`, or `logged` when nothing took it); without `at` while it is still
    being dead-lettered."""
    out: dict[str, Any] = {"reason": delivery.reason or FAILED, "message": delivery.dead_letter[:500],
                           "tries": delivery.tries}
    if delivery.first_failed is not None:
        out["firstFailedAt"] = delivery.first_failed.strftime(STAMP)
    if exchange is not None:
        out["exchange"] = exchange
    if logged:
        out["logged"] = True
    if exchange is not None or logged:
        out["at"] = now.strftime(STAMP)
    return out


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
