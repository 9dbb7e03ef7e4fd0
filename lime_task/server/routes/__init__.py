"""The endpoint's routes, an `APIRouter` per resource; `create_app` includes them in this order.

    tasks.py        /v1/apps/{app}/tasks: start, read, list and cancel an application's tasks
    results.py      /v1/apps/{app}/results and /v1/results: archived tasks
    schedules.py    /v1/apps/{app}/schedules: schedules and their runs
    dashboard.py    /dashboard/ and /v1/dashboard/...: the dashboard's page and API
    health.py       /healthz and /readyz
"""
