"""`limetask web`: the HTTP endpoint and its dashboard. It runs as a server: a solution never
imports this package (the client reads archived tasks through the endpoint, over HTTP).

    app.py          create_app(): the wiring (routers, middlewares, error mapping); only the
                    entry points import it
    contract.py     the HTTP contract: request and answer bodies, shared query parameters
    deps.py         what the routers share: the cluster client, the archive reader, the error
                    answers (`Services`, one per application)
    auth.py         who may do what: application, platform and Kubernetes tokens, and the
                    dashboard's scopes
    kubeauth.py     Kubernetes tokens: TokenReviews and SubjectAccessReviews, cached and bounded
    middleware.py   guards around every request: the body limit, unexpected errors
    readiness.py    what /readyz says about the archive
    routes/         an APIRouter per resource: tasks, results, schedules, dashboard, health
    dashboard/      the dashboard's pure model, its watch of the namespace's tasks, its page

Needs the `web` extra (fastapi, uvicorn).
"""
