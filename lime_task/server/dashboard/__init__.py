"""A read-only web dashboard, served by the HTTP endpoint (`limetask web`) at /dashboard/.

The list of tasks updates live (server-sent events fed by one watch of the namespace's
LimeTasks), with filters and paging done on the server over live and archived tasks; a task's
page shows it whole; charts show throughput, run times, failure reasons, queues and the next
runs of schedules. Chart.js is served with the page (static/vendor), so it works offline.

    model.py    what the page shows, as pure functions (summaries, who sees what, counts, charts)
    watch.py    one watch of the namespace's LimeTasks, fanned out to the open pages
    counts.py   the archive's counts, shared by pages asking the same at once
    static/     the page, its script and styles

Its routes are in ../routes/dashboard.py.
"""
