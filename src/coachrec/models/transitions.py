"""Sequential rules (Ludewig & Jannach 2018's "SR"): item i -> item j weighted by how often j
followed i within `window` steps in a training sequence (1/gap per occurrence).

Cheap to fit (one sparse count), and it keys on order, which item-kNN's co-occurrence
ignores, so its errors differ from both item-kNN's and the neural models'; a part for
`coachrec.models.blend`. Scoring is item-kNN's: the rows of the history items, the i-th most
recent weighted `recency ** i`, plus a popularity fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from coachrec.data import Dataset
from coachrec.models.itemknn import ItemKNN


@dataclass
class SequentialRulesConfig:
    """`window`: how many steps ahead a later item still counts (weight 1/gap). `normalize`:
    each row divided by its sum (the rule's confidence) rather than raw weighted counts.
    `recency`, `popularity_fallback`: as item-kNN's. The defaults had the best validation
    NDCG@10 on Beauty (leave-one-out, full ranking) over window {1, 3, 5, 10, 20, 50} x
    normalize x recency {0.3, 0.5, 0.7}: 0.0672 (window 10: 0.0669, 3: 0.0658; normalized
    rows 0.003-0.004 lower)."""

    window: int = 50
    normalize: bool = False
    recency: float = 0.5
    popularity_fallback: float = 1e-4


class SequentialRules(ItemKNN):
    """Score(item) = sum over history items h of recency(h) * rule(h -> item)."""

    name = "sequential-rules"
    Config = SequentialRulesConfig  # type: ignore[assignment]  # ItemKNN's scoring reads only recency, popularity_fallback

    def _fit(self, data: Dataset) -> None:
        c = self.config
        if c.window < 1:
            raise ValueError(f"sequential-rules: window must be >= 1, got {c.window}")
        indptr, items = data.sequences()
        user = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        src, dst, val = [], [], []
        for gap in range(1, c.window + 1):
            same = user[:-gap] == user[gap:]
            src.append(items[:-gap][same])
            dst.append(items[gap:][same])
            val.append(np.full(int(same.sum()), 1.0 / gap, dtype=np.float32))
        n = data.n_items
        sim = sp.csr_matrix((np.concatenate(val), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
        sim.sum_duplicates()
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        if c.normalize:
            total = np.asarray(sim.sum(axis=1)).ravel()
            sim = sp.diags(1.0 / np.maximum(total, 1e-12)) @ sim
        self.sim = sp.csr_matrix(sim, dtype=np.float32)
        pop = data.item_popularity().astype(np.float32)
        self.popularity = pop / max(float(pop.max()), 1.0)
