"""A ResourceQuota's refusal of a new LimeTask, in words a sender can act on.

The API server answers 403 Forbidden with a message such as
`limetasks.limetask.io "t1" is forbidden: exceeded quota: lt-limetask-limetasks, requested:
count/limetasks.limetask.io=1, used: count/limetasks.limetask.io=100000, limited:
count/limetasks.limetask.io=100000`. Other 403s (RBAC) stay what they are.
"""

from __future__ import annotations

import re

from .errors import QuotaExceededError
from .resource import GROUP, PLURAL

RESOURCE = f"count/{PLURAL}.{GROUP}"
_QUOTA = re.compile(r"exceeded quota: ([^,\s]+)")


def _amount(message: str, word: str) -> int | None:
    found = re.search(rf"{word}: [^=]*?{re.escape(RESOURCE)}=(\d+)", message)
    return int(found.group(1)) if found else None


def quota_refusal(status: int | None, message: str, namespace: str) -> QuotaExceededError | None:
    """The error for a create the API server refused for a quota, or None for any other answer."""
    if status != 403:
        return None
    found = _QUOTA.search(message)
    if found is None:
        return None
    quota = found.group(1)
    used, limit = _amount(message, "used"), _amount(message, "limited")
    if used is not None and limit is not None:
        held = f"{used} of {limit} LimeTasks"
    elif "requested:" in message and RESOURCE not in message:  # another of its resources (it says which)
        held = message[message.index("requested:"):][:300]
    else:
        held = "all the LimeTasks it allows"
    text = (f"namespace {namespace!r} is at its quota (ResourceQuota {quota!r}: {held}): the cluster takes no new "
            f"task there until finished ones leave it (tasks.retentionSeconds, or the archive) or the quota is "
            f"raised. Try again later, or ask the cluster's administrator to raise the quota "
            f"(kubectl describe resourcequota {quota} -n {namespace}).")
    return QuotaExceededError(text, quota=quota, namespace=namespace, used=used, limit=limit)
