"""When a schedule's runs are due: cron expressions in an IANA time zone (cronsim does the cron).

A schedule ticks at the times its cron expression names, in its time zone. Daylight-saving
changes are handled as cron (cronie) handles them, which cronsim follows:
- spring forward (a local hour is skipped): a run named in the skipped hour runs once, at the
  first moment after the gap (02:30 on the night 02:00 becomes 03:00 runs at 03:00);
- fall back (a local hour repeats): a run named once a day in the repeated hour runs once, at
  its first occurrence; an expression that names every hour or minute ticks through both
  passes of the repeated hour, as the clock does.
Each tick is an instant (UTC); a schedule's run for a tick is named after that instant, so a
tick is never run twice, whoever asks.

For tests only, `@every Ns` ticks every N seconds (from the epoch); an operator accepts it only
with LIMETASK_SCHEDULE_SECONDS=true.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidTaskError

EVERY_RE = re.compile(r"^@every (\d{1,5})s$")
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def zone(name: str | None) -> dt.tzinfo:
    """An IANA time zone (None or "": UTC)."""
    if not name:
        return dt.timezone.utc
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
