"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through
chromedriver, against the HTTP endpoint serving the local cluster's tasks (real API server,
operator and node), the real PostgreSQL archive and the real broker.

Screenshots of the main views are saved on every run (in the test's temporary folder); with
LIMETASK_SCREENSHOTS set to a folder (docs/, say) they are saved there instead.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, _free_port, wait_until
from kubernetes import client

from lime_task import FAILURE, SUCCESS, TaskClient
from lime_task.resource import GROUP, QUEUE_PLURAL, SCHEDULE_PLURAL, VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.archive]

T = "acme_solution.tasks.lime"
A, B = "app-alpha", "app-beta"


@dataclass
class Web:
    url: str
    tokens: dict[str, str]
    platform: str


@pytest.fixture
def web(cluster: Cluster, namespace: str, archive_db: str) -> Iterator[Web]:
    """The HTTP endpoint (with its dashboard) for the test's namespace: uvicorn, in a thread."""
    import uvicorn

    from lime_task.server.app import create_app

    tokens = {A: "token-a-" + uuid.uuid4().hex, B: "token-b-" + uuid.uuid4().hex}
    platform = "platform-" + uuid.uuid4().hex
    app = create_app(client=TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace, results_url=""),
                     tokens=tokens, platform_tokens={"ops": platform}, imports=[T], archive=archive_db)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=15, message="the HTTP endpoint")
    yield Web(f"http://127.0.0.1:{port}", tokens, platform)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), as root, with none of its calls home."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Chromium and chromedriver are missing: `make browser` installs Debian's chromium and "
                    "chromium-driver")
    profile = tempfile.mkdtemp(prefix="limetask-chromium-")
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1000", "--force-device-scale-factor=1",
                 "--lang=en-GB", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LIMETASK_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dashboard-{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, "an empty screenshot"
    return path


def until(driver: Any, predicate: Callable[[], Any], timeout: float = 60, message: str = "") -> Any:
    """`wait_until`, failing with what the page shows; an element not there yet is a no."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def probe() -> Any:
        try:
            return predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    try:
        return wait_until(probe, timeout=timeout, message=message or str(predicate))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; page: {driver.find_element('tag name', 'body').text[:2000]!r}") from None


def sign_in(driver: Any, web: Web, token: str, hash: str = "#/tasks") -> None:
    driver.get(f"{web.url}/dashboard/{hash}")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()  # a new page, without a token (get() of the same address would not reload)
    driver.get_log("browser")  # what earlier pages logged (a test's deliberate 404) is not this test's
    field = until(driver, lambda: driver.find_element("id", "token").is_displayed() and
                  driver.find_element("id", "token"), 20, "the sign-in form")
    field.send_keys(token)
    driver.find_element("css selector", "#signin-form button[type=submit]").click()
    until(driver, lambda: driver.find_element("id", "nav").is_displayed(), 20, "signed in")


def rows(driver: Any) -> dict[str, str]:
    """Task id → state of the rows the list shows."""
    found = driver.execute_script(
        "return [...document.querySelectorAll('#tasks-body tr[data-id]')].map(tr => [tr.dataset.id, tr.dataset.state])")
    return {i: s for i, s in found}


def counts(driver: Any) -> dict[str, int]:
    found = driver.execute_script(
        "return [...document.querySelectorAll('#counts button')].map(b => [b.dataset.state, "
        "b.querySelector('.n').textContent])")
    return {s: int(n) for s, n in found}


def errors_in_console(driver: Any) -> list[str]:
    """What the page logged as errors (a script error, a Content-Security-Policy refusal)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and "favicon" not in e["message"]]


def archived(namespace: str, name: str, app: str, state: str, completed: dt.datetime,
             task: str = f"{T}.add", reason: str = "TaskRaised") -> Any:
    """A finished task as the operator archives it (the same row builder)."""
    from lime_task.archive import row_of

    status: dict[str, Any] = {
        "state": state, "attempts": 1, "completedAt": completed.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "startedAt": (completed - dt.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "event": {"confirmed": True, "routingKey": f"core.task.{task}.{state.lower()}.v1"},
        "history": [{"attempt": 1, "outcome": state}]}
    if state == SUCCESS:
        status["result"] = 3
    else:
        status["error"] = {"type": "ValueError", "message": "archived failure", "reason": reason}
    return row_of(namespace, name, str(uuid.uuid4()), (completed - dt.timedelta(seconds=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), {"task": task, "app": app, "args": [1, 2], "kwargs": {}}, status)


def archive(url: str, *rows: Any) -> None:
    import psycopg

    from lime_task.archive import COLUMNS, PARTITION_LOCK, TABLE, partition_name, partition_statements

    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():  # the days' partitions, made as the operator makes them
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            for day in {row.day for row in rows}:
                if conn.execute("SELECT to_regclass(%s)", (partition_name(day),)).fetchone() == (None,):
                    for statement in partition_statements(day):
                        conn.execute(statement)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                            [row.values() for row in rows])


def send(tasks: TaskClient, name: str, app: str, *args: Any, **kwargs: Any) -> str:
    return tasks.send(f"{T}.{name}", app, list(args), kwargs).id  # type: ignore[no-any-return]


def test_the_list_follows_a_task_through_its_states_without_reloading(
        browser: Any, web: Web, tasks: TaskClient) -> None:
    sign_in(browser, web, web.tokens[A])
    until(browser, lambda: browser.find_element("id", "connection").text == "live", 20, "the live stream")
    # Every state a row shows, as it changes (a MutationObserver in the page), and a marker that
    # a reload would lose.
    browser.execute_script("""
        window.__stayed = true; window.__seen = {};
        const note = () => document.querySelectorAll('#tasks-body tr[data-id]').forEach(tr => {
          const s = window.__seen[tr.dataset.id] = window.__seen[tr.dataset.id] || [];
          if (s[s.length - 1] !== tr.dataset.state) s.push(tr.dataset.state);
        });
        new MutationObserver(note).observe(document.getElementById('tasks-body'), {childList: true, subtree: true});
    """)
    before = counts(browser)
    task_id = send(tasks, "sleep", A, 4)
    until(browser, lambda: rows(browser).get(task_id) == SUCCESS, 120, "the row to reach SUCCESS")
    seen = browser.execute_script("return window.__seen[arguments[0]]", task_id)
    assert browser.execute_script("return window.__stayed") is True, "the page was reloaded"
    assert seen[-2:] == ["STARTED", SUCCESS], seen
    assert seen[0] in ("PENDING", "STARTED") and len(seen) == len(set(seen)), seen
    # The counts follow too, from the stream.
    until(browser, lambda: counts(browser).get(SUCCESS) == before.get(SUCCESS, 0) + 1, 20, "the counts")
    assert errors_in_console(browser) == []


def test_filters_narrow_the_list_on_the_server_over_live_and_archived_tasks(
        browser: Any, web: Web, tasks: TaskClient, namespace: str, archive_db: str, tmp_path: Path) -> None:
    ok = [send(tasks, "add", A, 1, 2), send(tasks, "add", A, 2, 3)]
    bad = send(tasks, "fail", A, "no such company")
    other = send(tasks, "noop", A)
    for task_id in (*ok, bad, other):
        tasks.wait(task_id, A, timeout=120)
    now = dt.datetime.now(dt.timezone.utc)
    archive(archive_db,
            archived(namespace, "old-failure-" + uuid.uuid4().hex[:6], A, FAILURE, now - dt.timedelta(hours=30),
                     reason="WorkerLost"),
            archived(namespace, "recent-archived-" + uuid.uuid4().hex[:6], A, SUCCESS, now - dt.timedelta(hours=2)))
    sign_in(browser, web, web.tokens[A])
    until(browser, lambda: len(rows(browser)) == 5, 20, "five tasks in the last 24 hours")
    assert counts(browser) == {"ALL": 5, "PENDING": 0, "STARTED": 0, SUCCESS: 4, FAILURE: 1}

    # State: by the form, then by the count buttons.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "f-state")).select_by_value(FAILURE)
    browser.find_element("css selector", "#filters button[type=submit]").click()
    until(browser, lambda: rows(browser) == {bad: FAILURE}, 20, "failures only")
    browser.find_element("css selector", "#counts button[data-state=SUCCESS]").click()
    until(browser, lambda: set(rows(browser)) >= set(ok) and bad not in rows(browser), 20, "successes only")

    # A task-name prefix.
    browser.get(f"{web.url}/dashboard/#/tasks?task={T}.noop&window=86400")
    until(browser, lambda: list(rows(browser)) == [other], 20, "the noop task only")

    # A reason and a wider window reach the archive: the old WorkerLost failure.
    browser.get(f"{web.url}/dashboard/#/tasks?reason=WorkerLost&window=604800")
    until(browser, lambda: [(i.split("-")[0], s) for i, s in rows(browser).items()] == [("old", FAILURE)], 20,
          "the archived failure only")
    assert "(archived)" in browser.find_element("id", "tasks-body").text
    browser.get(f"{web.url}/dashboard/#/tasks?reason=WorkerLost&window=86400")
    until(browser, lambda: "No tasks match." in browser.find_element("id", "tasks-body").text, 20, "none in 24 h")
    browser.get(f"{web.url}/dashboard/#/tasks?window=all")
    until(browser, lambda: len(rows(browser)) == 6, 20, "all six, live and archived")
    # The counts by state span live and archived tasks whatever state the list shows.
    browser.get(f"{web.url}/dashboard/#/tasks?state=PENDING&window=all")
    until(browser, lambda: "No tasks match." in browser.find_element("id", "tasks-body").text, 20, "none pending")
    assert counts(browser) == {"ALL": 6, "PENDING": 0, "STARTED": 0, SUCCESS: 4, FAILURE: 2}
    screenshot(browser, "list", tmp_path)


def test_pages_of_a_thousand_tasks_are_filtered_and_paged_on_the_server(
        browser: Any, web: Web, namespace: str, archive_db: str) -> None:
    """1,200 archived tasks: the page holds 50, counts are of all, paging walks them in order."""
    now = dt.datetime.now(dt.timezone.utc)
    archive(archive_db, *(archived(namespace, f"bulk-{i:04d}", A, FAILURE if i % 10 == 0 else SUCCESS,
                                   now - dt.timedelta(minutes=1 + i)) for i in range(1200)))
    sign_in(browser, web, web.tokens[A], "#/tasks?window=604800")
    until(browser, lambda: counts(browser).get("ALL") == 1200, 30, "counts of all 1,200")
    assert counts(browser)[FAILURE] == 120
    first = until(browser, lambda: list(rows(browser)), 20, "the first page")
    assert first == [f"bulk-{i:04d}" for i in range(50)]
    browser.find_element("id", "page-next").click()
    until(browser, lambda: list(rows(browser)) == [f"bulk-{i:04d}" for i in range(50, 100)], 20, "page 2")
    browser.find_element("id", "page-prev").click()
    until(browser, lambda: list(rows(browser)) == first, 20, "page 1 again")


def test_the_detail_page_shows_a_task_whole_and_is_reached_by_keyboard(
        browser: Any, web: Web, tasks: TaskClient, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    bad = send(tasks, "fail", A, "the CRM said no <script>alert(1)</script>")
    status = tasks.wait(bad, A, timeout=120)
    assert status.status == FAILURE
    sign_in(browser, web, web.tokens[A])
    until(browser, lambda: bad in rows(browser), 20, "the failed task listed")
    # Keyboard only: Tab from the top of the page to the task's link, then Enter.
    body = browser.find_element("tag name", "body")
    body.click()
    for _ in range(80):
        body = browser.switch_to.active_element
        body.send_keys(Keys.TAB)
        if browser.execute_script("return document.activeElement.textContent") == bad:
            break
    else:
        raise AssertionError("the task's link is not reachable with Tab")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    until(browser, lambda: browser.find_element("id", "task-state").text == FAILURE, 20, "the detail page")
    page = browser.find_element("id", "task-body").text
    assert "TaskRaised" in page and f"{T}.fail" in page
    # Arguments and the error message, as text: nothing a task says is run as HTML.
    assert "the CRM said no <script>alert(1)</script>" in page
    assert browser.find_elements("css selector", "#task-body script") == []
    attempts = browser.find_element("id", "attempts").text
    assert "FAILURE" in attempts or "TaskRaised" in attempts
    # The completion event: delivered and confirmed by the broker.
    until(browser, lambda: browser.find_element("id", "event-confirmed").text.startswith("yes"), 60,
          "the event confirmed")
    assert f"core.task.{T}.fail.failure.v1" in browser.find_element("id", "task-body").text
    assert browser.find_elements("id", "cancel") == []  # finished: nothing to cancel
    screenshot(browser, "detail", tmp_path)
    assert errors_in_console(browser) == []


def test_a_token_for_one_application_never_sees_anothers_tasks_nor_their_counts(
        browser: Any, web: Web, tasks: TaskClient) -> None:
    mine = send(tasks, "add", A, 1, 1)
    theirs = [send(tasks, "add", B, 2, 2), send(tasks, "fail", B, "theirs")]
    for task_id in [mine, *theirs]:
        tasks.wait(task_id, A if task_id == mine else B, timeout=120)
    sign_in(browser, web, web.tokens[A])
    until(browser, lambda: mine in rows(browser), 20, "A's task")
    assert counts(browser) == {"ALL": 1, "PENDING": 0, "STARTED": 0, SUCCESS: 1, FAILURE: 0}
    # Not through a filter naming B, not by B's task's address, not through the stream.
    browser.get(f"{web.url}/dashboard/#/tasks?app={B}")
    until(browser, lambda: "No tasks match." in browser.find_element("id", "tasks-body").text, 20, "nothing of B")
    assert counts(browser)["ALL"] == 0
    browser.get(f"{web.url}/dashboard/#/task/{B}/{theirs[0]}")
    until(browser, lambda: "No such task" in browser.find_element("id", "task-error").text, 20, "404 for B's task")
    browser.get(f"{web.url}/dashboard/#/tasks")
    until(browser, lambda: mine in rows(browser), 20, "A's list again")
    late = send(tasks, "add", B, 3, 3)
    tasks.wait(late, B, timeout=120)
    time.sleep(3)  # the stream has had its chance to show it
    text = browser.find_element("tag name", "body").text
    assert all(t not in text for t in [*theirs, late]) and B not in text
    assert counts(browser)["ALL"] == 1
    # Charts: none of B's runs.
    browser.get(f"{web.url}/dashboard/#/charts")
    until(browser, lambda: "Runs" in browser.find_element("id", "table-runtimes").get_attribute("textContent"),
          30, "the run-time table")
    runtimes = browser.find_element("id", "table-runtimes").get_attribute("textContent")
    assert f"{T}.add" in runtimes and f"{T}.fail" not in runtimes
    # The platform token sees both applications.
    sign_in(browser, web, web.platform)
    until(browser, lambda: {mine, *theirs, late} <= set(rows(browser)), 20, "every application's tasks")
    # Signing out leaves nothing of what the platform token saw for the next token in the tab.
    browser.find_element("id", "signout").click()
    until(browser, lambda: browser.find_element("id", "token").is_displayed(), 10, "signed out")
    field = browser.find_element("id", "token")
    field.send_keys(web.tokens[A])
    browser.find_element("css selector", "#signin-form button[type=submit]").click()
    until(browser, lambda: mine in rows(browser), 20, "A's list after the platform's")
    suggested = browser.execute_script("return [...document.querySelectorAll('#apps option')].map(o => o.value)")
    assert B not in suggested and B not in browser.page_source


def test_cancel_is_there_only_for_a_token_that_may_cancel(
        browser: Any, web: Web, tasks: TaskClient, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    long = send(tasks, "sleep", A, 300)
    wait_until(lambda: tasks.get_status(long, A).status == "STARTED", timeout=120, message="the task to start")
    # The platform token looks, and may not cancel: no button, and the API says 403.
    sign_in(browser, web, web.platform, f"#/task/{A}/{long}")
    until(browser, lambda: browser.find_element("id", "task-state").text == "STARTED", 20, "the detail")
    assert browser.find_elements("id", "cancel") == []
    request = urllib.request.Request(f"{web.url}/v1/dashboard/tasks/{A}/{long}/cancel", method="POST",
                                     headers={"Authorization": f"Bearer {web.platform}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    # B's token: not even found.
    request = urllib.request.Request(f"{web.url}/v1/dashboard/tasks/{A}/{long}/cancel", method="POST",
                                     headers={"Authorization": f"Bearer {web.tokens[B]}"})
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 404
    assert tasks.get_status(long, A).status == "STARTED"
    # A's token cancels, after a confirmation; the page follows the task to FAILURE, Cancelled.
    sign_in(browser, web, web.tokens[A], f"#/task/{A}/{long}")
    until(browser, lambda: browser.find_elements("id", "cancel"), 20, "the cancel button").pop().click()
    browser.find_element("id", "cancel-keep").click()
    assert tasks.get_status(long, A).status == "STARTED"
    browser.find_element("id", "cancel").click()
    screenshot(browser, "cancel", tmp_path)
    browser.find_element("id", "cancel-confirm").click()
    until(browser, lambda: browser.find_element("id", "task-state").text == FAILURE, 90, "FAILURE on the page")
    assert "Cancelled" in browser.find_element("id", "task-body").text
    assert tasks.get_status(long, A).error.reason == "Cancelled"  # type: ignore[union-attr]


def test_charts_draw_throughput_run_times_reasons_queues_and_schedules(
        browser: Any, web: Web, tasks: TaskClient, api_client: Any, namespace: str, tmp_path: Path) -> None:
    api = client.CustomObjectsApi(api_client)
    queue = f"dash-{uuid.uuid4().hex[:8]}"
    api.create_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskQueue", "metadata": {"name": queue},
        "spec": {"maxRunning": 1}})
    for app, name in ((A, "nightly-report"), (B, "their-report")):
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, SCHEDULE_PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "LimeTaskSchedule", "metadata": {"name": name},
            "spec": {"task": f"{T}.noop", "app": app, "schedule": "0 3 * * *", "timeZone": "Europe/Stockholm"}})
    try:
        done = [send(tasks, "add", A, i, i) for i in range(3)] + [send(tasks, "fail", A, "x")]
        for task_id in done:
            tasks.wait(task_id, A, timeout=120)
        waiting = [tasks.send(f"{T}.sleep", A, [120], qos=queue).id for _ in range(3)]
        def waiting_and_running() -> tuple[int, int]:
            found = [tasks.get_status(i, A) for i in waiting]
            return sum(s.queued for s in found), sum(s.status == "STARTED" for s in found)

        wait_until(lambda: waiting_and_running() == (2, 1), timeout=120, message="two waiting, one running")
        sign_in(browser, web, web.tokens[A], "#/charts")
        until(browser, lambda: queue in browser.find_element("id", "table-queues").text, 30, "the queue")
        row = [r for r in browser.find_element("id", "table-queues").text.splitlines() if r.startswith(queue)][0]
        assert row.split()[1:3] == ["2", "1"], row  # waiting 2, running 1
        schedules = browser.find_element("id", "table-schedules").text
        assert "nightly-report" in schedules and "their-report" not in schedules
        assert "Europe/Stockholm" in schedules
        throughput = browser.find_element("id", "table-throughput").get_attribute("textContent")
        assert throughput.strip() and "Nothing in this window" not in throughput
        reasons = browser.find_element("id", "table-reasons").get_attribute("textContent")
        assert "TaskRaised" in reasons
        drawn = browser.execute_script(
            "return ['throughput','runtimes','reasons','queues'].map(n => { const c = document.getElementById("
            "'chart-' + n); return c.width > 0 && c.height > 0 && Chart.getChart(c) !== undefined; })")
        assert drawn == [True, True, True, True]
        screenshot(browser, "charts", tmp_path)
        assert errors_in_console(browser) == []
        for task_id in waiting:
            tasks.cancel(task_id, A)
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, QUEUE_PLURAL, queue)


# The WCAG contrast ratio of each visible text element against the first opaque background
# behind it.
CONTRAST = """
const rgb = s => s.match(/[0-9.]+/g).slice(0, 3).map(Number);
const lum = c => {
  const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const bg = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor;
    if (!c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return rgb(c);
  }
  return [255, 255, 255];
};
const ratio = el => {
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg(el));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
};
return [...document.querySelectorAll('.badge, td, th, label, a, button, caption, .who')]
  .filter(e => e.offsetParent !== null && e.textContent.trim())
  .map(e => [e.tagName + '.' + e.className + ':' + e.textContent.trim().slice(0, 20), ratio(e)]);
"""


def test_text_and_badges_are_readable(browser: Any, web: Web, tasks: TaskClient) -> None:
    """WCAG AA: text at least 4.5:1 against its background, measured in the browser."""
    for task_id in (send(tasks, "add", A, 1, 2), send(tasks, "fail", A, "x")):
        tasks.wait(task_id, A, timeout=120)
    sign_in(browser, web, web.tokens[A])
    until(browser, lambda: len(rows(browser)) == 2, 20, "two rows")
    ratios = browser.execute_script(CONTRAST)
    assert len(ratios) > 20
    low = [(what, round(r, 2)) for what, r in ratios if r < 4.5]
    assert low == [], low
