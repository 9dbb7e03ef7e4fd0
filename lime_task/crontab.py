"""When a schedule's runs are due: cron expressions in an IANA time zone (cronsim does the cron).

A schedule ticks at the times its cron expression names, in its time zone. Daylight-saving
changes are handled as cron (cronie) handles them, which cronsim follows:
- spring forward (a local hour is skipped): a run named in the skipped hour runs once, at the
  first moment after the gap (02:30 on the night 02:00 becomes 03:00 runs at 03:00);
- fall back (a local hour repeats): a run named once a day in the repeated hour runs once, at
  its first occurrence; an expression that names every hour or minute ticks through both
  passes of the repeated hour, as the clock does.
Each tick is an instant (UTC), and a schedule's run for a tick is named after that instant: two
operators that make the same tick's run make one object (the scheduler keeps the rest of the
promise: a tick whose run existed once is not made again).

An expression has the five fields of cron (minute hour day-of-month month day-of-week: numbers,
month and day names, `*`, `,`, `-` and `/`) or is one of the @ macros. cronsim takes more (a
sixth field of seconds first, `L`, `W`, `#`), which is refused here: a six-field expression is
usually meant as something else (a year, or seconds).

For tests only, `@every Ns` ticks every N seconds (from the epoch); an operator accepts it only
with LIMETASK_SCHEDULE_SECONDS=true.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .errors import InvalidTaskError

EVERY_RE = re.compile(r"^@every (\d{1,5})s$")
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Names a field may use besides numbers (cron's three-letter English names).
FIELD_NAMES = {"month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
               "day-of-week": ("sun", "mon", "tue", "wed", "thu", "fri", "sat")}
FIELD_RE = re.compile(r"[0-9*/,\-]+")
# Files of the tz database that are not zones of their own: `localtime` is the host's own zone
# (whatever the operator's machine says), which a schedule must never depend on.
NOT_ZONES = frozenset({"localtime", "posixrules"})


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - NOT_ZONES


def zone(name: str | None) -> dt.tzinfo:
    """An IANA time zone (None or "": UTC)."""
    if not name:
        return dt.timezone.utc
    if name not in _zone_names():
        raise InvalidTaskError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Stockholm'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTaskError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Stockholm'") from None


def check(expression: str, seconds: bool = False) -> str:
    """The expression, or InvalidTaskError saying what is wrong with it."""
    from cronsim import CronSim, CronSimError

    if not isinstance(expression, str) or not expression.strip():
        raise InvalidTaskError("the schedule must be a cron expression such as '30 7 * * 1'")
    text = " ".join(expression.split())
    m = EVERY_RE.match(text)
    if m:
        if not seconds:
            raise InvalidTaskError(f"{text!r}: seconds-level schedules are for tests only")
        if int(m.group(1)) < 1:
            raise InvalidTaskError(f"{text!r}: every 1 second at least")
        return text
    if text.startswith("@") and text not in MACROS:
        raise InvalidTaskError(f"invalid cron expression {text!r}: the macros are {', '.join(MACROS)}")
    fields = MACROS.get(text, text).split()
    if len(fields) != len(FIELDS):
        more = " (cron has no field of seconds or years)" if len(fields) == 6 else ""
        raise InvalidTaskError(f"invalid cron expression {text!r}: it has {len(fields)} fields, and a schedule takes "
                               f"5: {' '.join(FIELDS)}, e.g. '30 7 * * 1'{more}")
    for what, value in zip(FIELDS, fields, strict=True):
        bare = value.lower()
        for name in FIELD_NAMES.get(what, ()):
            bare = bare.replace(name, "0")
        if not FIELD_RE.fullmatch(bare):
            raise InvalidTaskError(f"invalid cron expression {text!r}: the {what} field {value!r} may hold only "
                                   f"numbers{', names' if what in FIELD_NAMES else ''}, '*', ',', '-' and '/'")
    try:
        CronSim(MACROS.get(text, text), dt.datetime(2026, 1, 1))
    except CronSimError as exc:
        raise InvalidTaskError(f"invalid cron expression {text!r}: {exc}") from None
    return text


def _ticks(expression: str, tz: dt.tzinfo, start: dt.datetime, reverse: bool) -> Iterator[dt.datetime]:
    from cronsim import CronSim

    text = " ".join(expression.split())
    m = EVERY_RE.match(text)
    if m:
        step = int(m.group(1))
        t = int(start.timestamp())
        t = (t // step) * step if reverse else (t // step + 1) * step
        while True:
            yield dt.datetime.fromtimestamp(t, dt.timezone.utc)
            t += -step if reverse else step
    local = start.astimezone(tz)
    if reverse:
        # cronsim's reverse iteration starts strictly before its start: ask from a moment later.
        local = (start + dt.timedelta(seconds=1)).astimezone(tz)
    for tick in CronSim(MACROS.get(text, text), local, reverse=reverse):
        yield tick.astimezone(dt.timezone.utc)


def previous_tick(expression: str, tz: dt.tzinfo, now: dt.datetime) -> dt.datetime | None:
    """The latest tick at or before `now` (None if there is none, e.g. a date that never comes)."""
    for tick in _ticks(expression, tz, now, reverse=True):
        if tick <= now:
            return tick
    return None


def next_tick(expression: str, tz: dt.tzinfo, after: dt.datetime) -> dt.datetime | None:
    """The first tick strictly after `after`."""
    for tick in _ticks(expression, tz, after, reverse=False):
        if tick > after:
            return tick
    return None
