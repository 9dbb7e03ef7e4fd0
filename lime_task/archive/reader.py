"""Reading the archive (the HTTP endpoint's results API and dashboard): two kinds of reads,
each with its own connections and timeouts, and a circuit that fails reads at once while the
archive is down."""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ClusterError, InvalidTaskError
from ..events import redact
from ..resource import FINAL_STATES
from .schema import TABLE, body_of, check_url

LOG = logging.getLogger("limetask.archive")


class ArchiveError(ClusterError):
    """The archive cannot be reached, or answered with an error."""


class ArchiveTimeout(ArchiveError):
    """A read took longer than its statement timeout."""


SELECT = f"SELECT namespace, name, uid, created_at, spec, status, completed_at FROM {TABLE}"


@dataclass(frozen=True)
class Page:
    """Archived tasks, newest first, and the cursor of the next page (None: no more)."""

    items: list[dict[str, Any]]
    next: str | None


def encode_cursor(completed_at: dt.datetime, uid: str) -> str:
    return f"{completed_at.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}.{uid}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    stamp, _, uid = cursor.partition(".")
    frac, _, uid = uid.partition(".")
    try:
        when = dt.datetime.strptime(f"{stamp}.{frac}", "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.timezone.utc)
        if not re.fullmatch(r"[0-9a-f-]{36}", uid):
            raise ValueError(uid)
    except ValueError:
        raise InvalidTaskError(f"invalid cursor {cursor[:80]!r}") from None
    return when, uid


# Reads come in two kinds, each with connections and a statement timeout of its own, so that
# one kind never waits for the other's: the results API (a task by name, an application's
# list: index lookups a client waits on) and the dashboard (searches, counts, charts: scans
# that may take seconds over a month of history).
RESULTS, DASHBOARD = "results", "dashboard"


@dataclass(frozen=True)
class ReadKind:
    """The limits of one kind of read."""

    name: str
    connections: int  # its own pool's size
    timeout: float  # seconds a statement may run (PostgreSQL's statement_timeout)
    wait: float  # seconds to wait for one of its connections while all are busy


@dataclass(frozen=True)
class ReadLimits:
    """The reader's limits. Each can be set in the environment (see `from_env`)."""

    results: ReadKind = ReadKind(RESULTS, connections=4, timeout=5.0, wait=5.0)
    dashboard: ReadKind = ReadKind(DASHBOARD, connections=2, timeout=15.0, wait=5.0)
    # Counts of more rows than this (by the planner's estimate) are the planner's estimates:
    # an exact count of millions of rows takes seconds on every page of the dashboard.
    exact_count_limit: int = 100_000
    # While the archive is down, a probe asks again this often; reads fail at once meanwhile.
    probe_every: float = 5.0
    connect_timeout: float = 3.0

    ENV: ClassVar[dict[str, tuple[str, str]]] = {
        "LIMETASK_ARCHIVE_RESULTS_TIMEOUT_SECONDS": (RESULTS, "timeout"),
        "LIMETASK_ARCHIVE_RESULTS_CONNECTIONS": (RESULTS, "connections"),
        "LIMETASK_ARCHIVE_DASHBOARD_TIMEOUT_SECONDS": (DASHBOARD, "timeout"),
        "LIMETASK_ARCHIVE_DASHBOARD_CONNECTIONS": (DASHBOARD, "connections"),
        "LIMETASK_ARCHIVE_EXACT_COUNT_LIMIT": ("", "exact_count_limit"),
    }
    MAXIMA: ClassVar[dict[str, float]] = {"timeout": 3600, "connections": 100, "exact_count_limit": 10**12}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ReadLimits":
        """The defaults, with LIMETASK_ARCHIVE_{RESULTS,DASHBOARD}_{TIMEOUT_SECONDS,CONNECTIONS}
        and LIMETASK_ARCHIVE_EXACT_COUNT_LIMIT where set."""
        env = os.environ if env is None else env
        given: dict[tuple[str, str], float] = {}
        for var, key in cls.ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value = float(raw) if key[1] == "timeout" else int(raw)
            except ValueError:
                raise InvalidTaskError(f"{var} must be a number, not {raw[:40]!r}") from None
            if not 0 < value <= cls.MAXIMA[key[1]]:
                raise InvalidTaskError(f"{var} must be above 0 and at most {cls.MAXIMA[key[1]]:g}, not {raw[:40]!r}")
            given[key] = value
        d = cls()

        def kind(k: ReadKind) -> ReadKind:
            return dataclasses.replace(k, timeout=given.get((k.name, "timeout"), k.timeout),
                                       connections=int(given.get((k.name, "connections"), k.connections)))

        return dataclasses.replace(d, results=kind(d.results), dashboard=kind(d.dashboard),
                                   exact_count_limit=int(given.get(("", "exact_count_limit"), d.exact_count_limit)))


class StateCounts(dict[str, int]):
    """Archived tasks by state. `estimated`: the planner's estimates, not a count."""

    def __init__(self, counts: Mapping[str, int] | Iterable[tuple[str, int]] = (), estimated: bool = False) -> None:
        super().__init__(counts)
        self.estimated = estimated


UNKNOWN, UP, DOWN = "unknown", "up", "down"
UNREACHABLE = "the archive cannot be reached"


class Circuit:
    """Whether the archive is known to be down. While it is, reads fail at once instead of
    waiting seconds each for a connection; a probe in the background closes the circuit
    again once the archive answers."""

    def __init__(self) -> None:
        self.state = UNKNOWN
        self.lock = threading.Lock()

    def opened(self) -> bool:
        """The archive is down; whether it was not known to be (the change is logged once)."""
        with self.lock:
            changed, self.state = self.state != DOWN, DOWN
            return changed

    def closed(self) -> bool:
        """The archive answered; whether it was known to be down."""
        with self.lock:
            changed, self.state = self.state == DOWN, UP
            return changed


def _configure(kind: ReadKind) -> Callable[[Any], None]:
    """Settings of each new connection of a kind of read: its statement timeout, read only."""
    def configure(conn: Any) -> None:
        conn.execute(f"SET statement_timeout = {max(1, int(kind.timeout * 1000))}")
        conn.execute("SET default_transaction_read_only = on")
    return configure


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ArchiveReader:
    """Reads archived tasks (psycopg): a pool of connections per kind of read (see RESULTS,
    DASHBOARD), a statement timeout on every read, and a circuit that fails reads at once
    while the archive is known to be down.

    Error messages never hold the database's own words (its host, its user): those go to the
    log, without secrets; callers (the HTTP endpoint) pass the message on as it is."""

    def __init__(self, url: str, limits: ReadLimits | None = None) -> None:
        from psycopg_pool import ConnectionPool

        self.url = check_url(url)
        self.limits = limits or ReadLimits.from_env()
        self.circuit = Circuit()
        self.closing = threading.Event()
        self.probing = threading.Lock()
        self.pools: dict[str, ConnectionPool[Any]] = {}
        for kind in (self.limits.results, self.limits.dashboard):
            # No prepared statements: the dashboard's queries take arrays of names whose size
            # varies, and a generic plan of `name = ANY($1)` cannot hash them (custom plans do).
            # No connection kept open while idle (min_size 0): an archive that is down is then
            # asked by the probe alone, not by pools reconnecting in the background.
            self.pools[kind.name] = ConnectionPool(
                url, min_size=0, max_size=kind.connections, open=False, timeout=kind.wait,
                configure=_configure(kind), name=f"archive-{kind.name}",
                kwargs={"connect_timeout": max(1, int(self.limits.connect_timeout)), "autocommit": True,
                        "prepare_threshold": None, "application_name": f"limetask-web-{kind.name}"})
            self.pools[kind.name].open(wait=False)
        self._probe_soon()  # at start: an archive that is down (a wrong password) is known at once

    @property
    def state(self) -> str:
        """`up`, `down` or `unknown` (not asked yet): for a health answer."""
        return self.circuit.state

    def close(self) -> None:
        self.closing.set()
        for pool in self.pools.values():
            pool.close()

    # -- the circuit ----------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        self._opened(exc)
        self._probe_soon()

    def _opened(self, exc: BaseException) -> None:
        """The circuit opens: said once, with the reason (without secrets)."""
        if self.circuit.opened():
            LOG.warning("the archive at %s cannot be reached (%s: %s); archive reads fail at once until it "
                        "answers again (asked every %gs)", redact(self.url), type(exc).__name__,
                        redact(_first_line(exc)), self.limits.probe_every)

    def _probe_soon(self) -> None:
        if self.probing.acquire(blocking=False):
            threading.Thread(target=self._probe, name="archive-probe", daemon=True).start()

    def _probe(self) -> None:
        """Ask the archive until it answers (then the circuit closes), once per probe_every."""
        import psycopg

        try:
            while not self.closing.is_set():
                try:
                    with psycopg.connect(self.url, connect_timeout=max(1, int(self.limits.connect_timeout)),
                                         autocommit=True, application_name="limetask-web-probe") as conn:
                        conn.execute("SELECT 1")
                except psycopg.Error as exc:
                    self._opened(exc)
                    self.closing.wait(self.limits.probe_every)
                    continue
                for pool in self.pools.values():
                    pool.check()  # connections broken by the outage are not handed out
                if self.circuit.closed():
                    LOG.warning("the archive at %s answers again", redact(self.url))
                return
        finally:
            self.probing.release()

    # -- reading --------------------------------------------------------------------------

    def _fetch(self, kind: ReadKind, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of one statement, on `kind`'s own connections, within its timeout."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self.circuit.state == DOWN:
            raise ArchiveError(UNREACHABLE)
        pool = self.pools[kind.name]
        try:
            with pool.connection() as conn:
                rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
        except psycopg.errors.QueryCanceled as exc:
            LOG.warning("an archive read of the %s took longer than its %gs: %s", kind.name, kind.timeout,
                        redact(_first_line(exc)))
            raise ArchiveTimeout(f"the archive did not answer within {kind.timeout:g} s") from exc
        except PoolTimeout as exc:
            if pool.get_stats().get("pool_size", 0) == 0:  # no connection could be made at all
                self._down(exc)
                raise ArchiveError(UNREACHABLE) from exc
            raise ArchiveError(f"the archive is busy: all {kind.connections} connections for {kind.name} "
                               "reads are in use") from exc
        except psycopg.OperationalError as exc:
            self._down(exc)
            raise ArchiveError(UNREACHABLE) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise ArchiveError("the archive has no schema yet (the operator creates it at start: "
                               "`limetask archive migrate`)") from exc
        except psycopg.Error as exc:
            LOG.warning("an archive read of the %s failed: %s: %s", kind.name, type(exc).__name__,
                        redact(_first_line(exc)))
            raise ArchiveError("reading the archive failed (the endpoint's log says why)") from exc
        if self.circuit.state != UP and self.circuit.closed():
            LOG.warning("the archive at %s answers again", redact(self.url))
        return rows

    def get(self, namespace: str, task_id: str, app: str) -> dict[str, Any] | None:
        """The newest archived incarnation of a task of `app`, or None (missing, or another
        application's: the two look the same)."""
        rows = self._fetch(self.limits.results, f"{SELECT} WHERE namespace = %s AND name = %s AND app = %s "
                           "ORDER BY completed_at DESC LIMIT 1", (namespace, task_id, app))
        return body_of(*rows[0][:6]) if rows else None

    def archived_uids(self, namespace: str, names: Sequence[str]) -> set[str]:
        """The UIDs of the archived incarnations of these tasks (the endpoint's live pages leave
        out the tasks the archive has already)."""
        rows = self._fetch(self.limits.results,
                           f"SELECT uid::text FROM {TABLE} WHERE namespace = %s AND name = ANY(%s)",
                           (namespace, builtins.list(names)))
        return {str(r[0]) for r in rows}

    def ping(self) -> None:
        """Raises `ArchiveError` unless the archive answers (the endpoint's /readyz)."""
        self._fetch(self.limits.results, "SELECT 1", ())

    def list(self, namespace: str, app: str | None = None, state: str | None = None, limit: int = 100,
             cursor: str | None = None) -> Page:
        """Archived tasks of the namespace (of one application), newest first (the results API)."""
        where, params = self._where(namespace, None if app is None else [app], None, state, None, None, None, ())
        return self._page(self.limits.results, where, params, limit, cursor)

    def _page(self, kind: ReadKind, where: builtins.list[str], params: builtins.list[Any], limit: int,
              cursor: str | None) -> Page:
        if cursor:
            when, uid = decode_cursor(cursor)
            where.append("(completed_at, uid) < (%s, %s)")
            params += [when, uid]
        rows = self._fetch(kind, f"{SELECT} WHERE {' AND '.join(where)} ORDER BY completed_at DESC, uid DESC LIMIT %s",
                           (*params, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1][6], str(rows[-1][2])) if more and rows else None
        return Page([body_of(*r[:6]) for r in rows], nxt)

    # -- the dashboard: filters, counts and chart figures, computed in the database ---------

    @staticmethod
    def _where(namespace: str, apps: Sequence[str] | None, task: str | None, state: str | None,
               reason: str | None, since: dt.datetime | None, until: dt.datetime | None,
               exclude: Sequence[str], name_prefix: str | None = None
               ) -> tuple[builtins.list[str], builtins.list[Any]]:
        # (builtins.list: in the class's scope, `list` names the method ArchiveReader.list.)
        where: list[str] = ["namespace = %s"]
        params: list[Any] = [namespace]
        if apps is not None:
            where.append("app = ANY(%s)")
            params.append(list(apps))
        if task:
            # A prefix: a package's tasks. LIKE's own wildcards in the name are taken literally.
            where.append("task LIKE %s ESCAPE '\\'")
            params.append(task.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if name_prefix:
            # Task ids that start so: a schedule's runs ({schedule}-{tick}).
            where.append("name LIKE %s ESCAPE '\\'")
            params.append(_like_prefix(name_prefix))
        if state:
            where.append("state = %s")
            params.append(state)
        if reason:
            where.append("reason = %s")
            params.append(reason)
        if since is not None:
            where.append("completed_at >= %s")
            params.append(since)
        if until is not None:
            where.append("completed_at < %s")
            params.append(until)
        if exclude:
            # Tasks still in the cluster (archived but not yet deleted) are counted there.
            where.append("NOT (name = ANY(%s))")
            params.append(list(exclude))
        return where, params

    def search(self, namespace: str, *, apps: Sequence[str] | None = None, task: str | None = None,
               state: str | None = None, reason: str | None = None, since: dt.datetime | None = None,
               until: dt.datetime | None = None, exclude: Sequence[str] = (), limit: int = 50,
               cursor: str | None = None, name_prefix: str | None = None) -> Page:
        """Archived tasks matching the dashboard's filters (and ids that start with `name_prefix`),
        newest first, paged by cursor."""
        where, params = self._where(namespace, apps, task, state, reason, since, until, exclude, name_prefix)
        return self._page(self.limits.dashboard, where, params, limit, cursor)

    def count_states(self, namespace: str, *, apps: Sequence[str] | None = None, task: str | None = None,
                     reason: str | None = None, since: dt.datetime | None = None,
                     until: dt.datetime | None = None, exclude: Sequence[str] = ()) -> StateCounts:
        """How many archived tasks match, by state: counted up to `exact_count_limit` rows (by
        the planner's estimate), estimated by the planner beyond it, or when counting takes
        longer than the dashboard's statement timeout."""
        where, params = self._where(namespace, apps, task, None, reason, since, until, exclude)
        cond = " AND ".join(where)
        if self._estimate(f"SELECT 1 FROM {TABLE} WHERE {cond}", params) <= self.limits.exact_count_limit:
            try:
                rows = self._fetch(self.limits.dashboard, f"SELECT state, count(*) FROM {TABLE} WHERE {cond} "
                                   "GROUP BY state", tuple(params))
                return StateCounts({str(state): int(n) for state, n in rows})
            except ArchiveTimeout:
                pass
        estimates = {state: self._estimate(f"SELECT 1 FROM {TABLE} WHERE {cond} AND state = %s", [*params, state])
                     for state in sorted(FINAL_STATES)}
        return StateCounts({state: n for state, n in estimates.items() if n}, estimated=True)

    def _estimate(self, sql: str, params: builtins.list[Any]) -> int:
        """The planner's estimate of how many rows a query returns (it runs nothing)."""
        rows = self._fetch(self.limits.dashboard, f"EXPLAIN (FORMAT JSON) {sql}", tuple(params))
        plan = rows[0][0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def chart_figures(self, namespace: str, *, apps: Sequence[str] | None, since: dt.datetime,
                      until: dt.datetime, step: int, exclude: Sequence[str] = (),
                      live: Sequence[tuple[str, float]] = (), top: int = 15) -> dict[str, Any]:
        """Figures of the archived tasks in a window, by bucket of `step` seconds: sent, started
        and finished (by state); failures by reason; and run-time percentiles per task name,
        over the archived runs and the `live` ones (task, seconds) together."""
        where, params = self._where(namespace, apps, None, None, None, since, None, exclude)
        base = " AND ".join(where)
        bucket = "floor(extract(epoch FROM ({col} - %s)) / %s)::int"
        counts = self._fetch(
            self.limits.dashboard,
            f"SELECT kind, b, reason, count(*) FROM ("
            f" SELECT 'sent' AS kind, {bucket.format(col='created_at')} AS b, '' AS reason FROM {TABLE}"
            f"  WHERE {base} AND created_at >= %s AND created_at < %s"
            f" UNION ALL SELECT 'started', {bucket.format(col='started_at')}, '' FROM {TABLE}"
            f"  WHERE {base} AND started_at >= %s AND started_at < %s"
            f" UNION ALL SELECT state, {bucket.format(col='completed_at')}, reason FROM {TABLE}"
            f"  WHERE {base} AND completed_at < %s"
            f") x GROUP BY kind, b, reason",
            (since, step, *params, since, until, since, step, *params, since, until, since, step, *params, until))
        tasks = [t for t, _ in live]
        seconds = [float(d) for _, d in live]
        percentiles = self._fetch(
            self.limits.dashboard,
            f"SELECT task, count(*), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY d), max(d) FROM ("
            f" SELECT task, greatest(0, extract(epoch FROM (completed_at - started_at)))::float8 AS d FROM {TABLE}"
            f"  WHERE {base} AND completed_at < %s AND started_at IS NOT NULL"
            f" UNION ALL SELECT * FROM unnest(%s::text[], %s::float8[])"
            f") x GROUP BY task ORDER BY count(*) DESC, task LIMIT %s",
            (*params, until, tasks, seconds, top))
        return {
            "counts": [(str(k), int(b), str(r), int(n)) for k, b, r, n in counts],
            "runtimes": [{"task": t, "count": int(n), "p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]),
                          "max": float(m)} for t, n, p, m in percentiles],
        }


def _like_prefix(text: str) -> str:
    """A LIKE pattern for what starts with `text` (its own wildcards taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
