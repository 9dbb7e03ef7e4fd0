"""Checks applied before anything is created: names, and arguments that must be JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

from .errors import InvalidArgumentsError, InvalidTaskError
from .resource import (
    APP_NAME_RE,
    MAX_ARGUMENT_DEPTH,
    MAX_ARGUMENT_NUMBER,
    MAX_ARGUMENTS_BYTES,
    MEMORY_ON_OOM_MAX_STEPS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUANTITY_RE,
    QUEUE_NAME_RE,
    TASK_NAME_MAX,
    TASK_NAME_RE,
    TIME_RE,
)
from .safejson import depth, lone_surrogate

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": 10**-9, "u": 10**-6, "m": 10**-3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "P": 10**15, "E": 10**18}


def quantity(value: object) -> float:
    """A non-negative Kubernetes quantity ("500m", "1Gi", 2) as a number.

    ValueError for anything else: "inf", "-1Gi", "lots", True. The same grammar as the API
    server's, so what passes here is what a pod accepts.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a quantity")
    text = str(value).strip()
    match = QUANTITY_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (e.g. 500m, 2, 1Gi)")
    number, suffix = float(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        amount = number * 10.0 ** int(suffix[1:]) if int(suffix[1:]) < 300 else math.inf
    else:
        amount = number * _SUFFIXES.get(suffix, 1)
    if not math.isfinite(amount):
        raise ValueError(f"{value!r} is too large")
    return amount


def base_memory(resources: Mapping[str, Any]) -> str | None:
    """The memory an attempt has without memory_on_oom: its limit, else its request, else None
    (of a requests/limits map whose quantities are valid)."""
    for kind in ("limits", "requests"):
        section = resources.get(kind)
        if isinstance(section, Mapping) and section.get("memory") is not None:
            return str(section["memory"])
    return None


def memory_on_oom_problem(steps: object, resources: Mapping[str, Any] | None = None,
                          what: str = "memory_on_oom") -> str | None:
    """What is wrong with a task's memory for the attempts after it was OOMKilled, or None.

    At most MEMORY_ON_OOM_MAX_STEPS Kubernetes quantities, strictly increasing, the first not
    below the memory the task has without them (`resources`: its requests and limits): each
    step is more memory for the next attempt, so the steps alone bound how often it runs again.
    """
    if not isinstance(steps, (list, tuple)) or not steps:
        return f"{what} must be a non-empty list of memory sizes such as [\"1Gi\", \"2Gi\"], got {steps!r}"
    if len(steps) > MEMORY_ON_OOM_MAX_STEPS:
        return f"{what} has {len(steps)} steps; at most {MEMORY_ON_OOM_MAX_STEPS} are allowed"
    amounts: list[float] = []
    for i, step in enumerate(steps):
        try:
            if isinstance(step, float):
                raise ValueError(f"{step!r} is not a quantity (write it as a string, e.g. \"1Gi\")")
            amount = quantity(step)
        except ValueError as exc:
            return f"{what}[{i}]: {exc}"
        if amount <= 0:
            return f"{what}[{i}]: {step!r} is no memory at all"
        if amounts and amount <= amounts[-1]:
            return (f"{what} must be strictly increasing (each step gives the next attempt more memory): "
                    f"{step!r} follows {steps[i - 1]!r}")
        amounts.append(amount)
    for kind in ("requests", "limits"):
        section = (resources or {}).get(kind)
        own = section.get("memory") if isinstance(section, Mapping) else None
        try:
            if own is not None and amounts[0] < quantity(own):
                return (f"{what}[0]={steps[0]!r} is below the memory {kind[:-1]} of {own} the task has without "
                        f"it: each size must give the next attempt at least the memory the first one had")
        except ValueError:
            return None  # its resources are refused on their own (the operator says why)
    return None


def check_memory_on_oom(steps: object, resources: Mapping[str, Any] | None = None,
                        what: str = "memory_on_oom") -> tuple[str, ...]:
    """The steps as strings (see memory_on_oom_problem), or InvalidTaskError saying what is wrong."""
    if isinstance(steps, str):
        raise InvalidTaskError(f"{what} must be a list of memory sizes, e.g. [{steps!r}], not a string")
    problem = memory_on_oom_problem(steps, resources, what)
    if problem:
        raise InvalidTaskError(problem)
    assert isinstance(steps, (list, tuple))
    return tuple(str(s).strip() for s in steps)


def check_task_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidTaskError(f"task name must be a non-empty string, got {name!r}")
    if len(name) > TASK_NAME_MAX or not TASK_NAME_RE.fullmatch(name):
        raise InvalidTaskError(
            f"invalid task name {name!r}: expected a dotted Python name such as "
            f"'my_package.tasks.lime.get_lime_company' (letters, digits, '_' and '.', "
            f"at most {TASK_NAME_MAX} characters)"
        )
    return name


def check_app_name(name: object) -> str:
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        raise InvalidTaskError(
            f"invalid application name {name!r}: 1 to 63 characters, letters, digits, '-', '_' "
            f"or '.', starting and ending with a letter or digit"
        )
    return name


def check_queue(qos: object) -> str | None:
    """A queue's name (`qos`), or None for the default queue. A queue is a cluster-scoped object
    whose name is also a label value: a DNS-1123 label."""
    if qos is None:
        return None
    if not isinstance(qos, str):
        raise InvalidTaskError(f"qos must be a queue name (a string) or None, not {type(qos).__name__}")
    if not QUEUE_NAME_RE.fullmatch(qos):
        shown = f"{qos[:70]!r}..." if len(qos) > 70 else repr(qos)
        raise InvalidTaskError(f"qos must be a queue name: lower-case letters, digits and '-', starting and "
                               f"ending with a letter or digit, at most 63 characters, got {shown}")
    return qos


def check_priority(priority: object) -> int:
    """A task's priority in its queue: higher starts first (as Kubernetes' PriorityClasses)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidTaskError(f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}, "
                               f"not {type(priority).__name__}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidTaskError(f"priority must be a whole number from {PRIORITY_MIN} to {PRIORITY_MAX} "
                               f"(higher starts first), got {priority}")
    return priority


def _check_text(text: str, path: str) -> None:
    """Refuse a lone surrogate rather than let the API server change it (to U+FFFD)."""
    found = lone_surrogate(text, path)
    if found:
        raise InvalidArgumentsError(f"{found}, which is no Unicode character: the Kubernetes API would store "
                                    f"U+FFFD in its place, and the task would not get what was sent. Pass valid "
                                    f"text (bytes as base64)")


def _check_json_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        if not -MAX_ARGUMENT_NUMBER <= value < MAX_ARGUMENT_NUMBER:
            raise InvalidArgumentsError(f"{path} is {value}, beyond the 64-bit integers the Kubernetes API keeps "
                                        f"exactly: pass it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentsError(f"{path} is {value!r}, which JSON cannot represent")
        if abs(value) >= MAX_ARGUMENT_NUMBER:
            raise InvalidArgumentsError(f"{path} is {value!r}, beyond 2**63, which the Kubernetes API does not keep "
                                        f"exactly: pass it as a string")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgumentsError(f"{path} has a key {key!r} that is not a string")
            if lone_surrogate(key, "") is not None:
                _check_text(key, f"{path} has a key {key!r} that")
            _check_json_value(item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]")
        return
    raise InvalidArgumentsError(
        f"{path} is a {type(value).__name__}, which is not JSON: pass plain values "
        f"(str, int, float, bool, None, list, dict) and look objects up inside the task"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Return JSON-clean copies of the arguments, or raise `InvalidArgumentsError`."""
    # First, and without recursion: deeper values would exhaust the interpreter's stack below.
    nesting = depth([list(args), dict(kwargs)], MAX_ARGUMENT_DEPTH + 1) - 1
    if nesting > MAX_ARGUMENT_DEPTH:
        raise InvalidArgumentsError(
            f"task arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels: pass flatter data, "
            f"or identifiers that the task looks up"
        )
    for i, value in enumerate(args):
        _check_json_value(value, f"argument {i + 1}")
    for key, value in kwargs.items():
        _check_json_value(value, f"keyword argument {key!r}")
    for key in kwargs:
        _check_text(key, "a keyword argument's name")
    text = json.dumps([list(args), dict(kwargs)], separators=(",", ":"), default=_plain)
    size = len(text.encode())
    if size > MAX_ARGUMENTS_BYTES:
        raise InvalidArgumentsError(
            f"task arguments take {size} bytes as JSON, over the limit of {MAX_ARGUMENTS_BYTES}: "
            f"pass identifiers and let the task load the data"
        )
    # A round trip turns tuples into lists (and other mappings into dicts), as the task sees them.
    decoded: list[Any] = json.loads(text)
    return decoded[0], decoded[1]


# The furthest ahead a task may be delayed or set to expire: a typo (days for seconds, a year too
# many) is refused rather than a task left waiting for decades.
MAX_DELAY_SECONDS = 366 * 24 * 3600
# The earliest time a task may name: an earlier one is a mistake (year 1 for "now"), not a start.
EARLIEST_YEAR = 1970


def _moment(value: Any, what: str, now: "dt.datetime", seconds_ok: bool) -> "dt.datetime":
    """A point in time: a timezone-aware datetime, an RFC 3339 string with its offset, or (where
    `seconds_ok`) a number of seconds from now."""
    import datetime as dt

    if isinstance(value, bool):
        raise InvalidTaskError(f"{what} must be a time or a number of seconds, not {value!r}")
    if isinstance(value, (int, float)):
        if not seconds_ok:
            raise InvalidTaskError(f"{what} must be a datetime or an RFC 3339 time, not a number")
        if not math.isfinite(value):
            raise InvalidTaskError(f"{what} must be a finite number of seconds, got {value!r}")
        if value < 0:
            raise InvalidTaskError(f"{what} must be a number of seconds of at least 0, got {value!r}")
        if value > MAX_DELAY_SECONDS:
            raise InvalidTaskError(f"{what} of {value} seconds is over a year")
        return now + dt.timedelta(seconds=float(value))
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidTaskError(f"{what} {value[:60]!r} is not an RFC 3339 time "
                                   f"(e.g. 2026-12-01T07:30:00Z)") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidTaskError(f"{what} {value.isoformat()} has no time zone: give an aware datetime "
                                   f"(datetime.now(timezone.utc) + ...) or a time with its offset")
        try:
            return value.astimezone(dt.timezone.utc)
        except OverflowError:
            raise InvalidTaskError(f"{what} {value.isoformat()} is out of range") from None
    raise InvalidTaskError(f"{what} must be a datetime, an RFC 3339 string"
                           f"{' or a number of seconds' if seconds_ok else ''}, not {type(value).__name__}")


def timing_problem(eta: "dt.datetime | None", expires: "dt.datetime | None", sent: "dt.datetime",
                   slack: float = 0.0, sent_words: str = "from now", expires_after_sent: bool = True) -> str | None:
    """What is wrong with a task's start (`eta`) and expiry, or None: the one rule of the client,
    the command line, the HTTP endpoint and the operator.

    Neither before 1970 nor more than a year after `sent` (for the operator: the task's creation,
    with `slack` for a client's clock ahead of the API server's); `expires` after the start (the
    eta, else `sent`), since a task that expires before it may start can only end Expired. The
    operator, which cannot know when the client sent it, compares `expires` with the eta alone
    (`expires_after_sent=False`): one that passed on the way ends Expired.
    """
    for what, when in (("eta", eta), ("expires", expires)):
        if when is None:
            continue
        if when.year < EARLIEST_YEAR:
            return f"{what} {_short(when)} is before {EARLIEST_YEAR}: give the time the task may start, or none"
        if (when - sent).total_seconds() > MAX_DELAY_SECONDS + slack:
            return (f"{what} {_short(when)} is over a year {sent_words} (at most "
                    f"{MAX_DELAY_SECONDS // 86400} days)")
    start = eta if eta is not None else sent if expires_after_sent else None
    if expires is not None and start is not None and expires <= start:
        return (f"expires {_short(expires)} is not after the task's start ({_short(start)}): it could only "
                f"end Expired, without running")
    return None


def spec_time(value: Any, field: str) -> "dt.datetime":
    """A time of a LimeTask's spec, as the API server's rules read it (TIME_RE), in UTC;
    `InvalidTaskError` for anything else."""
    readable = isinstance(value, str) and TIME_RE.fullmatch(value) is not None
    if readable and int(value[:4]) < EARLIEST_YEAR:
        raise InvalidTaskError(f"spec.{field} {value} is before {EARLIEST_YEAR}: give the time the task may start, "
                               f"or none")
    parsed = parse_time(value) if readable else None
    if parsed is None:
        shown = f"{value[:60]!r}" if isinstance(value, str) else repr(value)[:60]
        raise InvalidTaskError(f"spec.{field} {shown} is not an RFC 3339 time the API server's rules can read "
                               f"(e.g. 2026-12-01T07:30:00Z: upper-case T and Z, an offset within 23:59)")
    return parsed


def check_timing(countdown: Any = None, eta: Any = None, expires: Any = None,
                 now: "dt.datetime | None" = None) -> dict[str, str]:
    """The spec's `eta` and `expires` (RFC 3339, UTC) from Celery's countdown, eta and expires.

    countdown: seconds from now; eta: an aware datetime or RFC 3339 time (not both); expires:
    seconds from now or an aware datetime. Refused (InvalidTaskError) as `timing_problem` says.
    """
    import datetime as dt

    now = now or dt.datetime.now(dt.timezone.utc)
    if countdown is not None and eta is not None:
        raise InvalidTaskError("give countdown or eta, not both")
    start = None
    if countdown is not None:
        start = _moment(countdown, "countdown", now, seconds_ok=True)
    elif eta is not None:
        start = _moment(eta, "eta", now, seconds_ok=False)
    until = _moment(expires, "expires", now, seconds_ok=True) if expires is not None else None
    problem = timing_problem(start, until, now)
    if problem is not None:
        raise InvalidTaskError(problem)
    out: dict[str, str] = {}
    if start is not None:
        out["eta"] = rfc3339(start)
    if until is not None:
        out["expires"] = rfc3339(until)
    return out


def rfc3339(when: "dt.datetime") -> str:
    """UTC, microseconds, `Z`, a four-digit year: what the API server's rules can read (TIME_RE)."""
    import datetime as dt

    return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _short(when: "dt.datetime") -> str:
    import datetime as dt

    return when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> "dt.datetime | None":
    """An RFC 3339 time as the API server accepts it (`Z` or an offset, any number of fractional
    digits, `t`/`z` in lower case), in UTC; None when it is not one."""
    import datetime as dt
    import re

    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)", value.strip())
    if not m:
        return None
    frac = (m.group(3) or ".0")[:7]
    zone = "+00:00" if m.group(4) in ("Z", "z") else m.group(4)
    try:
        return dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{zone}").astimezone(dt.timezone.utc)
    except ValueError:
        return None
