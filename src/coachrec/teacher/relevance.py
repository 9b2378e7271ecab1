"""The relevance member of the committee: a heavier recommender than the one serving.

A small local LLM is near chance on personal relevance (the teacher issue's first measurement),
so relevance comes from an ensemble fitted on the full rating history and calibrated to real
later ratings. Its members, each turned into one feature per (user, item):

- `liked_knn`: item-kNN over the user's liked items (rating >= like), fitted on liked events;
- `all_knn`: item-kNN over everything the user consumed (what the serving stack also uses);
- `disliked_knn`: resemblance to the user's disliked items (rating <= dislike);
- `item_mean`, `user_mean`: shrunk mean ratings (item quality, user leniency);
- `popularity`: log interaction count;
- `knn_rating`: the classic item-based rating prediction — the user's mean-centred ratings of
  the items most similar to the candidate, similarity-weighted;
- `genre_affinity`: the user's shrunk mean-centred rating per genre, averaged over the
  candidate's genres;
- optionally any other fitted `Recommender` (e.g. a sequential model), by name.

kNN and model scores are per-user percentile ranks over the catalog, so they blend on one scale;
a logistic regression fitted on labelled later ratings blends them into P(relevant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from coachrec.data import Dataset
from coachrec.models import BaseRecommender, create
from coachrec.models.itemknn import ItemKNN
from coachrec.teacher.movielens import RatedPairs

BASE_FEATURES = (
    "liked_knn",
    "all_knn",
    "disliked_knn",
    "item_mean",
    "user_mean",
    "popularity",
    "knn_rating",
    "genre_affinity",
)


@dataclass(frozen=True)
class RelevanceConfig:
    like: float = 4.0
    dislike: float = 2.5
    prior: float = 10.0
    """Pseudo-ratings at the global mean added when averaging an item's or user's ratings."""
    genre_prior: float = 3.0
    """Pseudo-ratings at the user's mean added per genre in `genre_affinity`."""
    extra_models: tuple[str, ...] = ()
    """Names of further models (`coachrec.models.create`) whose percentile scores join the blend."""
    extra_model_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    l2: float = 1.0
    seed: int = 0


def _percentiles(scores: np.ndarray) -> np.ndarray:
    """Rank of each score among the row's scores, scaled to [0, 1] (1 = best)."""
    order = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
    out: np.ndarray = order / max(scores.shape[1] - 1, 1)
    return out


def _shrunk_means(keys: np.ndarray, values: np.ndarray, n: int, prior: float, mean: float) -> np.ndarray:
    sums = np.bincount(keys, weights=values, minlength=n)
    counts = np.bincount(keys, minlength=n)
    return (sums + prior * mean) / (counts + prior) - mean


@dataclass(frozen=True)
class LogisticBlend:
    """L2-regularised logistic regression on standardised features (Newton steps)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 30) -> LogisticBlend:
        y = np.asarray(labels, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("a blend needs both relevant and irrelevant labelled pairs")
        mean, sd = x.mean(axis=0), x.std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
        z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
        w = np.zeros(z.shape[1])
        reg = np.full(z.shape[1], l2)
        reg[0] = 0.0  # the bias is not shrunk
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-z @ w))
            grad = z.T @ (p - y) + reg * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(w, mean, scale)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = np.column_stack([np.ones(len(x)), (x - self.mean) / self.scale])
        out: np.ndarray = 1.0 / (1.0 + np.exp(-z @ self.weights))
        return out


class RelevanceCommittee:
    """`fit(data)` then `fit_blend(pairs)`; `probability(user, items)` is P(relevant)."""

    verdict = "likely liked (P(rating>=4)"
    """How a judge's rationale reads an item at or above the threshold (the probability's meaning)."""

    def __init__(self, config: RelevanceConfig = RelevanceConfig()) -> None:
        self.config = config
        self.features = BASE_FEATURES + tuple(config.extra_models)
        self.blend: LogisticBlend | None = None

    @property
    def model_id(self) -> str:
        return "relevance-committee(" + "+".join(self.features) + ")"

    def fit(self, data: Dataset) -> RelevanceCommittee:
        """Fit every member on `data` (a rated interaction log). Blend weights are kept."""
        cfg = self.config
        ev = data.events
        self.data = data
        self.items = data.items
        self.users = data.users
        values = ev["value"].to_numpy().astype(np.float64)
        users = ev["user"].to_numpy().astype(np.int64)
        items = ev["item"].to_numpy().astype(np.int64)
        mean = float(values.mean())
        self.item_mean = _shrunk_means(items, values, data.n_items, cfg.prior, mean)
        self.user_mean = _shrunk_means(users, values, data.n_users, cfg.prior, mean)
        counts = np.bincount(items, minlength=data.n_items)
        self.popularity = np.log1p(counts) / np.log1p(max(counts.max(), 1))
        self.all_knn: ItemKNN = ItemKNN().fit(data)
        self.liked_knn = create("itemknn", recency=0.9).fit(data.with_events(ev.filter(pl.col("value") >= cfg.like)))
        self.extra: list[BaseRecommender] = []
        for name in cfg.extra_models:
            self.extra.append(create(name, dataset=data, **cfg.extra_model_config.get(name, {})).fit(data))
        indptr, hist = data.sequences()
        self._indptr, self._hist, self._values = indptr, hist, values
        self._sim = self.all_knn.sim.tocsr()
        self._genres = data.catalog.genre_matrix()[0].tocsr() if data.catalog is not None else None
        return self

    # -- features ----------------------------------------------------------------------------

    def _user_lists(
        self, user: int | None, history: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        """(all, liked, disliked) item indices, the user-mean feature and the user's mean-centred
        ratings of `all`. A user the committee was fitted on brings their ratings; an anonymous
        history counts as liked (it holds what the user chose to consume), with neutral ratings."""
        if user is not None:
            lo, hi = self._indptr[user], self._indptr[user + 1]
            items, values = self._hist[lo:hi], self._values[lo:hi]
            return (
                items,
                items[values >= self.config.like],
                items[values <= self.config.dislike],
                float(self.user_mean[user]),
                values - values.mean(),
            )
        h = np.asarray(history, dtype=np.int64)
        return h, h, np.zeros(0, np.int64), 0.0, np.zeros(len(h))

    def _rating_features(
        self, all_h: np.ndarray, centred: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`knn_rating` and `genre_affinity` of `items` for one user's rated history."""
        if len(all_h) == 0:
            return np.zeros(len(items)), np.zeros(len(items))
        s = self._sim[items][:, all_h]
        num = s @ centred
        den = abs(s) @ np.ones(len(all_h))
        knn_rating = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        if self._genres is None:
            return knn_rating, np.zeros(len(items))
        g = self._genres[all_h]
        affinity = (g.T @ centred) / (g.T @ np.ones(len(all_h)) + self.config.genre_prior)
        cand = self._genres[items]
        n_genres = np.asarray(cand.sum(axis=1)).ravel()
        return knn_rating, (cand @ affinity) / np.maximum(n_genres, 1)

    def feature_matrix(self, user: int | None, history: Sequence[int] | np.ndarray, items: np.ndarray) -> np.ndarray:
        """Features of `items` (catalog indices) for one user, shape (len(items), n_features)."""
        all_h, liked, disliked, user_mean, centred = self._user_lists(user, history)
        knn_rating, genre_affinity = self._rating_features(all_h, centred, items)
        scored = np.vstack(
            [
                self.liked_knn.score([liked])[0],
                self.all_knn.score([all_h])[0],
                self.all_knn.score([disliked])[0] if len(disliked) else np.zeros(len(self.items), np.float32),
                *[m.score([all_h])[0] for m in self.extra],
            ]
        )
        pct = _percentiles(scored)
        cols = [
            pct[0, items],
            pct[1, items],
            pct[2, items],
            self.item_mean[items],
            np.full(len(items), user_mean),
            self.popularity[items],
            knn_rating,
            genre_affinity,
            *[pct[3 + j, items] for j in range(len(self.extra))],
        ]
        return np.column_stack(cols)

    def pair_features(self, pairs: RatedPairs) -> np.ndarray:
        out = np.zeros((len(pairs), len(self.features)))
        for user in np.unique(pairs.users):
            rows = np.flatnonzero(pairs.users == user)
            out[rows] = self.feature_matrix(int(user), (), pairs.items[rows])
        return out

    # -- blend -------------------------------------------------------------------------------

    def fit_blend(self, x: np.ndarray, labels: np.ndarray) -> RelevanceCommittee:
        """Learn how to blend the members from labelled pairs (features from `pair_features`)."""
        self.blend = LogisticBlend.fit(x, labels, l2=self.config.l2)
        return self

    def blend_weights(self) -> dict[str, float]:
        blend = self._require_blend()
        return {
            "bias": float(blend.weights[0]),
            **{f: float(v) for f, v in zip(self.features, blend.weights[1:], strict=False)},
        }

    def probability_from_features(self, x: np.ndarray) -> np.ndarray:
        return self._require_blend().predict(x)

    def _require_blend(self) -> LogisticBlend:
        if self.blend is None:
            raise RuntimeError("the relevance committee has no blend yet; call fit_blend on labelled pairs")
        return self.blend

    def probability(self, user_id: str | None, history: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """P(relevant) of raw item ids for a raw user id (if known) or an anonymous history.
        Items unknown to the committee get NaN."""
        user = self.users.index(user_id) if user_id is not None and user_id in self.users else None
        idx = self.items.encode(list(items), unknown="mask")
        hist = self.items.encode(list(history), unknown="mask") if user is None else np.zeros(0, np.int64)
        out = np.full(len(idx), np.nan)
        known = idx >= 0
        if known.any():
            out[known] = self.probability_from_features(self.feature_matrix(user, hist[hist >= 0], idx[known]))
        return out


def calibrated_committee(
    data: Dataset, config: RelevanceConfig = RelevanceConfig(), **label_options: Any
) -> RelevanceCommittee:
    """A committee for judging live traces: the blend is learned on held-out later ratings
    (`heldout_labels(data, **label_options)`, calibration half), then the members are refitted
    on all of `data` with that blend kept."""
    from coachrec.teacher.movielens import heldout_labels

    labels = heldout_labels(data, seed=config.seed, **label_options)
    split = RelevanceCommittee(config).fit(labels.train)
    split.fit_blend(split.pair_features(labels.calibration), labels.calibration.labels)
    full = RelevanceCommittee(config).fit(data)
    full.blend = split.blend
    return full
