"""`python -m bench --only archive30m`: the archive at a month of history, 30 million tasks.

PostgreSQL alone (no cluster, no operator process): the tasks are generated inside the
database (INSERT ... SELECT over generate_series, one daily partition at a time, each then
attached, which builds the first schema's indexes), with the shape of a busy installation:
three namespaces (80/15/5%), 200 applications and 40 task names with skewed use, 5% failures
with four reasons, run times from seconds to minutes. Measured:
- generation and size on disk (for the record);
- the migration from the first schema to the newest on that data (the every-application index,
  a partition at a time), and the longest single-row insert while it runs; the same for the
  former migration's single statement (the index on the whole archive at once);
- the results API's read (`ArchiveReader.get` of an archived task) p50/p99, idle and while the
  dashboard's reads keep every dashboard connection busy;
- the dashboard's newest page and its counts by state, for every application and for one
  (counts beyond the exact-count limit are the planner's estimates: timed both ways);
- a day's partition made and an old one dropped while long dashboard reads run: the former
  statements (CREATE TABLE ... PARTITION OF, DROP TABLE) against the operator's (CREATE TABLE
  LIKE + ATTACH PARTITION, DETACH PARTITION CONCURRENTLY + DROP), each with how long the
  statement took and the longest insert and results read that overlapped it.

BENCH_ARCHIVE_ROWS (30,000,000) and BENCH_ARCHIVE_DAYS (30) set the size, BENCH_ARCHIVE_URL the
server (its database `limetask` is used to make a database of the run's own, dropped at the end).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get("BENCH_ARCHIVE_URL", "postgresql://limetask:limetask@127.0.0.1:5432/limetask")
ROWS = int(os.environ.get("BENCH_ARCHIVE_ROWS", "30000000"))
DAYS = int(os.environ.get("BENCH_ARCHIVE_DAYS", "30"))
REPO = Path(__file__).resolve().parent.parent
NAMESPACES = ("prod", "staging", "dev")  # 80%, 15%, 5% of the tasks
APPS = 200
TASKS = [f"acme_solution.tasks.{area}.{verb}" for area in ("crm", "erp", "mail", "reports", "sync")
         for verb in ("import_deals", "export", "sync_companies", "send", "nightly", "cleanup", "refresh", "notify")]
BYTES_PER_ROW = 900  # on disk with the indexes, a generous estimate: the run refuses to fill the disk


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def database(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


# -- generating ---------------------------------------------------------------------------------

# (format()'s %s are doubled: the statement's own parameters are psycopg's %(name)s.)
GENERATE = """
INSERT INTO {table} (uid, namespace, name, app, task, state, reason, attempts, created_at, started_at,
                     completed_at, archived_at, spec, status)
SELECT gen_random_uuid(), ns, name, app, task, state, reason, attempts, done - run - queued, done - run, done,
       done + interval '10 min',
       format('{{"task":"%%s","app":"%%s","args":[%%s,["name","phone"]],"kwargs":{{}},"acksLate":false}}',
              task, app, g),
       CASE WHEN state = 'SUCCESS' THEN
         format('{{"state":"SUCCESS","result":"updated %%s deals","attempts":%%s,"startedAt":"%%s","completedAt":"%%s",'
                '"jobName":"%%s-1","history":[{{"attempt":1,"outcome":"SUCCESS"}}],'
                '"event":{{"confirmed":true,"messageId":"%%s.SUCCESS","deliveryAttempts":1}}}}',
                g %% 500, attempts, to_char(done - run, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                to_char(done, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), name, name)
       ELSE
         format('{{"state":"FAILURE","error":{{"type":"ValueError","message":"the CRM said no","reason":"%%s"}},'
                '"attempts":%%s,"startedAt":"%%s","completedAt":"%%s","jobName":"%%s-1",'
                '"history":[{{"attempt":1,"outcome":"%%s"}}],'
                '"event":{{"confirmed":true,"messageId":"%%s.FAILURE","deliveryAttempts":1}}}}',
                reason, attempts, to_char(done - run, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                to_char(done, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), name, reason, name)
       END
FROM (
  SELECT g, CASE WHEN r1 < 0.80 THEN 'prod' WHEN r1 < 0.95 THEN 'staging' ELSE 'dev' END AS ns,
         %(prefix)s || g AS name,
         'app-' || lpad(floor(%(apps)s * r2 ^ 3)::int::text, 3, '0') AS app,
         (%(tasks)s::text[])[1 + floor(%(ntasks)s * r3 ^ 2)::int] AS task,
         CASE WHEN r4 < 0.95 THEN 'SUCCESS' ELSE 'FAILURE' END AS state,
         CASE WHEN r4 < 0.95 THEN '' WHEN r4 < 0.98 THEN 'TaskRaised' WHEN r4 < 0.99 THEN 'WorkerLost'
              WHEN r4 < 0.997 THEN 'TimedOut' ELSE 'RetriesExhausted' END AS reason,
         CASE WHEN r5 < 0.97 THEN 1 ELSE 2 END AS attempts,
         %(start)s::timestamptz + (g - 1 + r5) * (interval '1 day' / %(n)s) AS done,
         make_interval(secs => exp(r6 * 6)) AS run,
         make_interval(secs => r1 * 3) AS queued
  FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6
        FROM generate_series(1, %(n)s) AS g) AS r
) AS x
"""


def generate(url: str, rows: int, days: int, last_day: dt.date) -> dict[str, Any]:
    """`rows` tasks over `days` daily partitions ending with `last_day`, made as the first schema
    version leaves them (its indexes on each partition), vacuumed and analyzed as autovacuum would."""
    import psycopg

    from lime_task.archive import TABLE, partition_name, partition_statements

    started = time.monotonic()
    per_day = rows // days
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")  # the load only: nothing measured depends on it
        conn.execute("SET maintenance_work_mem = '256MB'")
        for k in range(days):
            day = last_day - dt.timedelta(days=days - 1 - k)
            name = partition_name(day)
            t = time.monotonic()
            create, attach = partition_statements(day)
            conn.execute(create)
            conn.execute(GENERATE.format(table=name), {
                "prefix": f"t{day:%Y%m%d}-", "apps": APPS, "tasks": TASKS, "ntasks": len(TASKS),
                "start": dt.datetime.combine(day, dt.time(), dt.timezone.utc), "n": per_day})
            conn.execute(attach)  # builds the partition's indexes
            conn.execute(f"VACUUM (ANALYZE) {name}")
            log(f"   {name}: {per_day:,} tasks in {time.monotonic() - t:.1f}s ({k + 1}/{days})")
        size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                            "WHERE i.inhparent = %s::regclass", (TABLE,)).fetchone()
    seconds = time.monotonic() - started
    assert size is not None
    return {"rows": per_day * days, "days": days, "seconds": round(seconds, 1),
            "rows_per_second": round(per_day * days / seconds), "gib": round(int(size[0]) / 2**30, 2),
            "bytes_per_row": round(int(size[0]) / max(per_day * days, 1))}


# -- load, and what it does to the others -------------------------------------------------------

@dataclasses.dataclass
class Probe:
    """A loop of one small operation, each timed: when it started and how long it took."""

    name: str
    op: Callable[[], Any]
    every: float = 0.02
    samples: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    errors: int = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                self.op()
            except Exception:  # noqa: BLE001 - counted: the probe goes on
                self.errors += 1
            self.samples.append((t, time.monotonic() - t))
            stop.wait(self.every)

    def worst_during(self, start: float, end: float) -> float:
        """The longest operation that overlapped [start, end]."""
        return max((d for t, d in self.samples if t <= end and t + d >= start), default=0.0)


@contextmanager
def running(loops: list[Callable[[threading.Event], None]]) -> Iterator[threading.Event]:
    stop = threading.Event()
    threads = [threading.Thread(target=fn, args=(stop,), daemon=True) for fn in loops]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join(60)


def dashboard_load(reader: Any, namespace: str) -> Callable[[threading.Event], None]:
    """A dashboard user who keeps asking the heaviest questions, on the reader's dashboard
    connections: every application's exact counts over the whole archive (what each page asked
    before counts were estimated), failures of one reason, a month of charts."""
    from lime_task.archive import TABLE, ArchiveError

    now = dt.datetime.now(dt.timezone.utc)
    questions: list[Callable[[], Any]] = [
        lambda: reader._fetch(reader.limits.dashboard, f"SELECT state, count(*) FROM {TABLE} WHERE namespace = %s "
                              "GROUP BY state", (namespace,)),
        lambda: reader.search(namespace, reason="TimedOut", limit=50),
        lambda: reader.chart_figures(namespace, apps=None, since=now - dt.timedelta(days=30), until=now, step=86400),
    ]

    def loop(stop: threading.Event) -> None:
        i = random.randrange(len(questions))
        while not stop.is_set():
            try:
                questions[i % len(questions)]()
            except ArchiveError:
                stop.wait(0.05)  # busy, or over the statement timeout: asked again, as a reloading user does
            i += 1

    return loop


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def figures(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values, default=float("nan")))}


# -- the scenario -------------------------------------------------------------------------------

def run(results: dict[str, Any], rows: int = ROWS, days: int = DAYS, samples: int = 300) -> dict[str, Any]:
    """The whole scenario on a database of its own; the figures go to results["archive30m"]."""
    import psycopg

    from lime_task.archive import migrate

    need = rows * BYTES_PER_ROW
    free = shutil.disk_usage("/").free
    if need > free * 0.8:
        raise SystemExit(f"archive30m: {rows:,} tasks need about {need / 2**30:.0f} GiB; {free / 2**30:.0f} GiB are "
                         "free here: set BENCH_ARCHIVE_ROWS lower")
    name = f"limetask_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        server = conn.execute("SHOW server_version").fetchone()
    url = database(name)
    out: dict[str, Any] = {"conditions": {"server": server[0] if server else "?", "cpus": os.cpu_count(),
                                          "database": name,
                                          "settings": "PostgreSQL defaults (shared_buffers 128MB, work_mem 4MB, "
                                                      "maintenance_work_mem 64MB); generation alone: 256MB"}}
    results["archive30m"] = out
    try:
        migrate(url, "0001")
        today = dt.datetime.now(dt.timezone.utc).date()
        log(f"archive30m: generating {rows:,} tasks over {days} daily partitions in PostgreSQL")
        out["generate"] = generate(url, rows, days, today - dt.timedelta(days=1))
        log(f"   {out['generate']}")

        log("archive30m: the former migration's single statement (the index on the whole archive at once), "
            "inserting a row every 20 ms meanwhile; then the index is dropped again")
        out["former_migration"] = measure_former_migration(url, today)
        log(f"   {out['former_migration']}")
        log("archive30m: migrating from the first schema to the newest, inserting a row every 20 ms meanwhile")
        out["migration"] = measure_migration(url, today)
        log(f"   {out['migration']}")

        out.update(measure_reads(url, samples))
        out["partitions"] = measure_partitions(url, today, days)
        log(f"   {out['partitions']}")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return out


def insert_one(url: str, day: dt.date) -> Callable[[], None]:
    """A single-row insert, as the operator's writer does, into `day`'s partition (made first)."""
    import psycopg

    from lime_task.archive import COLUMNS, TABLE, partition_name, partition_statements

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (partition_name(day),)).fetchone() == (None,):
            with conn.transaction():
                for statement in partition_statements(day):
                    conn.execute(statement)
    conn = psycopg.connect(url, autocommit=True, application_name="bench-writer")
    sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    when = dt.datetime.combine(day, dt.time(12), dt.timezone.utc)

    def insert() -> None:
        conn.execute(sql, (uuid.uuid4(), "prod", f"w-{uuid.uuid4().hex[:12]}", "app-000", TASKS[0], "SUCCESS", "", 1,
                           when, when, when, "{}", '{"state":"SUCCESS"}'))

    return insert


def measure_former_migration(url: str, today: dt.date) -> dict[str, Any]:
    """What the first release of migration 0002 ran: one CREATE INDEX on the partitioned archive,
    which holds each partition's SHARE lock (no insert) while it builds. (The operator stopped a
    migration after 120 s, and it started over at the next try.)"""
    import psycopg

    writer = Probe("insert", insert_one(url, today))
    with running([writer.run]):
        t = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE INDEX limetask_archive_by_time ON limetask_archive "
                         "(namespace, completed_at DESC, uid DESC)")
        seconds = time.monotonic() - t
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX limetask_archive_by_time")
    return {"seconds": round(seconds, 1), "inserts": len(writer.samples), "insert_errors": writer.errors,
            "longest_insert_ms": ms(max((d for _, d in writer.samples), default=0.0))}


def measure_migration(url: str, today: dt.date) -> dict[str, Any]:
    writer = Probe("insert", insert_one(url, today))
    env = {**os.environ, "LIMETASK_ARCHIVE_URL": url}
    env.pop("LIMETASK_ARCHIVE_URL_FILE", None)
    with running([writer.run]):
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "limetask_operator.migrate"], env=env, cwd=REPO,
                              capture_output=True, text=True)
        seconds = time.monotonic() - t
    if proc.returncode != 0:
        raise RuntimeError(f"the migration failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    lines = proc.stdout.strip().splitlines()
    return {"seconds": round(seconds, 1), "partitions": sum(" partition " in line for line in lines),
            "version": lines[-1] if lines else "?", "inserts": len(writer.samples), "insert_errors": writer.errors,
            "insert_p50_ms": ms(pct([d for _, d in writer.samples], 50)),
            "longest_insert_ms": ms(max((d for _, d in writer.samples), default=0.0))}


def sample_tasks(url: str, n: int) -> list[tuple[str, str, str]]:
    """(namespace, name, app) of archived tasks spread over every partition."""
    import psycopg

    from lime_task.archive import TABLE

    with psycopg.connect(url, autocommit=True) as conn:
        found = [tuple(r) for r in conn.execute(
            f"SELECT namespace, name, app FROM {TABLE} TABLESAMPLE SYSTEM (0.2) LIMIT %s", (n * 5,)).fetchall()]
        if len(found) < n:  # a small archive: a few pages hold it all
            found = [tuple(r) for r in conn.execute(
                f"SELECT namespace, name, app FROM {TABLE} LIMIT %s", (n * 5,)).fetchall()]
    random.Random(7).shuffle(found)
    return [(str(a), str(b), str(c)) for a, b, c in found[:n]]


def measure_reads(url: str, samples: int) -> dict[str, Any]:
    from lime_task.archive import ArchiveReader

    out: dict[str, Any] = {}
    reader = ArchiveReader(url)
    try:
        tasks = sample_tasks(url, samples)
        picks = iter(tasks * 3)

        def get() -> None:
            ns, name, app = next(picks)
            assert reader.get(ns, name, app) is not None

        log("archive30m: get_status of archived tasks (ArchiveReader.get), idle")
        get()
        out["get_idle"] = figures(timed(get, samples))
        log(f"   {out['get_idle']}")
        log("archive30m: the same while the dashboard's reads keep every dashboard connection busy")
        with running([dashboard_load(reader, "prod") for _ in range(4)]):
            time.sleep(2)
            out["get_dashboard_busy"] = figures(timed(get, samples))
        log(f"   {out['get_dashboard_busy']}")

        app = "app-000"  # the busiest application
        log("archive30m: the dashboard's newest page and counts, every application and one")
        dashboard: dict[str, Any] = {}
        every: list[str] | None = None
        for label, apps in (("every_app", every), ("one_app", [app])):
            page = functools.partial(reader.search, "prod", apps=apps, limit=50)
            count = functools.partial(reader.count_states, "prod", apps=apps)
            dashboard[f"newest_page_{label}"] = figures(timed(page, 20))
            counts = count()
            dashboard[f"counts_{label}"] = {**figures(timed(count, 5)), "estimated": counts.estimated,
                                            "total": sum(counts.values())}
            dashboard[f"exact_counts_{label}"] = exact_counts(reader, "prod", apps)
        out["dashboard"] = dashboard
        log(f"   {dashboard}")
    finally:
        reader.close()
    return out


def exact_counts(reader: Any, namespace: str, apps: list[str] | None) -> dict[str, Any]:
    """An exact count (what every page asked before estimates), timed; within the dashboard's
    statement timeout, or not."""
    import psycopg

    from lime_task.archive import TABLE

    where = "namespace = %s" + (" AND app = ANY(%s)" if apps else "")
    params: tuple[Any, ...] = (namespace, apps) if apps else (namespace,)
    with psycopg.connect(reader.url, autocommit=True) as conn:
        t = time.perf_counter()
        rows = conn.execute(f"SELECT state, count(*) FROM {TABLE} WHERE {where} GROUP BY state", params).fetchall()
        seconds = time.perf_counter() - t
    return {"ms": ms(seconds), "total": sum(int(n) for _, n in rows),
            "within_dashboard_timeout": seconds <= reader.limits.dashboard.timeout}


def measure_partitions(url: str, today: dt.date, days: int) -> dict[str, Any]:
    """Make a partition and drop one while long dashboard reads run, the former way and the
    operator's, and how long inserts and results reads stall meanwhile."""
    import psycopg
    from limetask_operator.archive import Archiver
    from limetask_operator.settings import OperatorSettings

    from lime_task.archive import TABLE, ArchiveReader, partition_name

    log("archive30m: a partition made and one dropped while long dashboard reads run")
    reader = ArchiveReader(url)
    task = sample_tasks(url, 1)[0]
    writer = Probe("insert", insert_one(url, today))
    results = Probe("get", lambda: reader.get(*task))
    archiver = Archiver(None, OperatorSettings(), url)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()  # the archiver's pool lives in one event loop
    loop.run_until_complete(archiver._open())
    out: dict[str, Any] = {}
    first = today - dt.timedelta(days=days)  # the oldest generated day

    windows: dict[str, tuple[float, float]] = {}

    def ddl(label: str, fn: Callable[[], dict[str, int] | None]) -> None:
        time.sleep(1.0)  # the long reads are under way
        t = time.monotonic()
        more = fn()
        windows[label] = (t, time.monotonic())
        out[label] = {"statement_ms": ms(windows[label][1] - t), **(more or {})}

    def former(sql: str) -> Callable[[], None]:
        def go() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)
        return go

    def operators_drop() -> dict[str, int]:
        """Retention that drops the oldest day left; tried again at once after a lock timeout
        (the operator waits a minute)."""
        tries = 0
        while True:
            tries += 1
            try:
                loop.run_until_complete(archiver.drop_expired(1, today=first + dt.timedelta(days=3)))
                return {"tries": tries}
            except psycopg.errors.LockNotAvailable:
                continue

    try:
        with running([writer.run, results.run, *[dashboard_load(reader, "prod") for _ in range(2)]]):
            day = today + dt.timedelta(days=10)
            ddl("create_former", former(
                f"CREATE TABLE {partition_name(day)} PARTITION OF {TABLE} FOR VALUES FROM "
                f"('{day} 00:00:00+00') TO ('{day + dt.timedelta(days=1)} 00:00:00+00')"))
            ddl("create_operator", lambda: {"made": len(loop.run_until_complete(
                archiver._make_partitions({today + dt.timedelta(days=11)})))})
            ddl("drop_former", former(f"DROP TABLE {partition_name(first)}"))
            ddl("drop_operator", operators_drop)
        # The stalls once every probe has finished what it was doing (a blocked one records its
        # time when it ends, just after the statement that blocked it).
        for label, (t, end) in windows.items():
            out[label].update(longest_insert_ms=ms(writer.worst_during(t, end)),
                              longest_results_read_ms=ms(results.worst_during(t, end)))
            log(f"   {label}: {out[label]}")
        out["insert_errors"], out["results_read_errors"] = writer.errors, results.errors
    finally:
        loop.run_until_complete(archiver.stop())
        loop.close()
        reader.close()
    return out


def row(results: dict[str, Any]) -> list[str]:
    """The table's lines (bench/__main__.py)."""
    a = results.get("archive30m")
    if not a or "partitions" not in a:
        return []
    g, m, d, p = a["generate"], a["migration"], a["dashboard"], a["partitions"]
    return [
        f"archive30m {g['rows']:,} tasks, {g['days']} days, {g['gib']} GiB: generated in {g['seconds']}s",
        f"archive30m migration 0001->0002 {m['seconds']}s over {m['partitions']} partitions; longest insert "
        f"meanwhile {m['longest_insert_ms']} ms (the former single statement: {a['former_migration']['seconds']}s, "
        f"longest insert {a['former_migration']['longest_insert_ms']} ms)",
        f"archive30m get p50/p99 idle {a['get_idle']['p50_ms']}/{a['get_idle']['p99_ms']} ms, dashboard busy "
        f"{a['get_dashboard_busy']['p50_ms']}/{a['get_dashboard_busy']['p99_ms']} ms",
        f"archive30m newest page p50 every app {d['newest_page_every_app']['p50_ms']} ms, one app "
        f"{d['newest_page_one_app']['p50_ms']} ms; counts p50 every app {d['counts_every_app']['p50_ms']} ms "
        f"(estimated {d['counts_every_app']['estimated']}; exact {d['exact_counts_every_app']['ms']} ms), one app "
        f"{d['counts_one_app']['p50_ms']} ms (estimated {d['counts_one_app']['estimated']}; exact "
        f"{d['exact_counts_one_app']['ms']} ms)",
        *(f"archive30m {label}: {p[label]['statement_ms']} ms; longest insert {p[label]['longest_insert_ms']} ms, "
          f"results read {p[label]['longest_results_read_ms']} ms"
          for label in ("create_former", "create_operator", "drop_former", "drop_operator")),
    ]
