"""HTTP review endpoints: the same actions as `coachrec review`, as a FastAPI router.

The serve layer mounts it: `app.include_router(review_router(ReviewStore(...)), prefix="/review")`.

    GET  /queue?criterion=&limit=          pending items
    GET  /queue/{item_id}                  one item
    POST /queue/{item_id}                  {"action": "accept"|"correct"|"note"|"skip", "label", "note", "reviewer"}
    GET  /golden                           golden set versions
    GET  /golden/{name}?version=           the cases of a version (latest by default)
    POST /golden/{name}                    {"description"}: publish a new version
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from coachrec.review.store import ReviewError, ReviewStore


class Annotation(BaseModel):
    action: Literal["accept", "correct", "note", "skip"]
    label: Literal["pass", "fail"] | None = None
    note: str | None = Field(default=None, max_length=4000)
    reviewer: str = Field(default="anonymous", min_length=1, max_length=200)


class Publish(BaseModel):
    description: str | None = Field(default=None, max_length=2000)


def review_router(store: ReviewStore) -> APIRouter:
    router = APIRouter(tags=["review"])

    @router.get("/queue")
    def queue(criterion: str | None = None, limit: int = 50, status: str = "pending") -> dict[str, Any]:
        items = store.items(status=status, criterion=criterion, limit=limit)
        return {"counts": store.counts(), "items": [i.to_dict() for i in items]}

    @router.get("/queue/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        try:
            return store.get(item_id).to_dict()
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/queue/{item_id}")
    def annotate(item_id: str, body: Annotation) -> dict[str, Any]:
        try:
            store.get(item_id)
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc
        try:
            return store.annotate(
                item_id, body.action, label=body.label, note=body.note, reviewer=body.reviewer
            ).to_dict()
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from exc

    @router.get("/golden")
    def golden_sets() -> list[dict[str, Any]]:
        return [s.__dict__ for s in store.golden_sets()]

    @router.get("/golden/{name}")
    def golden_cases(name: str, version: int | None = None) -> list[dict[str, Any]]:
        try:
            return [c.to_dict() for c in store.golden_cases(name, version)]
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/golden/{name}")
    def publish(name: str, body: Publish) -> dict[str, Any]:
        try:
            return store.publish(name, description=body.description).__dict__
        except ReviewError as exc:
            raise HTTPException(409, str(exc)) from exc

    return router
