// The Lime Task dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// Every text from a task (names, arguments, results, messages) is set as text, never as HTML.
"use strict";

(function () {
  const API = "../v1/dashboard";
  const TOKEN_KEY = "limetask.dashboard.token";
  const STATES = ["PENDING", "STARTED", "SUCCESS", "FAILURE"];
  const COLORS = {
    sent: "#55595f", started: "#0a58a8", SUCCESS: "#1a7432", FAILURE: "#b42318", PENDING: "#55595f",
    STARTED: "#0a58a8", p50: "#0a58a8", p90: "#b35900", p99: "#b42318", waiting: "#b35900", running: "#0a58a8",
  };
  const REASON_COLORS = ["#b42318", "#b35900", "#6e40c9", "#0a58a8", "#1a7432", "#55595f", "#a0115e", "#00707a"];

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    me: null,
    view: null,
    filters: {},
    cursors: [null],   // the cursor of each page seen, for "Previous page"
    page: 0,
    next: null,
    rows: new Map(),
    limit: 50,
    stream: null,
    charts: {},
    chartsDue: 0,
    announced: 0,
  };

  // -- small helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function seconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    // Kubernetes keeps times to the second: a shorter run reads as under a second, not "0 ms".
    if (s < 1) return "< 1 s";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  function announce(text) {
    const now = Date.now();
    if (now - state.announced < 5000) return;  // at most one announcement every 5 s
    state.announced = now;
    $("announce").textContent = text;
  }

  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, options) {
    const response = await fetch(API + path, {
      ...(options || {}),
      headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) {
      signOut("That token is not valid here (or no longer): sign in again.");
      throw new HttpError(401, "unauthorized");
    }
    if (!response.ok) {
      throw new HttpError(response.status, (body && body.detail) || ("the server answered " + response.status));
    }
    return body;
  }

  function connection(text, down) {
    const node = $("connection");
    node.textContent = text;
    node.classList.toggle("down", Boolean(down));
  }

  // -- sign in ---------------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    try {
      state.me = await api("/me");
    } catch (e) {
      state.me = null;
      if (e.status !== 401) $("signin-error").textContent = e.message;
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    const apps = state.me.apps;
    $("who").textContent = state.me.kind === "app" ? "application " + apps[0]
      : (state.me.kind === "platform" ? "platform (" + state.me.name + "): every application"
        : "Kubernetes identity: every application");
    $("signout").hidden = false;
    $("nav").hidden = false;
    // An application's token sees one application: no filter to choose it.
    $("field-app").hidden = state.me.kind === "app";
    $("chart-field-app").hidden = state.me.kind === "app";
    return true;
  }

  function signOut(message) {
    closeStream();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    state.me = null;
    $("signout").hidden = true;
    $("nav").hidden = true;
    $("who").textContent = "";
    // Nothing seen with one token stays on the page for the next.
    for (const id of ["apps", "tasks-body", "counts", "task-body", "table-throughput", "table-runtimes",
                      "table-reasons", "table-queues", "table-schedules"]) $(id).replaceChildren();
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
    state.rows = new Map();
    connection("");
    show("signin");
    $("signin-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  // -- routing ---------------------------------------------------------------------------

  function parseHash() {
    const hash = location.hash.replace(/^#/, "") || "/tasks";
    const [path, query] = hash.split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || "") };
  }

  function show(name) {
    for (const view of ["signin", "tasks", "task", "charts"]) $("view-" + view).hidden = view !== name;
    $("nav-tasks").toggleAttribute("aria-current", false);
    $("nav-charts").toggleAttribute("aria-current", false);
    if (name === "tasks" || name === "task") $("nav-tasks").setAttribute("aria-current", "page");
    if (name === "charts") $("nav-charts").setAttribute("aria-current", "page");
    state.view = name;
  }

  async function route() {
    if (!state.me) {
      if (!state.token || !(await signIn(state.token))) { signOut($("signin-error").textContent); return; }
    }
    closeStream();
    const { parts, query } = parseHash();
    if (parts[0] === "task" && parts.length === 3) {
      show("task");
      await openTask(parts[1], parts[2]);
    } else if (parts[0] === "charts") {
      show("charts");
      await openCharts(query);
    } else {
      show("tasks");
      await openTasks(query);
    }
  }

  // -- server-sent events over fetch (EventSource cannot send the token in a header) -----

  function closeStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  function openStream(params, handlers) {
    closeStream();
    const controller = new AbortController();
    state.stream = controller;
    (async () => {
      let backoff = 1000;
      let first = true;
      while (!controller.signal.aborted) {
        try {
          const response = await fetch(API + "/stream?" + params.toString(), {
            headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" },
            signal: controller.signal, cache: "no-store",
          });
          if (response.status === 401) { signOut("Your token is no longer valid: sign in again."); return; }
          if (!response.ok) throw new Error("stream: " + response.status);
          connection("live");
          backoff = 1000;
          if (!first && handlers.reset) handlers.reset();  // what changed while away: read again
          first = false;
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              dispatch(block, handlers);
            }
          }
        } catch (e) {
          if (controller.signal.aborted) return;
        }
        connection("reconnecting…", true);
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(30000, backoff * 2);
      }
    })();
  }

  function dispatch(block, handlers) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) kind = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (!data.length) return;
    let payload;
    try { payload = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (kind === "unauthorized") { signOut("Your token is no longer valid: sign in again."); return; }
    const handler = handlers[kind];
    if (handler) handler(payload);
  }

  // -- the list --------------------------------------------------------------------------

  function filtersFrom(query) {
    const f = {};
    for (const key of ["app", "task", "state", "reason"]) {
      const v = (query.get(key) || "").trim();
      if (v) f[key] = v;
    }
    f.window = query.get("window") || "86400";
    return f;
  }

  // The page's own query (in its address) keeps window=all; the server's has no window then.
  function queryOf(filters) {
    const q = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) if (value) q.set(key, value);
    return q;
  }

  function serverQuery(filters) {
    const q = queryOf(filters);
    if (q.get("window") === "all") q.delete("window");
    return q;
  }

  function fillForm(f) {
    $("f-app").value = f.app || "";
    $("f-task").value = f.task || "";
    $("f-state").value = f.state || "";
    $("f-reason").value = f.reason || "";
    $("f-window").value = f.window || "";
  }

  async function openTasks(query) {
    state.filters = filtersFrom(query);
    fillForm(state.filters);
    state.cursors = [null];
    state.page = 0;
    await loadPage();
    openStream(serverQuery(state.filters), {
      task: (p) => onTask(p.row, p.match, false),
      deleted: (p) => onTask(p.row, p.match, true),
      counts: (p) => renderCounts(p.counts, p.total, p.counts_estimated),
      reset: () => loadPage(),
    });
  }

  async function loadPage() {
    const q = serverQuery(state.filters);
    q.set("limit", String(state.limit));
    const cursor = state.cursors[state.page];
    if (cursor) q.set("cursor", cursor);
    $("tasks-error").textContent = "";
    let page;
    try {
      page = await api("/tasks?" + q.toString());
    } catch (e) {
      if (e.status !== 401) $("tasks-error").textContent = e.message;
      return;
    }
    state.next = page.next;
    state.rows = new Map();
    const body = $("tasks-body");
    body.replaceChildren();
    for (const row of page.items) {
      state.rows.set(row.id, row);
      body.append(renderRow(row));
    }
    if (!page.items.length) {
      body.append(el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No tasks match." })));
    }
    rememberApps(page.items);
    renderCounts(page.counts, page.total, page.counts_estimated);
    renderPager();
  }

  // The application filter suggests the applications seen so far (a token for every application
  // does not list them: the page learns them from the tasks it shows).
  function rememberApps(items) {
    const list = $("apps");
    const known = new Set([...list.options].map((o) => o.value));
    for (const row of items) {
      if (!known.has(row.app)) {
        known.add(row.app);
        list.append(el("option", { value: row.app }));
      }
    }
  }

  function renderPager() {
    $("page-prev").disabled = state.page === 0;
    $("page-first").disabled = state.page === 0;
    $("page-next").disabled = !state.next;
    $("page-info").textContent = "Page " + (state.page + 1);
  }

  // Estimated counts (too many archived tasks to count in time) read "about N".
  function renderCounts(counts, total, estimated) {
    const box = $("counts");
    box.replaceChildren();
    const current = state.filters.state || "";
    const entries = [["", "All", STATES.reduce((n, s) => n + (counts[s] || 0), 0)]]
      .concat(STATES.map((s) => [s, s.charAt(0) + s.slice(1).toLowerCase(), counts[s] || 0]));
    for (const [value, label, n] of entries) {
      box.append(el("button", {
        type: "button", "aria-pressed": String(current === value), "data-state": value || "ALL",
        onclick: () => { const f = { ...state.filters }; if (value) f.state = value; else delete f.state; go(f); },
      }, label, el("span", { class: "n", text: estimated ? "~" + n : String(n),
                             title: estimated ? "about " + n + " (estimated)" : null })));
    }
    box.dataset.total = String(total);
    box.dataset.estimated = String(Boolean(estimated));
  }

  function go(filters) {
    location.hash = "#/tasks?" + queryOf(filters).toString();
  }

  function renderRow(row) {
    const link = el("a", { href: "#/task/" + encodeURIComponent(row.app) + "/" + encodeURIComponent(row.id),
                           text: row.id });
    const tr = el("tr", { "data-id": row.id, "data-state": row.state },
      el("td", { class: "id" }, link),
      el("td", { text: row.app }),
      el("td", { text: row.task }),
      el("td", {}, el("span", { class: "badge " + row.state, text: row.state })),
      el("td", { text: row.reason || (row.queued ? (row.queue_reason || "Waiting") : ""), title: row.message || null }),
      el("td", { text: row.queued && row.position ? row.queue + " (#" + row.position + ")" : row.queue }),
      el("td", { text: row.attempts }),
      el("td", { text: when(row.created_at) }),
      el("td", { text: when(row.completed_at) + (row.archived ? " (archived)" : "") }),
      el("td", { text: seconds(row.duration) }),
    );
    return tr;
  }

  function onTask(row, match, deleted) {
    const body = $("tasks-body");
    const existing = body.querySelector('tr[data-id="' + CSS.escape(row.id) + '"]');
    if (existing) {
      if (deleted) {
        // Left the cluster: archived (if the archive is on), or deleted.
        existing.classList.add("gone");
        return;
      }
      if (!match) {
        existing.remove();
        state.rows.delete(row.id);
        return;
      }
      const fresh = renderRow(row);
      fresh.classList.add("changed");
      existing.replaceWith(fresh);
      state.rows.set(row.id, row);
      announce("Task " + row.id + " is " + row.state);
      return;
    }
    if (deleted || !match || state.page !== 0) return;
    // A new task that matches, on the first page: in its place, newest first.
    const empty = body.querySelector("td.empty");
    if (empty) empty.parentElement.remove();
    const fresh = renderRow(row);
    fresh.classList.add("changed");
    let placed = false;
    for (const tr of body.children) {
      const other = state.rows.get(tr.dataset.id);
      if (other && (other.when < row.when || (other.when === row.when && other.id > row.id))) {
        tr.before(fresh);
        placed = true;
        break;
      }
    }
    if (!placed) {
      if (body.children.length >= state.limit) return;  // it belongs to a later page
      body.append(fresh);
    }
    state.rows.set(row.id, row);
    while (body.children.length > state.limit) {
      const last = body.lastElementChild;
      state.rows.delete(last.dataset.id);
      last.remove();
      state.next = state.next || "live." + state.limit;
    }
    renderPager();
    announce("New task " + row.id);
  }

  // -- one task --------------------------------------------------------------------------

  async function openTask(app, id) {
    $("task-error").textContent = "";
    $("task-title").textContent = "Task " + id;
    const load = async () => {
      let task;
      try {
        task = await api("/tasks/" + encodeURIComponent(app) + "/" + encodeURIComponent(id));
      } catch (e) {
        if (e.status !== 401) {
          $("task-error").textContent = e.status === 404 ? "No such task for this token." : e.message;
          $("task-body").replaceChildren();
        }
        return;
      }
      renderTask(task);
    };
    await load();
    const q = new URLSearchParams({ id: id, app: app });
    openStream(q, { task: () => load(), deleted: () => load(), reset: () => load() });
  }

  function facts(pairs) {
    const dl = el("dl", { class: "facts" });
    for (const [label, value, attrs] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", { text: label }), el("dd", attrs || {}, value));
    }
    return dl;
  }

  function json(value) {
    return el("pre", { text: JSON.stringify(value, null, 2) });
  }

  function renderTask(t) {
    const box = $("task-body");
    box.replaceChildren();
    box.append(facts([
      ["State", el("span", { class: "badge " + t.state, text: t.state, id: "task-state" })],
      ["Reason", t.reason],
      ["Application", t.app],
      ["Task", t.task],
      ["Queue", t.queued ? t.queue + " (waiting: " + (t.queue_reason || "Waiting") +
        (t.position ? ", position " + t.position : "") + ")" : t.queue],
      ["Priority", t.priority ? String(t.priority) : ""],
      ["Attempts", String(t.attempts)],
      ["Sent", when(t.created_at)],
      ["Started", when(t.started_at)],
      ["Finished", when(t.completed_at)],
      ["Run time", seconds(t.duration)],
      ["Start no earlier than", when(t.options && t.options.eta)],
      ["Expires", when(t.options && t.options.expires)],
      ["Retries", t.options && t.options.retries ? String(t.options.retries) : ""],
      ["Stored", t.archived ? "archived (the task has left the cluster)" : "in the cluster"],
    ]));
    if (t.may_cancel) box.append(cancelBox(t));

    const grid = el("div", { class: "grid2" });
    grid.append(el("section", { "aria-labelledby": "h-args" }, el("h2", { id: "h-args", text: "Arguments" }),
      el("p", { class: "hint", text: "After the application, which is always the first." }),
      json({ args: t.args, kwargs: t.kwargs })));
    if (t.error) {
      grid.append(el("section", { "aria-labelledby": "h-error" }, el("h2", { id: "h-error", text: "Error" }),
        facts([["Reason", t.error.reason], ["Type", t.error.type]]), el("pre", { id: "task-error-message", text: t.error.message })));
    } else {
      grid.append(el("section", { "aria-labelledby": "h-result" }, el("h2", { id: "h-result", text: "Result" }),
        t.state === "SUCCESS" ? json(t.result) : el("p", { class: "empty", text: "Not finished yet." })));
    }
    box.append(grid);

    box.append(el("h2", { id: "h-attempts", text: "Attempts" }));
    const attempts = (t.history || []).slice();
    const rows = attempts.map((h) => el("tr", {},
      el("td", { text: h.attempt }), el("td", { text: h.outcome || "" }), el("td", { text: h.reason || "" }),
      el("td", { text: h.message || "" }), el("td", { text: when(h.finishedAt) }), el("td", { text: h.jobName || "" })));
    const recorded = new Set(attempts.map((h) => h.attempt));
    if (t.job && t.attempts && !recorded.has(t.attempts)) {
      rows.push(el("tr", {}, el("td", { text: t.attempts }),
        el("td", { text: t.state === "STARTED" ? "running" : (t.state === "PENDING" ? "starting" : t.state) }),
        el("td", { text: t.reason || "" }), el("td", { text: "" }), el("td", { text: when(t.completed_at) }),
        el("td", { text: t.job })));
    }
    box.append(rows.length ? el("table", { id: "attempts", "aria-labelledby": "h-attempts" },
      el("thead", {}, el("tr", {}, ["Attempt", "Pod outcome", "Reason", "Message", "Finished", "Job"].map(
        (h) => el("th", { scope: "col", text: h })))), el("tbody", {}, rows))
      : el("p", { class: "empty", text: "No attempt yet." }));

    box.append(el("h2", { id: "h-event", text: "Completion event" }));
    const ev = t.event;
    box.append(ev ? facts([
      ["Delivered", ev.confirmed ? "yes, confirmed by the broker" : "not yet", { id: "event-confirmed" }],
      ["Routing key", ev.routingKey],
      ["Confirmed at", when(ev.confirmedAt)],
      ["Delivery attempts", ev.deliveryAttempts !== undefined ? String(ev.deliveryAttempts) : ""],
      ["Last error", ev.lastError],
      ["Next attempt", when(ev.nextAttemptAt)],
      ["Message id", ev.messageId],
    ]) : el("p", { class: "empty", text: t.completed_at ? "No event on record." : "Sent when the task ends." }));
  }

  function cancelBox(t) {
    const box = el("div", { class: "cancel-box" });
    const ask = el("button", { type: "button", class: "danger", id: "cancel", text: "Cancel task" });
    ask.addEventListener("click", () => {
      const yes = el("button", { type: "button", class: "danger", id: "cancel-confirm", text: "Yes, cancel it" });
      const no = el("button", { type: "button", class: "quiet", id: "cancel-keep", text: "No, keep it running" });
      const note = el("span", { role: "status", id: "cancel-status" });
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        no.disabled = true;
        try {
          await api("/tasks/" + encodeURIComponent(t.app) + "/" + encodeURIComponent(t.id) + "/cancel", { method: "POST" });
          note.textContent = "Cancelling: the task ends as FAILURE, reason Cancelled.";
        } catch (e) {
          note.textContent = e.status === 409 ? "It has already finished." : "Could not cancel: " + e.message;
        }
      });
      no.addEventListener("click", () => { box.replaceWith(cancelBox(t)); });
      box.replaceChildren(el("span", { text: "Cancel task " + t.id + "?" }), yes, no, note);
      yes.focus();
    });
    box.append(ask);
    return box;
  }

  // -- charts ----------------------------------------------------------------------------

  async function openCharts(query) {
    const f = { app: query.get("app") || "", window: query.get("window") || "3600" };
    $("c-app").value = f.app;
    $("c-window").value = f.window;
    await loadCharts(f);
    // Drawn again after changes, at most every 10 s: the stream says when, no polling.
    openStream(queryOf({ app: f.app }), {
      counts: () => scheduleCharts(f), reset: () => scheduleCharts(f),
    });
  }

  function scheduleCharts(f) {
    const due = Math.max(0, state.chartsDue - Date.now());
    if (state.chartsTimer) return;
    state.chartsTimer = setTimeout(() => { state.chartsTimer = null; loadCharts(f); }, Math.max(due, 1000));
  }

  function label(t, step) {
    const d = new Date(t * 1000);
    return step >= 86400 ? d.toLocaleDateString() : (step >= 3600 ? d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
      : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  }

  function stepName(step) {
    return { 60: "minute", 300: "5 minutes", 900: "15 minutes", 3600: "hour", 10800: "3 hours", 21600: "6 hours", 86400: "day" }[step] || step + " s";
  }

  function table(headers, rows, id) {
    if (!rows.length) return el("p", { class: "empty", text: "Nothing in this window." });
    return el("table", { id: id || null }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: c }))))));
  }

  function draw(name, config) {
    if (!window.Chart) return;
    if (state.charts[name]) state.charts[name].destroy();
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { labels: { color: "#1f2328" } } } }, config.options || {});
    state.charts[name] = new window.Chart($("chart-" + name), config);
  }

  async function loadCharts(f) {
    state.chartsDue = Date.now() + 10000;
    const q = queryOf(f);
    $("charts-error").textContent = "";
    let c;
    try { c = await api("/charts?" + q.toString()); } catch (e) {
      if (e.status !== 401) $("charts-error").textContent = e.message;
      return;
    }
    for (const node of document.querySelectorAll(".step")) node.textContent = stepName(c.step);
    const labels = c.buckets.map((t) => label(t, c.step));
    const tp = c.throughput;
    const zero = labels.map(() => 0);
    draw("throughput", { type: "bar", data: { labels, datasets: [
      { label: "succeeded", data: tp.SUCCESS || zero, backgroundColor: COLORS.SUCCESS, stack: "done" },
      { label: "failed", data: tp.FAILURE || zero, backgroundColor: COLORS.FAILURE, stack: "done" },
      { label: "started", data: tp.started || zero, type: "line", borderColor: COLORS.started, backgroundColor: COLORS.started, pointRadius: 0 },
      { label: "sent", data: tp.sent || zero, type: "line", borderColor: COLORS.sent, backgroundColor: COLORS.sent, borderDash: [4, 3], pointRadius: 0 },
    ] }, options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
    $("table-throughput").replaceChildren(table(["From", "Sent", "Started", "Succeeded", "Failed"],
      c.buckets.map((t, i) => [label(t, c.step), (tp.sent || zero)[i], (tp.started || zero)[i], (tp.SUCCESS || zero)[i], (tp.FAILURE || zero)[i]])
        .filter((r) => r.slice(1).some((n) => n > 0)), "throughput-table"));

    const rt = c.runtimes;
    draw("runtimes", { type: "bar", data: { labels: rt.map((r) => r.task.split(".").slice(-2).join(".")), datasets: [
      { label: "p50", data: rt.map((r) => r.p50), backgroundColor: COLORS.p50 },
      { label: "p90", data: rt.map((r) => r.p90), backgroundColor: COLORS.p90 },
      { label: "p99", data: rt.map((r) => r.p99), backgroundColor: COLORS.p99 },
    ] }, options: { indexAxis: "y", scales: { x: { beginAtZero: true, title: { display: true, text: "seconds" } } } } });
    $("table-runtimes").replaceChildren(table(["Task", "Runs", "p50", "p90", "p99", "Longest"],
      rt.map((r) => [r.task, r.count, seconds(r.p50), seconds(r.p90), seconds(r.p99), seconds(r.max)]), "runtimes-table"));

    const reasons = Object.keys(c.reasons);
    draw("reasons", { type: "bar", data: { labels, datasets: reasons.map((r, i) => (
      { label: r, data: c.reasons[r], backgroundColor: REASON_COLORS[i % REASON_COLORS.length], stack: "r" })) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
    $("table-reasons").replaceChildren(table(["From"].concat(reasons),
      c.buckets.map((t, i) => [label(t, c.step)].concat(reasons.map((r) => c.reasons[r][i])))
        .filter((r) => r.slice(1).some((n) => n > 0)), "reasons-table"));

    const qs = c.queues;
    draw("queues", { type: "bar", data: { labels: qs.map((q) => q.queue), datasets: [
      { label: "waiting", data: qs.map((q) => q.waiting), backgroundColor: COLORS.waiting },
      { label: "running", data: qs.map((q) => q.running), backgroundColor: COLORS.running },
    ] }, options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } });
    $("table-queues").replaceChildren(table(["Queue", "Waiting", "Running", "Median wait", "Longest wait"],
      qs.map((q) => [q.queue, q.waiting, q.running, seconds(q.wait_p50), seconds(q.wait_max)]), "queues-table"));

    const box = $("table-schedules");
    if (c.schedules_problem) box.replaceChildren(el("p", { class: "error", text: c.schedules_problem }));
    else box.replaceChildren(table(["Schedule", "Application", "Task", "Cron", "Next runs", "Running now"],
      c.schedules.map((s) => [s.name, s.app, s.task, s.schedule + " (" + s.time_zone + ")",
        s.suspend ? "suspended" : (s.problem ? s.problem : s.next.map(when).join(", ")), s.active]), "schedules-table"));
  }

  // -- wiring ----------------------------------------------------------------------------

  function wire() {
    $("signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("signin-error").textContent = "";
      const token = $("token").value.trim();
      if (await signIn(token)) {
        $("token").value = "";
        route();
        $("main").focus();
      } else if (!$("signin-error").textContent) {
        $("signin-error").textContent = "That token is not valid here.";
      }
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      const f = {};
      for (const key of ["app", "task", "state", "reason", "window"]) {
        const v = $("f-" + key).value.trim();
        if (v) f[key] = v;
      }
      go(f);
    });
    $("f-clear").addEventListener("click", () => go({ window: "86400" }));
    $("chart-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = "#/charts?" + queryOf({ app: $("c-app").value.trim(), window: $("c-window").value }).toString();
    });
    $("page-next").addEventListener("click", () => {
      if (!state.next) return;
      state.cursors[state.page + 1] = state.next;
      state.page += 1;
      loadPage();
    });
    $("page-prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; loadPage(); } });
    $("page-first").addEventListener("click", () => { state.page = 0; loadPage(); });
    window.addEventListener("hashchange", route);
    route();
  }

  document.addEventListener("DOMContentLoaded", wire);
})();
