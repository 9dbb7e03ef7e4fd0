"""Idempotency keys: a retried request starts no second task.

The key is never stored anywhere but in the task itself. The task's name is derived from
(namespace, application, key), so the API server's create is the lock: a second create with
the same key is 409 AlreadyExists, on whichever endpoint replica or client it is tried, before
or after a restart. The existing task then answers the retry, if it was started by the same
request (the fingerprint, a hash of the request, kept in an annotation), and a key used again
for another request is refused.

A key lives as long as its task is in the cluster: once the task has been archived and deleted,
the same key starts a new task.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidTaskError

KEY_ANNOTATION = "limetask.io/idempotency-key"
FINGERPRINT_ANNOTATION = "limetask.io/idempotency-fingerprint"
KEY_MAX = 255
# Visible ASCII, as HTTP header values carry it safely: no spaces, no control characters.
KEY_RE = re.compile(r"^[\x21-\x7e]{1,%d}$" % KEY_MAX)
TASK_ID_PREFIX = "idem-"


class IdempotencyKeyReusedError(InvalidTaskError):
    """The idempotency key was already used for a different request."""


def check_key(key: Any) -> str:
    """The key, or `InvalidTaskError` saying what a key may be."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        shown = repr(key[:40]) + ("..." if len(key) > 40 else "") if isinstance(key, str) else type(key).__name__
        raise InvalidTaskError(f"invalid idempotency key {shown}: 1 to {KEY_MAX} visible ASCII characters "
                               f"(letters, digits and punctuation, no spaces), e.g. a UUID")
    return key


def task_id_for(namespace: str, app: str, key: str) -> str:
    """The task's name for a key: the same on every replica, and another for another
    application or namespace (a key is the application's own)."""
    digest = hashlib.sha256("\0".join((namespace, app, check_key(key))).encode()).hexdigest()
    return TASK_ID_PREFIX + digest[:40]


def fingerprint(request: Mapping[str, Any]) -> str:
    """A hash of what was asked, whatever the order of its keys or its spacing."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def check_replay(existing: Mapping[str, Any], key: str, wanted: str) -> None:
    """`IdempotencyKeyReusedError` unless `existing` was started by a request with this
    fingerprint."""
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if annotations.get(KEY_ANNOTATION) != key or annotations.get(FINGERPRINT_ANNOTATION) != wanted:
        raise IdempotencyKeyReusedError(
            f"the idempotency key {key[:40]!r} was already used for a different request (task "
            f"{(existing.get('metadata') or {}).get('name')!r}): send a new key for a new request, or the same "
            f"request again with this key")
