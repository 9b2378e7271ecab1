"""What flows between pipeline stages: a columnar candidate set and the request context."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coachrec.data import Catalog, IdMap
from coachrec.policy import Constraints
from coachrec.policy.constraints import ConstraintIndex
from coachrec.policy.diversity import normalize_rows
from coachrec.tracing import Tracer

TRACE_LIMIT = 100
"""Candidates recorded per span input/output: enough for any K a teacher or metric looks at."""


class ServingCatalog:
    """The catalog as the request path needs it: ids, titles, constraint index, MMR features."""

    def __init__(self, catalog: Catalog, items: IdMap | None = None) -> None:
        if items is not None and items is not catalog.items:
            catalog = Catalog(catalog.frame, items)  # realign rows to the model's item indices
        self.items = catalog.items
        self.ids: np.ndarray = np.asarray(self.items.ids, dtype=object)
        self.titles: np.ndarray = np.asarray(catalog.titles(), dtype=object)
        self.index = ConstraintIndex(catalog)
        self.features = normalize_rows(self.index.genres.astype(np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def decode(self, idx: np.ndarray) -> list[str]:
        """Raw ids; an index outside the catalog (a buggy stage) reads `<invalid:N>`, never fails."""
        idx = np.asarray(idx, dtype=np.int64)
        valid = (idx >= 0) & (idx < len(self.ids))
        if valid.all():
            return self.ids[idx].tolist()
        return [self.ids[i] if ok else f"<invalid:{i}>" for i, ok in zip(idx.tolist(), valid.tolist())]


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
        out: dict[str, Any] = {
            "n": len(self),
            "items": catalog.decode(self.idx[head]),
            "scores": np.round(self.score[head], 6).tolist(),
        }
        if sources:
            out["sources"] = {name: _nullable(self.sources[head, r]) for r, name in enumerate(self.source_names)}
        if self.explored is not None:
            out["explored"] = self.explored[head].tolist()
        if self.reasons is not None:
            out["reasons"] = self.reasons[head]
        return out


def _nullable(values: np.ndarray) -> list[float | None]:
    """Rounded floats with NaN as None (JSON has no NaN)."""
    out = np.round(values.astype(np.float64), 6).astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


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
