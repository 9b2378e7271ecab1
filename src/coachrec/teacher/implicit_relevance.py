"""The relevance committee for implicit data (0/1 interactions, no ratings), e.g. Amazon Beauty.

With no ratings, the rating members of `RelevanceCommittee` (liked/disliked kNN, shrunk means,
the kNN rating, genre affinity) carry nothing, and percentile ranks over a sparse score row are
mostly ties broken by item index. This committee's members are the ones that predict later
*choices*: item-kNN co-occurrence and sequential rules (what followed the user's recent items),
each as a log score and a mid-rank percentile over the catalog (ties share their mean rank), and
log popularity; blended by the same logistic regression, fitted on later interactions against
popularity-matched items (`teacher.later_interactions`). It stays a `RelevanceCommittee`, so
the judge, the distillation and the click log use it unchanged (per request: the batch path is
the rating committee's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coachrec.data import Dataset
from coachrec.models import BaseRecommender, create
from coachrec.models.itemknn import ItemKNN
from coachrec.teacher.relevance import RelevanceCommittee, RelevanceConfig

IMPLICIT_FEATURES = ("knn_log", "knn_percentile", "rules_log", "rules_percentile", "popularity")


def mid_rank_percentile(row: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Share of the row's scores below each item's score, ties counted half (in [0, 1])."""
    ordered = np.sort(row)
    value = row[items]
    below = np.searchsorted(ordered, value, side="left")
    upto = np.searchsorted(ordered, value, side="right")
    out: np.ndarray = (below + upto) / (2.0 * len(row))
    return out


class ImplicitCommittee(RelevanceCommittee):
    """`fit(data)` then `fit_blend(pairs)`; `probability(user, history, items)` is P(relevant):
    the odds that the item is one of the user's later choices rather than an equally popular one."""

    verdict = "likely chosen later (P(later choice, against an equally popular item)"

    def __init__(self, config: RelevanceConfig | None = None) -> None:
        # every event is a choice: liked = all, disliked = none (the base class's user lists)
        super().__init__(config or RelevanceConfig(like=1.0, dislike=0.0))
        self.features = IMPLICIT_FEATURES

    @property
    def model_id(self) -> str:
        return "implicit-relevance-committee(" + "+".join(self.features) + ")"

    def fit(self, data: Dataset) -> ImplicitCommittee:
        ev = data.events
        self.data, self.items, self.users = data, data.items, data.users
        counts = np.bincount(ev["item"].to_numpy(), minlength=data.n_items)
        self.popularity = np.log1p(counts)
        self.item_mean = np.zeros(data.n_items)
        self.user_mean = np.zeros(data.n_users)
        self.all_knn = ItemKNN().fit(data)
        self.liked_knn = self.all_knn
        self.rules: BaseRecommender = create("sequential-rules", dataset=data).fit(data)
        self.extra = []
        indptr, hist = data.sequences()
        self._indptr, self._hist = indptr, hist
        self._values = ev["value"].to_numpy().astype(np.float64)
        self._sim = self.all_knn.sim.tocsr()
        self._genres = None
        return self

    def feature_matrix(self, user: int | None, history: Sequence[int] | np.ndarray, items: np.ndarray) -> np.ndarray:
        all_h = self._user_lists(user, history)[0]
        cols = []
        for model in (self.all_knn, self.rules):
            row = model.score([all_h])[0].astype(np.float64)
            cols += [np.log1p(100.0 * np.maximum(row[items], 0.0)), mid_rank_percentile(row, items)]
        cols.append(self.popularity[items])
        return np.column_stack(cols)
