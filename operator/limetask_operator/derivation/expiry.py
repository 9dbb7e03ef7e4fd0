"""When a task's `expires` has passed: it fails with reason Expired, and only while nothing of it has run.

Each rule names the place the task was in when it expired, since the message tells the user
where it was: before its first attempt, waiting in its queue, waiting for Kueue to admit it
again, or with a Job whose worker had not started. A task whose worker started is never
stopped for its expiry.
"""

from __future__ import annotations

import datetime as dt

from .plan import now_iso

# A reconcile is due this long after the expiry, so that the time has surely passed.
EXPIRY_MARGIN_SECONDS = 0.05


def expired_before_start(expires: dt.datetime | None, now: dt.datetime) -> str | None:
    """Before its first attempt (waiting for its eta, say)."""
    if expires is None or now < expires:
        return None
    return f"the task expired at {now_iso(expires)} before it started; it never ran"


def expired_in_queue(expires: dt.datetime | None, never_started: bool, now: dt.datetime) -> str | None:
    """While it waited in its queue for a slot (no Job made for the attempt)."""
    if expires is None or not never_started or now < expires:
        return None
    return f"the task expired at {now_iso(expires)} while it waited in its queue; it never ran"


def expired_waiting_for_kueue(expires: dt.datetime | None, never_started: bool, now: dt.datetime) -> str | None:
    """While its Job, suspended by Kueue after it was admitted, waited to be admitted again."""
    if expires is None or not never_started or now < expires:
        return None
    return (f"the task expired at {now_iso(expires)} while it waited for Kueue to admit it again; it never "
            f"ran")


def expired_before_worker_started(expires: dt.datetime | None, never_started: bool, now: dt.datetime) -> str | None:
    """Its Job was made, its worker has not started: it is stopped before it does."""
    if expires is None or not never_started or now < expires:
        return None
    return f"the task expired at {now_iso(expires)} before its worker started; it was stopped and never ran"


def until_expiry(expires: dt.datetime | None, never_started: bool, now: dt.datetime) -> float | None:
    """When to look again at a task that may still expire (None: it cannot any more)."""
    if expires is None or not never_started:
        return None
    return max((expires - now).total_seconds(), 0.0) + EXPIRY_MARGIN_SECONDS
