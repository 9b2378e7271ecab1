"""Student features: what the learned ranker sees of one (request, candidate item) pair.

Only signals the production stack already has at request time: each retriever's score (scaled
by that retriever's best score in the set, so a trace of the top candidates and the full set at
serving time give the same value), whether the retriever proposed the item, the champion blend's
rank, item popularity and mean training rating, genre overlap with the user's history, and
release year. The teacher's own members (liked/disliked kNN, calibration on later ratings) are
not features: the student must learn to approximate them from cheap signals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from coachrec.data import Catalog, Dataset

ITEM_FEATURES = ("log_popularity", "item_mean_rating", "genre_overlap", "year")


@dataclass
class ItemStats:
    """Per-item statistics of the training data, aligned with the models' item indices."""

    log_popularity: np.ndarray
    mean_rating: np.ndarray
    genres: sp.csr_matrix
    year: np.ndarray

    @cached_property
    def dense_genres(self) -> tuple[np.ndarray, np.ndarray]:
        """The genre matrix dense (items x genres, a few dozen columns) and each item's norm: the
        request path reads a few hundred rows per request, which sparse indexing makes ~10x slower."""
        g = np.asarray(self.genres.todense(), dtype=np.float32)
        return g, np.sqrt((g * g).sum(axis=1))

    @classmethod
    def from_data(cls, data: Dataset, catalog: Catalog | None, prior: float = 10.0) -> ItemStats:
        n = data.n_items
        items = data.events["item"].to_numpy().astype(np.int64)
        counts = np.bincount(items, minlength=n).astype(np.float64)
        values = data.events["value"].to_numpy().astype(np.float64)
        mean = float(values.mean()) if len(values) else 0.0
        sums = np.bincount(items, weights=values, minlength=n)
        shrunk = (sums + prior * mean) / (counts + prior) - mean
        if catalog is not None:
            genres = sp.csr_matrix(catalog.genre_matrix()[0], dtype=np.float32)
            year = np.zeros(n)
            if "year" in catalog.frame.columns:
                raw = catalog.frame["year"].cast(float).to_numpy()
                known = ~np.isnan(raw)
                if known.any():
                    mu, sd = raw[known].mean(), raw[known].std() or 1.0
                    year = np.where(known, (raw - mu) / sd, 0.0)
        else:
            genres, year = sp.csr_matrix((n, 0), dtype=np.float32), np.zeros(n)
        return cls(np.log1p(counts) / np.log1p(max(counts.max(), 1.0)), shrunk, genres, year)

    def to_state(self) -> dict[str, np.ndarray]:
        g = self.genres.tocsr()
        return {
            "log_popularity": self.log_popularity,
            "mean_rating": self.mean_rating,
            "year": self.year,
            "g_data": g.data,
            "g_indices": g.indices,
            "g_indptr": g.indptr,
            "g_shape": np.asarray(g.shape),
        }

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> ItemStats:
        genres = sp.csr_matrix((s["g_data"], s["g_indices"], s["g_indptr"]), shape=tuple(int(x) for x in s["g_shape"]))
        return cls(s["log_popularity"], s["mean_rating"], genres, s["year"])


def feature_names(retrievers: tuple[str, ...]) -> tuple[str, ...]:
    per_retriever = tuple(f"{kind}.{r}" for r in retrievers for kind in ("score", "present"))
    return (*per_retriever, "blend_rank", *ITEM_FEATURES)


def scaled_sources(sources: np.ndarray) -> np.ndarray:
    """Each retriever's scores divided by its largest absolute score in the set; missing is 0."""
    src = sources.astype(np.float64)
    present = ~np.isnan(src)
    top = np.where(present, np.abs(src), 0.0).max(axis=0, initial=0.0)
    return np.where(present, src / np.where(top > 0, top, 1.0), 0.0)


def candidate_features(
    stats: ItemStats, history: np.ndarray, idx: np.ndarray, sources: np.ndarray, blend: np.ndarray
) -> np.ndarray:
    """Features of candidates `idx` (with per-retriever raw `sources`, NaN = not proposed, and
    the champion's `blend` score) for a user with `history`; shape (len(idx), n_features)."""
    n = len(idx)
    scaled = scaled_sources(sources)
    present = (~np.isnan(sources)).astype(np.float64)
    per_retriever = np.empty((n, 2 * sources.shape[1]))
    per_retriever[:, 0::2], per_retriever[:, 1::2] = scaled, present
    rank = np.empty(n)
    rank[np.lexsort((idx, -blend))] = np.arange(n)
    blend_rank = np.log1p(rank) / np.log1p(max(n, 1))
    overlap = np.zeros(n)
    if stats.genres.shape[1] and len(history):
        genres, norms = stats.dense_genres
        profile = genres[history[-50:]].sum(axis=0)
        norm = np.linalg.norm(profile)
        if norm > 0:
            item_norm = norms[idx]
            overlap = (genres[idx] @ profile) / norm / np.where(item_norm > 0, item_norm, 1.0)
    return np.column_stack(
        [per_retriever, blend_rank, stats.log_popularity[idx], stats.mean_rating[idx], overlap, stats.year[idx]]
    )
