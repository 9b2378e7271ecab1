"""HTTP review endpoints: the same actions as `coachrec review`, as a FastAPI router.

`coachrec.app.create_app` mounts it under `/v1/review`. Each route needs an API key with its
scope (`coachrec.serve.auth`): reading the queue and golden sets `read`, annotating `review`,
publishing `publish`. The reviewer recorded with an annotation is the key's principal name; a
`reviewer` field in the body is refused (422), so no caller can sign as someone else.

    GET  /queue?criterion=&status=&limit=  items (pending by default)          read
    GET  /queue/{item_id}                  one item                            read
    POST /queue/{item_id}                  {"action": "accept"|"correct"|"note"|"skip", "label", "note"}   review
    GET  /golden                           golden set versions                 read
    GET  /golden/{name}?version=           the cases of a version (latest by default)   read
    POST /golden/{name}                    {"description"}: publish a new version   publish
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from coachrec.review.store import ReviewError, ReviewStore
from coachrec.serve.api import ERRORS
from coachrec.serve.auth import Principal, require
from coachrec.serve.schemas import ErrorOut, SafeText

MAX_ID = 200
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such review item or golden set", "model": ErrorOut}
}


class Annotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["accept", "correct", "note", "skip"]
    label: Literal["pass", "fail"] | None = None
    note: SafeText | None = Field(default=None, max_length=4000)


class Publish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: SafeText | None = Field(default=None, max_length=2000)


ItemId = Path(min_length=1, max_length=MAX_ID, description="a review item id")
SetName = Path(min_length=1, max_length=MAX_ID, pattern=r"^[A-Za-z0-9._-]+$", description="a golden set name")


_reviewer = require("review")


def review_router(store: ReviewStore) -> APIRouter:
    router = APIRouter(tags=["review"], responses=ERRORS)
    read = [Depends(require("read"))]

    @router.get("/queue", dependencies=read)
    def queue(
        criterion: str | None = Query(None, min_length=1, max_length=MAX_ID),
        limit: int = Query(50, ge=1, le=1000),
        status: Literal["pending", "accepted", "corrected", "skipped"] = "pending",
    ) -> dict[str, Any]:
        items = store.items(status=status, criterion=criterion, limit=limit)
        return {"counts": store.counts(), "items": [i.to_dict() for i in items]}

    @router.get("/queue/{item_id}", dependencies=read, responses=NOT_FOUND)
    def item(item_id: str = ItemId) -> dict[str, Any]:
        try:
            return store.get(item_id).to_dict()
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/queue/{item_id}", responses=NOT_FOUND)
    def annotate(body: Annotation, item_id: str = ItemId, principal: Principal = Depends(_reviewer)) -> dict[str, Any]:
        try:
            store.get(item_id)
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc
        try:
            return store.annotate(
                item_id, body.action, label=body.label, note=body.note, reviewer=principal.name
            ).to_dict()
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from exc

    @router.get("/golden", dependencies=read)
    def golden_sets() -> list[dict[str, Any]]:
        return [s.__dict__ for s in store.golden_sets()]

    @router.get("/golden/{name}", dependencies=read, responses=NOT_FOUND)
    def golden_cases(
        name: str = SetName, version: int | None = Query(None, ge=1, le=2**31 - 1)
    ) -> list[dict[str, Any]]:
        try:
            return [c.to_dict() for c in store.golden_cases(name, version)]
        except ReviewError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post(
        "/golden/{name}",
        dependencies=[Depends(require("publish"))],
        responses={409: {"description": "nothing new reviewed since the last version", "model": ErrorOut}},
    )
    def publish(body: Publish, name: str = SetName) -> dict[str, Any]:
        try:
            return store.publish(name, description=body.description).__dict__
        except ReviewError as exc:
            raise HTTPException(409, str(exc)) from exc

    return router
