"""Beyond-accuracy metrics over top-K lists (an (n_users, K) array of item indices)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    return float(len(np.unique(lists[lists >= 0])) / n_items)


def novelty(lists: np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p(i)) of recommended items, p(i) = users with i / users."""
    p = np.maximum(popularity[lists], 1) / max(n_users, 1)
    return float(np.mean(-np.log2(p)))


def average_popularity(lists: np.ndarray, popularity: np.ndarray) -> float:
    """Average recommendation popularity (ARP): mean training count of recommended items."""
    return float(np.mean(popularity[lists]))


def gini(lists: np.ndarray, n_items: int) -> float:
    """Gini index of how often each item is recommended (0 = even, 1 = one item only)."""
    counts = np.sort(np.bincount(lists.ravel(), minlength=n_items)).astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * counts).sum() / (n_items * counts.sum()))


def intra_list_diversity(lists: np.ndarray, features: np.ndarray | sp.spmatrix) -> float:
    """Mean pairwise cosine distance between the items of each list, averaged over lists."""
    f = sp.csr_matrix(features).toarray() if sp.issparse(features) else np.asarray(features)
    f = f.astype(np.float32)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.maximum(norms, 1e-12)
    k = lists.shape[1]
    if k < 2:
        return 0.0
    out = []
    for lo in range(0, len(lists), 4096):
        v = f[lists[lo : lo + 4096]]  # (b, K, d)
        sims = np.einsum("bkd,bjd->bkj", v, v)
        off = (sims.sum(axis=(1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k * (k - 1))
        out.append(1.0 - off)
    return float(np.mean(np.concatenate(out)))
