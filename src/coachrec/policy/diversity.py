"""Diversity re-ranking by maximal marginal relevance (MMR, Carbonell & Goldstein 1998).

Each pick maximizes `lam * relevance - (1 - lam) * max similarity to the items already picked`.
Relevance is the candidates' scores min-max scaled to [0, 1] so `lam` means the same whatever
scale the ranker produces; similarity is the cosine of item feature rows (genre multi-hot vectors
or learned item embeddings).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def normalize_rows(features: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Dense float32 rows scaled to unit length (all-zero rows stay zero)."""
    dense = np.asarray(sp.csr_matrix(features).todense() if sp.issparse(features) else features, dtype=np.float32)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    out: np.ndarray = dense / np.maximum(norms, 1e-12)
    return out


def mmr(scores: np.ndarray, features: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Order of the candidates: the first `min(k, n)` positions chosen by MMR, then the rest
    in their original score order.

    `scores` (n,) are the candidates' relevance; `features` (n, d) their unit-length feature
    rows. `lam=1` is pure relevance, `lam=0` pure novelty. One matrix-vector product per pick.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"MMR lambda must be in [0, 1], got {lam}")
    n = len(scores)
    by_score = np.argsort(-scores, kind="stable")
    k = min(k, n)
    if lam >= 1.0 or k <= 1:
        return by_score
    lo, hi = float(scores.min()), float(scores.max())
    rel = (scores - lo) / (hi - lo) if hi > lo else np.ones(n)
    max_sim = np.zeros(n)
    available = np.ones(n, dtype=bool)
    picked = np.empty(k, dtype=np.int64)
    for step in range(k):
        gain = np.where(available, lam * rel - (1.0 - lam) * max_sim, -np.inf)
        best = int(np.argmax(gain))
        picked[step] = best
        available[best] = False
        np.maximum(max_sim, features @ features[best], out=max_sim)
    rest = by_score[available[by_score]]
    return np.concatenate([picked, rest])
