"""Retrievers: each turns a request into a scored candidate list drawn from allowed items.

A `Retriever` may be anything with `retrieve` and `reasons`; `RecommenderRetriever` adapts any
fitted `Recommender` (scores all items, masks out what the constraints forbid, keeps the top n),
so a constraint never costs recall: the n best *allowed* items come back however narrow it is.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from coachrec.models import BaseRecommender, top_k
from coachrec.models.itemknn import ItemKNN
from coachrec.models.popularity import Popularity
from coachrec.serve.candidates import RequestContext


class Retriever(Protocol):
    name: str

    def retrieve(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """Candidate item indices and their scores, best first."""
        ...

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        """Why this retriever proposed each of `idx`, in words a user understands."""
        ...


def top_allowed(scores: np.ndarray, keep: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best items of `scores` among those where `keep` holds (and the score is finite),
    best first, ties to the lower index: what every retriever returns."""
    masked = np.where(keep & np.isfinite(scores), scores, -np.inf)
    idx = top_k(masked[None, :], n)[0]
    idx = idx[np.isfinite(masked[idx])]
    return idx.astype(np.int64), masked[idx].astype(np.float64)


class RecommenderRetriever:
    """The top `n` allowed items of a fitted model for the request's history.

    Item-kNN scores are sums of similarities, so 0 means "no evidence" and such items are not
    returned (an empty history then retrieves nothing rather than arbitrary items).

    With `fill`, it also scores the items other retrievers found (`score_items`, from the
    same full-catalog row), so the blend reads its real score for every candidate.
    """

    def __init__(self, model: BaseRecommender, n: int = 200, name: str | None = None, *, fill: bool = False) -> None:
        if n < 1:
            raise ValueError(f"a retriever needs n >= 1 candidates, got {n}")
        self.model = model
        self.n = n
        self.name = name or model.name
        self.fill = fill
        self._positive_only = isinstance(model, ItemKNN)
        # item-kNN reasons read similarities *into* an item: its column, i.e. a row of the transpose
        self._into = model.sim.T.tocsr() if isinstance(model, ItemKNN) else None
        self._order_of: np.ndarray | None = None
        self._order: tuple[np.ndarray, np.ndarray] | None = None

    def _static(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Popularity's scores ignore the history: they and their full order (best first, ties to
        the lower index) are computed once per fitted model, so a request only filters that
        order by its allowed items instead of partitioning the catalog again."""
        if not isinstance(self.model, Popularity):
            return None
        counts = self.model.counts
        if self._order_of is not counts:
            scores = np.asarray(self.model.score([np.zeros(0, np.int64)])[0], dtype=np.float64)
            scores.flags.writeable = False
            order = top_k(scores[None, :], len(scores))[0]
            self._order, self._order_of = (order[np.isfinite(scores[order])], scores), counts
        return self._order

    def score_contexts(self, ctxs: list[RequestContext]) -> np.ndarray:
        """The model's scores of every item for each request (one row each): its history.
        Batched offline (`Pipeline.offline`), one request at a time when served."""
        return np.asarray(self.model.score([ctx.history for ctx in ctxs]), dtype=np.float64)

    def retrieve(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        scores = ctx.scores.get(self.name)
        static = self._static() if scores is None else None
        if static is not None:
            order, scores = static
            if self.fill:
                ctx.scores[self.name] = scores
            idx = order[ctx.allowed[order]][: self.n]
            return idx, scores[idx]
        if scores is None:
            scores = self.score_contexts([ctx])[0]
            if self.fill:  # kept for score_items
                ctx.scores[self.name] = scores
        floor = 0.0 if self._positive_only else -np.inf
        return top_allowed(scores, ctx.allowed & (scores > floor), self.n)

    def score_items(self, ctx: RequestContext, items: np.ndarray) -> np.ndarray | None:
        """With `fill`: this model's scores of `items` (candidates other retrievers found);
        else None (they stay missing)."""
        scores = ctx.scores.get(self.name) if self.fill else None
        if scores is None:
            return None
        return np.asarray(scores, dtype=np.float64)[np.asarray(items, dtype=np.int64)]

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        if isinstance(self.model, ItemKNN) and len(ctx.history):
            return self._similar_to(ctx, np.asarray(idx, dtype=np.int64))
        if isinstance(self.model, Popularity) or (self._positive_only and not len(ctx.history)):
            return ["popular with other viewers"] * len(idx)
        return [f"recommended by {self.name}"] * len(idx)

    def _similar_to(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        """ "similar to <the history item most similar to it>" for each item (recent history)."""
        assert self._into is not None
        history = ctx.history[-50:]  # the recent past explains best, and bounds the cost
        position = np.full(self._into.shape[0], -1, dtype=np.int64)
        position[history] = np.arange(len(history))
        indptr, indices, data = self._into.indptr, self._into.indices, self._into.data
        out = []
        for item in idx.tolist():
            cols = indices[indptr[item] : indptr[item + 1]]
            pos = position[cols]
            hit = pos >= 0
            if hit.any():
                best = pos[hit][int(np.argmax(data[indptr[item] : indptr[item + 1]][hit]))]
                title = ctx.catalog.quote(int(history[best]))  # None: the allowlist refuses the title
                out.append(f"similar to {title}" if title else "similar to titles in your history")
            else:
                out.append("recommended by item-kNN")
        return out


class ScoresRetriever:
    """The top `n` allowed items of full-catalog scores handed in with the request
    (`RequestContext.scores[name]`): a signal computed outside the pipeline, such as a model
    fitted on another data set's interactions or a co-mention table, blended like any other
    retriever. A request without such scores retrieves nothing."""

    def __init__(self, name: str, n: int = 200, reason: str = "often recommended in similar conversations") -> None:
        if n < 1:
            raise ValueError(f"a retriever needs n >= 1 candidates, got {n}")
        self.name = name
        self.n = n
        self.reason = reason

    def retrieve(self, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        scores = ctx.scores.get(self.name)
        if scores is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return top_allowed(scores, ctx.allowed, self.n)

    def score_items(self, ctx: RequestContext, idx: np.ndarray) -> np.ndarray | None:
        scores = ctx.scores.get(self.name)
        return None if scores is None else np.asarray(scores, dtype=np.float64)[np.asarray(idx, dtype=np.int64)]

    def reasons(self, ctx: RequestContext, idx: np.ndarray) -> list[str]:
        return [self.reason] * len(idx)
