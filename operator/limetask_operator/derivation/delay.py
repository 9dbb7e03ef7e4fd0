"""A delayed start (eta): no Job and no pod until the eta; a reconcile is due then, or at expiry."""

from __future__ import annotations

import datetime as dt

from lime_task.resource import PENDING

from .plan import SCHEDULED, Facts, Plan, condition, now_iso, unchanged


def wait_for_eta(facts: Facts, eta: dt.datetime | None, expires: dt.datetime | None) -> Plan | None:
    """PENDING with reason Scheduled while the eta is ahead; None once it has come."""
    now = facts.now
    if eta is None or now >= eta:
        return None
    new = facts.new_status()
    new.update(state=PENDING, specHash=facts.spec_hash)
    new["conditions"] = condition(facts.conditions(), "Unknown", SCHEDULED,
                                  f"waiting until {now_iso(eta)} to start (eta)", facts.task.generation, facts.stamp)
    until = eta if expires is None else min(eta, expires)
    return Plan(status=None if unchanged(new, facts.status) else new,
                recheck_after=max((until - now).total_seconds(), 0.0) + 0.05)
