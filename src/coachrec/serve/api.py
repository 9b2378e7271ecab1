"""The serving routes (FastAPI): health, recommend, feedback, traces.

`coachrec.app.create_app` assembles these with the review routes into the HTTP app. Every
route but `/health` needs an API key with its scope (`coachrec.serve.auth`): `recommend` for
`POST /v1/recommend`, `ingest` for `POST /v1/feedback`, `read` for `GET /v1/traces...`. Every
validation error is a 4xx whose `detail` names the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from coachrec.policy import ConstraintError
from coachrec.serve.auth import AUTH_RESPONSES, require
from coachrec.serve.feedback import FeedbackEvent
from coachrec.serve.pipeline import RecommendRequest, UnknownUserError
from coachrec.serve.schemas import FeedbackIn, FeedbackOut, ItemOut, RecommendIn, RecommendOut
from coachrec.serve.service import Service
from coachrec.tracing import SpanKind, SpanStatus


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with `detail` naming each bad field (`constraints.ranges.year.min: ...`)."""
    errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def serve_router(service: Service) -> APIRouter:
    """The routes over `service`, each guarded by its scope."""
    router = APIRouter(responses=AUTH_RESPONSES)

    @router.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @router.post("/v1/recommend", response_model=RecommendOut, dependencies=[Depends(require("recommend"))])
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
                zip(
                    result.items,
                    result.titles,
                    result.scores,
                    result.reasons,
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

    @router.post("/v1/feedback", response_model=FeedbackOut, dependencies=[Depends(require("ingest"))])
    def feedback(body: FeedbackIn, background: BackgroundTasks) -> FeedbackOut:
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
        ids = service.record_feedback(events)  # committed to disk before we answer
        background.add_task(service.update_span_metrics, [e.request_id for e in events])
        return FeedbackOut(accepted=len(ids), event_ids=ids)

    @router.get("/v1/traces", dependencies=[Depends(require("read"))])
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

    @router.get("/v1/traces/{trace_id}", dependencies=[Depends(require("read"))])
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
