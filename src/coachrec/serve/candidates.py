"""What flows between pipeline stages: a columnar candidate set and the request context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from coachrec.data import Catalog, IdMap
from coachrec.llm.quotable import quotable_titles
from coachrec.policy import Constraints
from coachrec.policy.constraints import ConstraintIndex
from coachrec.policy.diversity import normalize_rows
from coachrec.tracing import Tracer

if TYPE_CHECKING:
    from coachrec.serve.understanding import RequestIntent

TRACE_LIMIT = 100
"""Candidates recorded per span input/output: enough for any K a teacher or metric looks at."""


class ServingCatalog:
    """The catalog as the request path needs it: ids, titles, constraint index, MMR features."""

    def __init__(self, catalog: Catalog, items: IdMap | None = None) -> None:
        if items is not None and items is not catalog.items:
            catalog = Catalog(catalog.frame, items)  # realign rows to the model's item indices
        self.data = catalog
        """The data catalog, rows aligned with the item indices (text, tags, attributes)."""
        self.items = catalog.items
        self.ids: np.ndarray = np.asarray(self.items.ids, dtype=object)
        self.titles: np.ndarray = np.asarray(catalog.titles(), dtype=object)
        self.index = ConstraintIndex(catalog)
        self.features = normalize_rows(self.index.genres.astype(np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def quotable(self) -> np.ndarray:
        """Titles a reason may name (`coachrec.llm.quotable`): no reason quotes raw catalog text.
        Computed on the first reason (0.1-0.4 s for MovieLens' 9,742 titles), then kept."""
        frame = self.data.frame
        years = frame["year"].to_list() if "year" in frame.columns else None
        return np.asarray(quotable_titles(self.titles.tolist(), years), dtype=bool)

    def quote(self, item: int) -> str | None:
        """The title of `item` as a reason may name it, or None when the allowlist refuses it."""
        return str(self.titles[item]).strip() if self.quotable[item] else None

    def decode(self, idx: np.ndarray) -> list[str]:
        """Raw ids; an index outside the catalog (a buggy stage) reads `<invalid:N>`, never fails."""
        idx = np.asarray(idx, dtype=np.int64)
        valid = (idx >= 0) & (idx < len(self.ids))
        if valid.all():
            decoded: list[str] = self.ids[idx].tolist()
            return decoded
        return [self.ids[i] if ok else f"<invalid:{i}>" for i, ok in zip(idx.tolist(), valid.tolist(), strict=False)]


@dataclass
class Candidates:
    """A candidate set, one row per item, best first once a ranker has run.

    `sources[:, r]` is retriever r's raw score (NaN where r did not retrieve the item);
    `explored`/`propensity` are set by the exploration stage, `reasons` by the explain stage.
    """

    idx: np.ndarray
    score: np.ndarray
    sources: np.ndarray
    source_names: tuple[str, ...]
    explored: np.ndarray | None = None
    propensity: np.ndarray | None = None
    reasons: list[str] | None = None

    @classmethod
    def empty(cls, source_names: tuple[str, ...] = ()) -> Candidates:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, len(source_names)), np.float32), source_names)

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, rows: np.ndarray) -> Candidates:
        """The rows at `rows` (an order, a subset or a boolean mask), every column kept aligned."""
        rows = np.asarray(rows)
        return replace(
            self,
            idx=self.idx[rows],
            score=self.score[rows],
            sources=self.sources[rows],
            explored=None if self.explored is None else self.explored[rows],
            propensity=None if self.propensity is None else self.propensity[rows],
            reasons=None if self.reasons is None else [self.reasons[i] for i in np.arange(len(self.idx))[rows]],
        )

    def normalized_sources(self) -> np.ndarray:
        """Per-retriever scores min-max scaled to [0, 1] over this set; missing is 0."""
        src = self.sources.astype(np.float64)
        present = ~np.isnan(src)
        lo = np.where(present, src, np.inf).min(axis=0, initial=np.inf)
        hi = np.where(present, src, -np.inf).max(axis=0, initial=-np.inf)
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = np.where(hi > lo, (src - lo) / span, 1.0)
        return np.where(present, scaled, 0.0)

    def trace(self, catalog: ServingCatalog, limit: int = TRACE_LIMIT, sources: bool = False) -> dict[str, Any]:
        """Item ids and scores for a span, capped at `limit` rows; `sources` adds the
        per-retriever scores (null where a retriever did not propose the item)."""
        head = slice(0, limit)
        # float arrays go to the span encoder as they are: it writes NaN as null (JSON has no NaN)
        out: dict[str, Any] = {
            "n": len(self),
            "items": catalog.decode(self.idx[head]),
            "scores": np.round(self.score[head].astype(np.float64), 6),
        }
        if sources:
            block = np.round(np.ascontiguousarray(self.sources[head].T, dtype=np.float64), 6)
            out["sources"] = dict(zip(self.source_names, block, strict=True))
        if self.explored is not None:
            out["explored"] = self.explored[head].tolist()
        if self.propensity is not None:  # per shown slot given the slots above; unrounded: estimators divide by it
            out["propensity"] = self.propensity[head].astype(np.float64)
        if self.reasons is not None:
            out["reasons"] = self.reasons[head]
        return out


Speaker = Literal["seeker", "recommender"]
SPEAKER_ALIASES: dict[str, Speaker] = {
    "seeker": "seeker", "user": "seeker", "human": "seeker", "customer": "seeker",
    "recommender": "recommender", "assistant": "recommender", "system": "recommender", "bot": "recommender",
    "agent": "recommender",
}  # fmt: skip
"""Speaker names a conversation may use, and whose side each is on."""
MAX_TURNS = 200
MAX_TURN_CHARS = 4_000
MAX_CONTEXT_CHARS = 20_000


@dataclass(frozen=True)
class Turn:
    """One utterance of a conversation: who said it ("seeker": the person asking for
    recommendations; "recommender": the other side) and what they said."""

    speaker: Speaker
    text: str


class TurnLike(Protocol):
    """Anything with a `speaker` and a `text` (a `Turn`, the HTTP schema's turn)."""

    @property
    def speaker(self) -> str: ...

    @property
    def text(self) -> str: ...


RequestText = str | Sequence[TurnLike | Mapping[str, Any]]
"""A request's free text: one message, or a conversation as turns (oldest first)."""


def as_turns(context: RequestText | None) -> tuple[Turn, ...]:
    """The turns of a request's text: a string is one seeker turn; a conversation is a list
    of `Turn`s or of mappings (or objects) with `speaker` and `text`. Raises `ValueError`
    naming the problem (unknown speaker, not text, too long); empty text gives no turns."""
    if context is None:
        return ()
    if isinstance(context, str):
        if len(context) > MAX_CONTEXT_CHARS:
            raise ValueError(f"context: {len(context):,} characters; at most {MAX_CONTEXT_CHARS:,}")
        return (Turn("seeker", context),) if context.strip() else ()
    turns = list(context)
    if not turns:
        raise ValueError("context: an empty conversation; give at least one turn, or omit context")
    if len(turns) > MAX_TURNS:
        raise ValueError(f"context: {len(turns)} turns; at most {MAX_TURNS}")
    out: list[Turn] = []
    total = 0
    for i, t in enumerate(turns):
        speaker: Any
        text: Any
        if isinstance(t, Turn):
            speaker, text = t.speaker, t.text
        elif isinstance(t, Mapping):
            speaker, text = t.get("speaker"), t.get("text")
        else:
            speaker, text = getattr(t, "speaker", None), getattr(t, "text", None)
        side = SPEAKER_ALIASES.get(str(speaker).lower()) if isinstance(speaker, str) else None
        if side is None:
            raise ValueError(f"context.{i}.speaker: unknown speaker {speaker!r}; use one of {sorted(SPEAKER_ALIASES)}")
        if not isinstance(text, str):
            raise ValueError(f"context.{i}.text: must be a string, got {type(text).__name__}")
        if len(text) > MAX_TURN_CHARS:
            raise ValueError(f"context.{i}.text: {len(text):,} characters; at most {MAX_TURN_CHARS:,} a turn")
        total += len(text)
        out.append(Turn(side, text))
    if total > MAX_CONTEXT_CHARS:
        raise ValueError(f"context: {total:,} characters in all; at most {MAX_CONTEXT_CHARS:,}")
    return tuple(out) if any(t.text.strip() for t in out) else ()


def flatten(turns: Sequence[Turn]) -> str | None:
    """The turns as one text (a single seeker turn as itself), None when there are none."""
    if not turns:
        return None
    if len(turns) == 1 and turns[0].speaker == "seeker":
        return turns[0].text
    return "\n".join(f"{'User' if t.speaker == 'seeker' else 'Recommender'}: {t.text}" for t in turns)


@dataclass
class RequestContext:
    """Everything a stage may read about the request. `allowed` is the compiled constraint mask."""

    request_id: str
    user_id: str | None
    history: np.ndarray
    k: int
    constraints: Constraints
    allowed: np.ndarray
    catalog: ServingCatalog
    tracer: Tracer
    context: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    """Full-catalog model scores computed ahead for a batch of requests (offline scoring), by
    retriever name: a retriever uses them instead of scoring the history again."""
    turns: tuple[Turn, ...] = ()
    """The request's text as turns (a message is one seeker turn); empty without text."""
    intent: RequestIntent | None = None
    """What the `understand` stage read in the text (None: no text, or no such stage)."""

    @property
    def has_text(self) -> bool:
        return bool(self.turns)
