"""Ranking metrics (Recall/HR, Precision, MRR, NDCG at K), vectorized over users.

Everything starts from the pessimistic 0-based rank of each target: the number of
candidates scored strictly higher plus the number of other candidates scored equal.
"""

from __future__ import annotations

import numpy as np


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pessimistic rank of one target per row. `scores` (n, m); `targets` (n,) column indices.

    Excluded candidates must already carry -inf; a NaN score is an error."""
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the model produced invalid output")
    t = scores[np.arange(len(targets)), targets][:, None]
    ranks: np.ndarray = (scores > t).sum(axis=1) + (scores == t).sum(axis=1) - 1
    return ranks


def multi_target_ranks(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pessimistic rank of several targets per row (pairs `rows`, `cols`) among all columns,
    other targets included. One sort per row: an item's rank is the number of items at or
    after the first sorted position of its tie group, minus itself."""
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the model produced invalid output")
    n, m = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    srt = np.take_along_axis(scores, order, axis=1)
    new_group = np.ones((n, m), dtype=bool)
    new_group[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.maximum.accumulate(np.where(new_group, np.arange(m), 0), axis=1)
    first_of_item = np.empty_like(first)
    np.put_along_axis(first_of_item, order, first, axis=1)
    ranks: np.ndarray = m - first_of_item[rows, cols] - 1
    return ranks


def metrics_from_ranks(
    ranks: np.ndarray, rows: np.ndarray, n_rows: int, n_targets: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Per-row metrics from target ranks. `rows[j]` is the row of target j; `n_targets` the
    number of targets per row. Recall@K = hits/targets, Precision@K = hits/K,
    HR@K = any hit, NDCG@K = DCG/IDCG, MRR@K = 1/(best rank + 1) if within K."""
    out: dict[str, np.ndarray] = {}
    gain = 1.0 / np.log2(ranks + 2.0)
    best = np.full(n_rows, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, rows, ranks)
    nt = np.maximum(n_targets, 1).astype(np.float64)
    for k in ks:
        hit = ranks < k
        hits = np.bincount(rows, weights=hit, minlength=n_rows)
        dcg = np.bincount(rows, weights=gain * hit, minlength=n_rows)
        ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[np.minimum(n_targets, k) - 1]
        out[f"recall@{k}"] = hits / nt
        out[f"precision@{k}"] = hits / k
        out[f"hr@{k}"] = (hits > 0).astype(np.float64)
        out[f"ndcg@{k}"] = dcg / ideal
        out[f"mrr@{k}"] = np.where(best < k, 1.0 / (best + 1.0), 0.0)
    return out
