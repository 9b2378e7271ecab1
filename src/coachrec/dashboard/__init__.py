"""The web dashboard: traces, failure modes, review, golden sets, gates and cost in the browser.

    app.include_router(dashboard_router(store, feedback=..., review=..., registry=...))  # under /ui
    app = dashboard_app(TraceStore("traces.duckdb"), review=ReviewStore(...), registry=Registry())

`coachrec serve` mounts it under `/ui`; `coachrec dashboard --db FILE` serves it over a store
alone. Pages are rendered on the server (Jinja2) with a little plain JavaScript; charts use the
bundled uPlot; nothing loads from a CDN. Every page and JSON route needs a key with the route's
scope (`coachrec.serve.auth`): `read` to look, `review` to annotate, `publish` for golden sets,
`admin` to roll the registry back.
"""

from coachrec.dashboard.app import dashboard_app
from coachrec.dashboard.router import dashboard_router, titles_of

__all__ = ["dashboard_app", "dashboard_router", "titles_of"]
