"""The serving routes (FastAPI): health, recommend, feedback, traces.

`coachrec.app.create_app` assembles these with the review routes into the HTTP app. Every
route but `/health` needs an API key with its scope (`coachrec.serve.auth`): `recommend` for
`POST /v1/recommend`, `ingest` for `POST /v1/feedback`, `read` for `GET /v1/traces...`.

Status codes (all in the OpenAPI schema): 200; 401 no or unknown key; 403 key without the scope;
404 unknown user, trace or request; 413 body over the limit; 422 invalid input, `detail` naming
the field; 409 an Idempotency-Key reused for other events; 429 over the key's rate limit; 503 the
feedback store could not commit (retry; nothing was acknowledged).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from coachrec.policy import ConstraintError
from coachrec.serve.auth import Principal, require
from coachrec.serve.disclosure import private_titles, redact
from coachrec.serve.feedback import KINDS, FeedbackEvent
from coachrec.serve.limits import DEFAULT_MAX_BODY, BodyLimit, SingleQueryValues
from coachrec.serve.pipeline import RecommendRequest, UnknownUserError
from coachrec.serve.schemas import (
    MAX_ID,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    ItemOut,
    RecommendIn,
    RecommendOut,
)
from coachrec.serve.service import Service
from coachrec.tracing import SpanKind, SpanStatus

MAX_WINDOW_MINUTES = 100 * 366 * 24 * 60
"""A `since_minutes` window of at most a hundred years."""


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorOut}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("a body that is not UTF-8 or a Host header not allowed"),
    401: _error("missing or invalid API key"),
    403: _error("the key lacks the route's scope"),
    413: _error("request body over the size limit"),
    422: _error("invalid input; `detail` names the field"),
    429: _error("over the key's rate limit; retry after the Retry-After seconds"),
}
"""The documented errors of every guarded route."""
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("no such user, trace or request")}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    409: _error("the Idempotency-Key was used for a different batch of events"),
    503: _error("the feedback store could not commit; nothing was acknowledged, retry"),
}


def _field(loc: tuple[Any, ...]) -> str:
    """`events.0.value` for loc ("body", "events", 0, "watch", "value"): the union tag is left out."""
    parts: list[str] = []
    for n, p in enumerate(loc):
        if p in ("body", "query", "path", "header"):
            continue
        if p in KINDS and n and isinstance(loc[n - 1], int):  # the feedback event's kind tag
            continue
        parts.append(str(p))
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with `detail` naming each bad field (`constraints.ranges.year.min: ...`)."""
    errors = []
    for e in exc.errors():
        if e["type"] == "json_invalid":  # loc is ("body", character offset)
            position = e["loc"][-1] if len(e["loc"]) > 1 else "?"
            errors.append({"field": "body", "message": f"invalid JSON at character {position}"})
        elif e["type"] == "union_tag_invalid":  # loc stops at the event; name its tag field
            tag = str(e.get("ctx", {}).get("discriminator", "kind")).strip("'")
            errors.append({"field": f"{_field(tuple(e['loc']))}.{tag}", "message": str(e["msg"])})
        else:
            errors.append({"field": _field(tuple(e["loc"])), "message": str(e["msg"])})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


async def method_not_allowed(request: Request, exc: StarletteHTTPException) -> Response:
    """405 whose `Allow` lists the methods of every route on the path (Starlette names only the
    first route's); other HTTP errors as FastAPI answers them."""
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    methods = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    allow = ", ".join(sorted(methods))
    return JSONResponse({"detail": f"method {request.method} not allowed here; use {allow}"}, 405, {"Allow": allow})


def harden(
    app: FastAPI, *, max_body: int = DEFAULT_MAX_BODY, genres: Sequence[str] = (), attributes: Sequence[str] = ()
) -> None:
    """The app-wide rules of the API: 413 past `max_body`, 422 for a repeated query parameter or
    naming the field (documented as
    `ErrorOut` on every route, not FastAPI's list form), 405 with a complete `Allow`. `genres` and
    `attributes` (the catalog's) become enums of the constraints in the schema, so a request the
    schema allows names only what the catalog has."""
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.add_middleware(SingleQueryValues)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, method_not_allowed)  # type: ignore[arg-type]
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:  # what our validation_error handler answers
                schemas["HTTPValidationError"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
            constraints = schemas.get("ConstraintsIn", {}).get("properties", {})
            for name in ("require_genres", "exclude_genres"):
                if genres and name in constraints:
                    constraints[name]["items"]["enum"] = sorted(genres)
            if attributes and "ranges" in constraints:
                constraints["ranges"]["propertyNames"] = {"enum": sorted(attributes)}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_recommender = require("recommend")
_ingester = require("ingest")
_reader = require("read")


def serve_router(service: Service) -> APIRouter:
    """The routes over `service`, each guarded by its scope."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, Any]:
        """`status` is `ok`, or `degraded` while spans failed to be written or were dropped."""
        return service.health()

    @router.post("/v1/recommend", response_model=RecommendOut, responses=ERRORS | NOT_FOUND)
    async def recommend(body: RecommendIn, principal: Principal = Depends(_recommender)) -> RecommendOut:
        """The top `k` items for a user, an anonymous history or a request in words.

        Reasons quote a stored user's history only to a key with the `read` scope, and never name
        an item the request's constraints exclude; `exclude_seen: false` on a stored user's history
        also needs `read` (the answer would reveal what they have seen)."""
        # A request without text on a pipeline without LLM stages is a few ms of array work: run it
        # on the event loop (no thread hop). Text (query encoders) or LLM tiers go to the thread pool.
        if body.context is None and not service.pipeline.waits_on_llm:
            return _recommend(body, principal)
        return await run_in_threadpool(_recommend, body, principal)

    def _recommend(body: RecommendIn, principal: Principal) -> RecommendOut:
        may_read = principal.can("read")
        if body.user_id is not None and not body.constraints.exclude_seen and not may_read:
            raise HTTPException(
                403,
                "constraints.exclude_seen: false on a stored user's history needs the 'read' scope "
                "(the answer would reveal what they have seen)",
            )
        try:
            constraints = body.constraints.to_constraints()
            request = RecommendRequest(body.user_id, body.history, body.k, constraints, body.context)
            result = service.recommend(request)
        except ConstraintError as exc:
            raise HTTPException(422, f"constraints.{exc}") from None
        except UnknownUserError as exc:
            raise HTTPException(404, str(exc)) from None
        reasons = redact(result.reasons, private_titles(service.pipeline, request, may_read_history=may_read))
        items = [
            ItemOut(item=i, title=t, score=s, reason=r, position=p, explored=e, propensity=q)
            for p, (i, t, s, r, e, q) in enumerate(
                zip(
                    result.items,
                    result.titles,
                    result.scores,
                    reasons,
                    result.explored,
                    result.propensity,
                    strict=False,
                )
            )
        ]
        return RecommendOut(
            request_id=result.request_id,
            trace_id=result.trace_id,
            k=result.k,
            items=items,
            note=result.note,
            ignored_history=result.ignored_history,
        )

    @router.post(
        "/v1/feedback", response_model=FeedbackOut, dependencies=[Depends(_ingester)], responses=ERRORS | UNAVAILABLE
    )
    def feedback(
        body: FeedbackIn,
        background: BackgroundTasks,
        idempotency_key: str | None = Header(
            None,
            min_length=1,
            max_length=MAX_ID,
            pattern=r"^[\x21-\x7e]+$",
            description="a client-chosen key for this batch: a retry with the same key returns the first answer "
            "and stores nothing again",
        ),
    ) -> FeedbackOut:
        """Store events durably (committed to disk before the answer)."""
        events = [
            FeedbackEvent(
                e.request_id,
                e.item,
                e.kind,
                e.position,
                e.value,
                e.user_id,
                None if e.time is None else int(e.time * 1e9),
            )
            for e in body.events
        ]
        try:
            ids, replayed = service.record_feedback_once(events, idempotency_key)
        except (duckdb.IOException, duckdb.TransactionException) as exc:
            raise HTTPException(503, f"feedback store could not commit ({type(exc).__name__}); retry") from None
        except ValueError as exc:  # an idempotency key reused for a different batch
            raise HTTPException(409, str(exc)) from None
        if not replayed:
            background.add_task(service.update_span_metrics, [e.request_id for e in events])
        return FeedbackOut(accepted=len(ids), event_ids=ids, replayed=replayed)

    @router.get("/v1/traces", dependencies=[Depends(_reader)], responses=ERRORS)
    def traces(
        since_minutes: float | None = Query(
            None, gt=0, le=MAX_WINDOW_MINUTES, allow_inf_nan=False, description="only traces started this recently"
        ),
        user_id: str | None = Query(None, min_length=1, max_length=MAX_ID),
        kind: SpanKind | None = Query(None, description="only traces with a span of this kind"),
        status: SpanStatus | None = Query(None, description="only traces with a span of this status"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> dict[str, Any]:
        since = None if since_minutes is None else dt.timedelta(minutes=since_minutes)
        service.store.flush(timeout=5.0)
        table = service.store.traces(since=since, user_id=user_id, kind=kind, status=status, limit=limit)
        return {"traces": table.to_pylist()}

    @router.get("/v1/traces/{trace_id}", dependencies=[Depends(_reader)], responses=ERRORS | NOT_FOUND)
    def trace(
        trace_id: str = Path(min_length=1, max_length=MAX_ID, description="a trace id or a request id"),
    ) -> dict[str, Any]:
        store = service.store
        store.flush(timeout=5.0)
        spans = store.trace(trace_id)
        if not spans:  # a request id works too
            by_request = store.trace_id_for_request(trace_id)
            spans = store.trace(by_request) if by_request else []
        if not spans:
            raise HTTPException(404, f"trace_id: no trace or request {trace_id!r} in the store")
        metrics = store.span_metrics(trace_id=spans[0].trace_id).to_pylist()
        return {
            "trace_id": spans[0].trace_id,
            "request_id": spans[0].request_id,
            "spans": [
                {
                    "span_id": s.span_id,
                    "parent_span_id": s.parent_span_id,
                    "name": s.name,
                    "kind": s.kind,
                    "start_ns": s.start_ns,
                    "duration_ms": s.duration_ns / 1e6,
                    "status": s.status,
                    "error": s.error,
                    "input": s.input_value(),
                    "output": s.output_value(),
                    "attributes": s.attribute_dict(),
                    "metrics": {m["name"]: m["value"] for m in metrics if m["span_id"] == s.span_id},
                }
                for s in spans
            ],
            "feedback": service.feedback.events(spans[0].request_id).to_pylist() if spans[0].request_id else [],
        }

    return router
