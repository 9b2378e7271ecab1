"""The HTTP API (FastAPI). `create_app(service)` builds it; `coachrec serve` runs it with uvicorn.

Write and admin endpoints (`POST /v1/feedback`, `GET /v1/traces...`) need the API key when one
is configured (`COACHREC_API_KEY`), sent as `X-API-Key: KEY` or `Authorization: Bearer KEY`.
Every validation error is a 4xx whose `detail` names the field.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import coachrec
from coachrec.policy import ConstraintError
from coachrec.review import ReviewStore
from coachrec.review.api import review_router
from coachrec.serve.feedback import FeedbackEvent
from coachrec.serve.pipeline import RecommendRequest, UnknownUserError
from coachrec.serve.schemas import FeedbackIn, FeedbackOut, ItemOut, RecommendIn, RecommendOut
from coachrec.serve.service import Service
from coachrec.tracing import SpanKind, SpanStatus


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def create_app(service: Service, *, api_key: str | None = None, review: ReviewStore | None = None) -> FastAPI:
    """The API over `service`; `api_key` defaults to `$COACHREC_API_KEY` (unset: no key needed).
    With `review`, the review queue and golden sets are served under `/v1/review` (key required)."""
    key = api_key if api_key is not None else os.environ.get("COACHREC_API_KEY") or None
    app = FastAPI(title="coachrec", version=coachrec.__version__, description="Coachable recommender serving API.")
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    def require_key(x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> None:
        if key is None:
            return
        given = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
        if given is None:
            raise HTTPException(401, "missing API key: send X-API-Key or Authorization: Bearer")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise HTTPException(403, "invalid API key")

    if review is not None:
        app.include_router(review_router(review), prefix="/v1/review", dependencies=[Depends(require_key)])

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @app.post("/v1/recommend", response_model=RecommendOut)
    def recommend(body: RecommendIn) -> RecommendOut:
        try:
            constraints = body.constraints.to_constraints()
            result = service.recommend(RecommendRequest(body.user_id, body.history, body.k, constraints, body.context))
        except ConstraintError as exc:
            raise HTTPException(422, f"constraints.{exc}") from None
        except UnknownUserError as exc:
            raise HTTPException(404, str(exc)) from None
        items = [
            ItemOut(item=i, title=t, score=s, reason=r, position=p, explored=e, propensity=q)
            for p, (i, t, s, r, e, q) in enumerate(
                zip(result.items, result.titles, result.scores, result.reasons, result.explored, result.propensity)
            )
        ]
        return RecommendOut(request_id=result.request_id, trace_id=result.trace_id, k=result.k, items=items,
                            note=result.note, ignored_history=result.ignored_history)

    @app.post("/v1/feedback", response_model=FeedbackOut, dependencies=[Depends(require_key)])
    def feedback(body: FeedbackIn, background: BackgroundTasks) -> FeedbackOut:
        events = [
            FeedbackEvent(e.request_id, e.item, e.kind, e.position, e.value, e.user_id,
                          None if e.time is None else int(e.time * 1e9))
            for e in body.events
        ]
        ids = service.record_feedback(events)  # committed to disk before we answer
        background.add_task(service.update_span_metrics, [e.request_id for e in events])
        return FeedbackOut(accepted=len(ids), event_ids=ids)

    @app.get("/v1/traces", dependencies=[Depends(require_key)])
    def traces(
        since_minutes: float | None = Query(None, gt=0, description="only traces started this recently"),
        user_id: str | None = None,
        kind: SpanKind | None = Query(None, description="only traces with a span of this kind"),
        status: SpanStatus | None = Query(None, description="only traces with a span of this status"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> dict[str, Any]:
        since = None if since_minutes is None else dt.timedelta(minutes=since_minutes)
        service.store.flush(timeout=5.0)
        table = service.store.traces(since=since, user_id=user_id, kind=kind, status=status, limit=limit)
        return {"traces": table.to_pylist()}

    @app.get("/v1/traces/{trace_id}", dependencies=[Depends(require_key)])
    def trace(trace_id: str) -> dict[str, Any]:
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
                    "span_id": s.span_id, "parent_span_id": s.parent_span_id, "name": s.name, "kind": s.kind,
                    "start_ns": s.start_ns, "duration_ms": s.duration_ns / 1e6, "status": s.status, "error": s.error,
                    "input": s.input_value(), "output": s.output_value(), "attributes": s.attribute_dict(),
                    "metrics": {m["name"]: m["value"] for m in metrics if m["span_id"] == s.span_id},
                }
                for s in spans
            ],
            "feedback": service.feedback.events(spans[0].request_id).to_pylist() if spans[0].request_id else [],
        }

    return app
