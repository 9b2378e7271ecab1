"""Pydantic models of the HTTP API (the edges validate; the inside uses dataclasses)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coachrec.policy import Constraints, Range


class RangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float | None = Field(None, description="inclusive lower bound; omit for none", allow_inf_nan=False)
    max: float | None = Field(None, description="inclusive upper bound; omit for none", allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> RangeIn:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ConstraintsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_genres: list[str] = Field(default_factory=list, description="show only items with at least one of these")
    require_all_genres: bool = Field(False, description="items must have every required genre")
    exclude_genres: list[str] = Field(default_factory=list, description="never show items with any of these")
    ranges: dict[str, RangeIn] = Field(default_factory=dict, description='numeric attribute ranges, e.g. {"year": {"min": 1990}}')
    exclude_seen: bool = Field(True, description="never show items already in the user's history")
    exclude_items: list[str] = Field(default_factory=list, description="item ids never to show")

    def to_constraints(self) -> Constraints:
        return Constraints(
            require_genres=tuple(self.require_genres),
            exclude_genres=tuple(self.exclude_genres),
            require_all_genres=self.require_all_genres,
            ranges={name: Range(r.min, r.max) for name, r in self.ranges.items()},
            exclude_seen=self.exclude_seen,
            exclude_items=tuple(self.exclude_items),
        )


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, description="a known user; or give history")
    history: list[str] | None = Field(None, max_length=10_000, description="item ids the user engaged with, oldest first")
    k: int = Field(10, ge=1, le=100, description="how many items to return")
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    context: str | None = Field(None, max_length=4_000, description="free-text context (used by the LLM stage when present)")

    @model_validator(mode="after")
    def _who(self) -> RecommendIn:
        if self.user_id is None and self.history is None:
            raise ValueError("give a user_id or an anonymous history (or both)")
        return self


class ItemOut(BaseModel):
    item: str
    title: str
    score: float
    reason: str
    position: int
    explored: bool
    propensity: float | None = Field(None, description="probability the policy showed this item in this slot")


class RecommendOut(BaseModel):
    request_id: str
    trace_id: str | None
    k: int
    items: list[ItemOut]
    note: str | None = Field(None, description="set when fewer than k items satisfy the constraints")
    ignored_history: list[str] = Field(default_factory=list, description="history ids not in the catalog")


class FeedbackEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, description="the request that showed the item")
    item: str = Field(min_length=1)
    kind: Literal["impression", "click", "watch", "rating", "thumbs_up", "thumbs_down"]
    position: int | None = Field(None, ge=0, description="0-based slot the item was shown at")
    value: float | None = Field(None, allow_inf_nan=False, description="watch fraction (0..1) or rating")
    user_id: str | None = None
    time: float | None = Field(None, ge=0, description="seconds since the epoch; default: when received")

    @model_validator(mode="after")
    def _value(self) -> FeedbackEventIn:
        if self.kind in ("watch", "rating") and self.value is None:
            raise ValueError(f"value: a {self.kind} event needs a value")
        if self.kind == "watch" and self.value is not None and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"value: a watch fraction must be between 0 and 1, got {self.value}")
        if self.kind == "impression" and self.position is None:
            raise ValueError("position: an impression needs the position it was shown at")
        return self


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackEventIn] = Field(min_length=1, max_length=10_000)


class FeedbackOut(BaseModel):
    accepted: int
    event_ids: list[str]
    durable: bool = Field(True, description="true: committed to disk before this response")
