"""Pydantic models of the HTTP API (the edges validate; the inside uses dataclasses).

Every string has a length bound and refuses lone surrogates and control characters; every list
and mapping has a size bound; every number is finite and bounded (a time in seconds up to 2100, a
position that fits the 32-bit column): a request either fits what the store and the pipeline can
hold or gets a 422 naming the field, never a 500.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from coachrec.policy import Constraints, Range
from coachrec.serve.candidates import MAX_CONTEXT_CHARS, MAX_TURN_CHARS, MAX_TURNS, SPEAKER_ALIASES

_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _safe(value: str) -> str:
    """Refuse lone surrogates (not Unicode: they cannot be stored or encoded) and control
    characters other than tab and newlines."""
    bad = _UNSAFE.search(value)
    if bad is not None:
        code = ord(bad.group())
        what = "a lone surrogate (invalid Unicode)" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise ValueError(f"contains {what} U+{code:04X} at index {bad.start()}")
    return value


def _safe_all(values: list[str]) -> list[str]:
    """`_safe` over a whole list in one regex pass (histories hold thousands of ids)."""
    if _UNSAFE.search("\n".join(values)) is not None:
        for n, value in enumerate(values):
            try:
                _safe(value)
            except ValueError as exc:
                raise ValueError(f"item {n} {exc}") from None
    return values


MAX_ID = 200
"""Characters in an id (user, item, request, genre, attribute name)."""
MAX_HISTORY = 10_000
MAX_LIST = 1_000
"""Genres, excluded items, attribute ranges a request may name."""
MAX_EPOCH_S = 4_102_444_800.0
"""2100-01-01 in seconds since the epoch: larger times are milliseconds or nanoseconds sent by mistake."""
MAX_POSITION = 1_000_000

SAFE_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"
"""`_UNSAFE` as the OpenAPI schema says it (JSON Schema cannot name lone surrogates: JSON text has none)."""
_SAFE_SCHEMA = Field(json_schema_extra={"pattern": SAFE_PATTERN})

SafeText = Annotated[str, AfterValidator(_safe), _SAFE_SCHEMA]
"""Free text: any Unicode but lone surrogates and control characters (tab and newlines allowed)."""
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_safe), _SAFE_SCHEMA]
Ids = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), _SAFE_SCHEMA]],
    AfterValidator(_safe_all),
]


def _integral(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer; strict pydantic would not. Strings and bools stay refused."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


Position = Annotated[int, Field(ge=0, le=MAX_POSITION), BeforeValidator(_integral)]
"""A 0-based slot: an int, or a float with an integral value (as JSON Schema's `integer`). The
bounds sit inside the Annotated, before the validator, so the schema says minimum/maximum."""
SlateSize = Annotated[int, Field(ge=1, le=100), BeforeValidator(_integral)]


class ErrorOut(BaseModel):
    """Every 4xx: `detail` says what is wrong; validation errors also list each bad field."""

    detail: str
    errors: list[dict[str, str]] | None = Field(None, description="validation errors: [{field, message}]")


class RangeIn(BaseModel):
    """An inclusive range. min > max is valid JSON and an empty range: no item satisfies it, and the
    response's `note` says how many items the constraints allow (JSON Schema cannot order two
    fields, so refusing it would refuse a schema-valid request)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    min: float | None = Field(None, description="inclusive lower bound; omit for none", allow_inf_nan=False)
    max: float | None = Field(None, description="inclusive upper bound; omit for none", allow_inf_nan=False)


class ConstraintsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    require_genres: Ids = Field(
        default_factory=list, max_length=MAX_LIST, description="show only items with at least one of these"
    )
    require_all_genres: bool = Field(False, description="items must have every required genre")
    exclude_genres: Ids = Field(
        default_factory=list, max_length=MAX_LIST, description="never show items with any of these"
    )
    ranges: dict[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_safe)], RangeIn] = (
        Field(
            default_factory=dict,
            max_length=64,
            description='numeric attribute ranges, e.g. {"year": {"min": 1990}}',
            json_schema_extra={
                "propertyNames": {"minLength": 1, "maxLength": MAX_ID, "pattern": SAFE_PATTERN},
            },
        )
    )
    exclude_seen: bool = Field(True, description="never show items already in the user's history")
    exclude_items: Ids = Field(default_factory=list, max_length=MAX_HISTORY, description="item ids never to show")

    def to_constraints(self) -> Constraints:
        return Constraints(
            require_genres=tuple(self.require_genres),
            exclude_genres=tuple(self.exclude_genres),
            require_all_genres=self.require_all_genres,
            ranges={name: Range(r.min, r.max) for name, r in self.ranges.items()},
            exclude_seen=self.exclude_seen,
            exclude_items=tuple(self.exclude_items),
        )


SpeakerIn = Literal["seeker", "user", "human", "customer", "recommender", "assistant", "system", "bot", "agent"]
assert set(typing.get_args(SpeakerIn)) == set(SPEAKER_ALIASES), "the HTTP speakers must be the ones the pipeline reads"


class TurnIn(BaseModel):
    """One utterance of a conversation."""

    model_config = ConfigDict(extra="forbid", strict=True)
    speaker: SpeakerIn = Field(description='"seeker" (who asks; also "user") or "recommender" (also "assistant")')
    text: SafeText = Field(max_length=MAX_TURN_CHARS, description="what they said")


_TURNS = TypeAdapter(list[TurnIn])


class RecommendIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={  # what `_who` checks, said in the schema
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("user_id", "history", "context")
            ]
        },
    )
    user_id: Id | None = Field(None, description="a known user; or give history")
    history: Ids | None = Field(
        None, max_length=MAX_HISTORY, description="item ids the user engaged with, oldest first"
    )
    k: SlateSize = Field(10, description="how many items to return")
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    context: (
        Annotated[str, Field(max_length=MAX_CONTEXT_CHARS), _SAFE_SCHEMA]
        | Annotated[list[TurnIn], Field(min_length=1, max_length=MAX_TURNS)]
        | None
    ) = Field(
        None,
        description="what the user asks for in words: a message, or a conversation as turns "
        '[{"speaker": "seeker", "text": "..."}, {"speaker": "recommender", "text": "..."}, ...] (oldest first)',
    )

    @model_validator(mode="before")
    @classmethod
    def _context_form(cls, data: Any) -> Any:
        """One error per bad turn, named `context.N.field` (not one per union member)."""
        if not isinstance(data, dict) or data.get("context") is None:
            return data
        context = data["context"]
        if isinstance(context, str):
            try:
                if len(context) > MAX_CONTEXT_CHARS:
                    raise ValueError(f"{len(context):,} characters; at most {MAX_CONTEXT_CHARS:,}")
                _safe(context)
            except ValueError as exc:
                error = PydanticCustomError("context_text", str(exc))
                raise ValidationError.from_exception_data(
                    cls.__name__, [InitErrorDetails(type=error, loc=("context",), input="")]
                ) from None
            return data
        problem = None
        if not isinstance(context, list):
            problem = "must be a string or a list of turns ({speaker, text})"
        elif not context:
            problem = "an empty conversation; give at least one turn, or omit context"
        elif len(context) > MAX_TURNS:
            problem = f"{len(context)} turns; at most {MAX_TURNS}"
        if problem is not None:
            error = PydanticCustomError("context_type", problem)
            raise ValidationError.from_exception_data(
                cls.__name__, [InitErrorDetails(type=error, loc=("context",), input="")]
            )
        try:
            _TURNS.validate_python(context)
        except ValidationError as exc:
            details = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"]), loc=("context", *e["loc"]), input=e["input"]
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, details) from None
        return data

    @model_validator(mode="after")
    def _who(self) -> RecommendIn:
        if self.user_id is None and self.history is None and self.context is None:
            raise ValueError("give a user_id or an anonymous history, or a context (or several)")
        return self

    @model_validator(mode="after")
    def _context_size(self) -> RecommendIn:
        c = self.context
        if isinstance(c, str):
            if len(c) > MAX_CONTEXT_CHARS:
                raise ValueError(f"context: {len(c):,} characters; at most {MAX_CONTEXT_CHARS:,}")
        elif c is not None:
            if not c:
                raise ValueError("context: an empty conversation; give at least one turn, or omit context")
            if len(c) > MAX_TURNS:
                raise ValueError(f"context: {len(c)} turns; at most {MAX_TURNS}")
            total = sum(len(t.text) for t in c)
            if total > MAX_CONTEXT_CHARS:
                raise ValueError(f"context: {total:,} characters in all; at most {MAX_CONTEXT_CHARS:,}")
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


class _EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: Id = Field(description="the request that showed the item")
    item: Id
    position: Position | None = Field(None, description="0-based slot the item was shown at")
    value: float | None = Field(None, ge=-1e9, le=1e9, allow_inf_nan=False, description="a rating, or a watch fraction")
    user_id: Id | None = None
    time: float | None = Field(
        None,
        ge=0,
        le=MAX_EPOCH_S,
        allow_inf_nan=False,
        description="seconds since the epoch (not milliseconds), before 2100; default: when received",
    )


class ImpressionIn(_EventIn):
    """The item was shown, at `position`."""

    kind: Literal["impression"]
    position: Position = Field(description="0-based slot the item was shown at")


class WatchIn(_EventIn):
    """The user watched `value` (0..1) of the item."""

    kind: Literal["watch"]
    value: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="the fraction watched, 0..1")


class RatingIn(_EventIn):
    """The user rated the item `value`."""

    kind: Literal["rating"]
    value: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False, description="the rating")


class ActionIn(_EventIn):
    """A click or a thumb."""

    kind: Literal["click", "thumbs_up", "thumbs_down"]


FeedbackEventIn = Annotated[ImpressionIn | WatchIn | RatingIn | ActionIn, Field(discriminator="kind")]
"""One event; `kind` decides what else it needs (an impression its position, a watch or rating its value)."""


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    events: list[FeedbackEventIn] = Field(min_length=1, max_length=MAX_LIST)


class FeedbackOut(BaseModel):
    accepted: int
    event_ids: list[str]
    durable: bool = Field(True, description="true: committed to disk before this response")
    replayed: bool = Field(
        False, description="true: a retry of an earlier batch (same Idempotency-Key); nothing stored"
    )
