"""The composition root: which stack to serve, the service around it, the HTTP app.

    stack = resolve_stack(model_path=None, dataset="ml-latest-small")   # path > champion > default
    service = Service.open(stack, db="traces.duckdb")
    app = create_app(service, review=ReviewStore(review_path_for(service.store.path)))

Nothing below this module imports it: serving (`coachrec.serve`) knows nothing of the coach's
registry or the review queue; this is where they meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

import coachrec
from coachrec import datasets
from coachrec.coach.registry import Registry
from coachrec.dashboard import dashboard_router, titles_of
from coachrec.monitor.api import monitor_router
from coachrec.review import ReviewStore
from coachrec.review.api import review_router
from coachrec.serve import PipelineConfig, Service, Stack
from coachrec.serve.api import harden, serve_router
from coachrec.serve.auth import Authenticator
from coachrec.serve.limits import DEFAULT_MAX_BODY
from coachrec.serve.llm_stages import LLMServeConfig
from coachrec.serve.stack import DEFAULT_MODELS, catalog_for, load_models


def resolve_stack(
    model_path: str | Path | None = None,
    dataset: str = "ml-latest-small",
    *,
    registry: Registry | None = None,
    config: PipelineConfig | None = None,
    llm: LLMServeConfig | None = None,
) -> Stack:
    """The stack to serve: the saved stack or models at `model_path`; else the registry's
    champion for `dataset`; else item-kNN + popularity fitted on all of `dataset` (so a fresh
    install serves something sensible). `config` and `llm`, when given, override the stack's."""
    if model_path is not None:
        stack = load_models(model_path, catalog_for(datasets.load(dataset)), dataset=dataset)
    else:
        found = champion(dataset, registry or Registry())
        if found is None:
            found = Stack.fit(datasets.load(dataset), DEFAULT_MODELS)
            found.source += " at start-up (all events: serving, not evaluating)"
        stack = found
    if config is not None:
        stack.config = config
    if llm is not None:
        stack.llm = llm
    return stack


def champion(dataset: str, registry: Registry) -> Stack | None:
    """The registry's champion when it serves `dataset`, else None."""
    if registry.champion is None:
        return None
    version = registry.version(registry.champion)
    if version.dataset != dataset:
        return None
    stack = registry.load_stack(version.id)
    stack.source = f"registry champion {version.id} in {registry.root}: {stack.describe()}"
    return stack


def create_app(
    service: Service,
    *,
    review: ReviewStore | None = None,
    auth: Authenticator | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The HTTP app over `service`. `auth` defaults to the keys in the environment
    (`Authenticator.from_env`; none configured: every guarded route answers 401). With `allowed_hosts`,
    other Host headers get 400 (DNS rebinding). With `review`, the review queue and golden sets are
    served under `/v1/review`. Bodies over `max_body` bytes get 413."""
    app = FastAPI(title="coachrec", version=coachrec.__version__, description="Coachable recommender serving API.")
    app.state.service = service
    app.state.auth = auth if auth is not None else Authenticator.from_env()
    index = service.pipeline.catalog.index
    harden(app, max_body=max_body, genres=index.genre_names, attributes=list(index.attributes))
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.include_router(serve_router(service))
    app.include_router(monitor_router(service.store, feedback=service.feedback))
    if review is not None:
        app.include_router(review_router(review), prefix="/v1/review")
    catalog = service.pipeline.catalog  # the dashboard under /ui (scopes as for /v1)
    titles = titles_of(catalog.ids.tolist(), catalog.titles.tolist())
    app.include_router(
        dashboard_router(service.store, feedback=service.feedback, review=review, registry=Registry(), titles=titles)
    )
    return app
