"""Autoretry: an attempt that raised an exception its task's autoretry_for names runs again
after the policy's delay (no Job or pod meanwhile), until max_retries retries have run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from lime_task import verdict as verdicts
from lime_task.resource import FAILURE, PENDING
from lime_task.validation import parse_time

from ..budgets import RETRY
from .final import final
from .plan import HISTORY_MAX, RETRIES_EXHAUSTED, RETRY_SCHEDULED, Facts, Plan, condition, n_of, now_iso, others


def retry_delay(policy: dict[str, Any], done: int, seed: str) -> float:
    """Seconds before retry `done + 1`: Celery's exponential backoff with full jitter, or its
    fixed default_retry_delay. The jitter is drawn from `seed` (the task's UID and attempt), so
    that deriving the plan again gives the same time."""
    backoff = float(policy.get("backoff") or 0)
    if backoff <= 0:
        return float(policy.get("delay", 180))
    delay = min(float(policy.get("backoffMax", 600)), backoff * 2 ** min(done, 30))
    if policy.get("jitter", True):
        delay *= int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return float(delay)


def retry_recorded(status: dict[str, Any], attempt: int) -> bool:
    """Whether the status already holds the retry of this attempt (its time to run again)."""
    return bool(status.get("retryAt")) and int(status.get("attempts") or 0) == attempt


def will_retry(outcome: verdicts.Verdict, status: dict[str, Any], attempt: int) -> bool:
    """Whether this verdict is not the last word: it will be retried (a cancel then wins)."""
    if outcome.state != FAILURE or outcome.retry is None:
        return False
    return retry_recorded(status, attempt) or int(status.get("retries") or 0) < int(outcome.retry.get("maxRetries", 0))


def retry_not_due(status: dict[str, Any], now: dt.datetime) -> Plan | None:
    """A retry recorded for later: nothing to do but look again at its time. None once it is due
    (its Job and pod are not needed any more; they may be gone after a long delay)."""
    retry_at = parse_time(status.get("retryAt"))
    if retry_at is not None and now < retry_at:
        return Plan(recheck_after=(retry_at - now).total_seconds() + 0.05)
    return None


def retry(facts: Facts, outcome: verdicts.Verdict, entry: dict[str, Any], history: Sequence[dict[str, Any]],
          ended_at: str, stopping: Sequence[str] = ()) -> Plan:
    """The next attempt after the policy's delay, or FAILURE RetriesExhausted once max_retries
    retries have run. `entry`: this attempt's history entry. Any other exception is never re-run."""
    tally, attempt, now = facts.tally, facts.attempt, facts.now
    policy = outcome.retry or {}
    err = outcome.error
    done, most = tally.retries, int(policy.get("maxRetries", 0))
    if done >= most:
        return final(facts, FAILURE, RETRIES_EXHAUSTED,
                     f"{err.get('message', '')} (it raised {err.get('type')}, which autoretry_for names, in "
                     f"{n_of(done + 1, attempt)}; max_retries is {most}{others(tally, 'retries')})",
                     error_type=err.get("type"), history=[*history, {**entry, "reason": RETRIES_EXHAUSTED}],
                     completed_at=ended_at, stopping=stopping)
    delay = retry_delay(policy, done, f"{facts.task.uid}.{attempt}")
    retry_at = (parse_time(ended_at) or now) + dt.timedelta(seconds=delay)
    history = [*history, {**entry, "outcome": RETRY,
                          "message": f"{err.get('message', '')} (retry {done + 1} of {most} at {now_iso(retry_at)})"}]
    new = facts.new_status()
    new.update(dataclasses.replace(tally, retries=done + 1).counters())
    new.update(state=PENDING, attempts=attempt, retryAt=now_iso(retry_at), history=history[-HISTORY_MAX:])
    new["conditions"] = condition(facts.conditions(), "Unknown", RETRY_SCHEDULED,
                                  f"attempt {attempt} raised {err.get('type')}: {err.get('message', '')[:200]}; "
                                  f"retry {done + 1} of {most} at {now_iso(retry_at)}", facts.task.generation,
                                  facts.stamp)
    return Plan(status=new, stop_jobs=list(stopping),
                recheck_after=max((retry_at - now).total_seconds(), 0.0) + 0.05)


