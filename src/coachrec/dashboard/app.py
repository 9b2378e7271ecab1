"""The dashboard as an app of its own, over a trace store without a serving stack
(`coachrec dashboard --db FILE`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

import coachrec
from coachrec.coach.registry import Registry
from coachrec.dashboard.router import dashboard_router
from coachrec.review import ReviewStore
from coachrec.serve.auth import Authenticator
from coachrec.serve.feedback import FeedbackLog
from coachrec.tracing import TraceStore


def dashboard_app(
    store: TraceStore,
    *,
    auth: Authenticator,
    feedback: FeedbackLog | None = None,
    review: ReviewStore | None = None,
    registry: Registry | None = None,
    titles: Mapping[str, str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The dashboard under `/ui` (and `/` redirecting there)."""
    app = FastAPI(title="coachrec dashboard", version=coachrec.__version__)
    app.state.auth = auth
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.include_router(dashboard_router(store, feedback=feedback, review=review, registry=registry, titles=titles))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/traces", status_code=303)

    return app
