"""The relevance committee over a batch of requests: `RelevanceCommittee.probability` for many
(user, history, shown items) at once, equal to the per-request call to the last bit.

Per request the committee scores the whole catalog three times (liked, all and disliked item-kNN)
and ranks every item twice to turn scores into percentiles; here the kNN scores of a chunk of
requests come from one `score` call per member, a shown item's percentile is counted from the
sorted row (ties broken by index, as the stable double argsort does), and the rating features are
gathered from the similarity and genre matrices with one `bincount` per chunk, accumulating in
the order scipy's sparse products do. Only the blend's prediction stays per request (a BLAS
product over a different number of rows may round differently). A request whose history holds an
item twice, and committees with extra models, take the per-request path.

    p = BatchRelevance(committee).probabilities([(user_id, history, items), ...])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from coachrec.models import BaseRecommender
from coachrec.models.itemknn import ItemKNN
from coachrec.teacher.relevance import BASE_FEATURES, RelevanceCommittee

Request = tuple[str | None, Sequence[str], Sequence[str]]
UserLists = tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]


def percentile_of(row: np.ndarray, items: np.ndarray, ordered: np.ndarray | None = None) -> np.ndarray:
    """`_percentiles(row[None])[0, items]` without ranking the whole row: the stable rank of an
    entry is the count of smaller entries plus the count of equal ones at lower index
    (`ordered`: the row sorted, when several requests share it)."""
    ordered = np.sort(row) if ordered is None else ordered
    values = row[items]
    below = np.searchsorted(ordered, values, side="left")
    ties = np.searchsorted(ordered, values, side="right") - below > 1
    rank = below.astype(np.int64)
    for j in np.flatnonzero(ties):
        rank[j] += int(np.count_nonzero(row[: items[j]] == values[j]))
    out: np.ndarray = rank / max(len(row) - 1, 1)
    return out


class PaddedKNN:
    """`ItemKNN.score` of one history from the similarity rows laid out as a padded
    (items x neighbours) array: one gather and one bincount instead of a CSR walk. The padding
    adds +0.0 (every stored similarity is positive), so each item's sum is the same sequence of
    float64 additions, in history order, that `ItemKNN._score` makes."""

    def __init__(self, model: ItemKNN) -> None:
        sim = model.sim.tocsr()
        counts = np.diff(sim.indptr)
        width = max(int(counts.max()) if len(counts) else 0, 1)
        self.n_items = sim.shape[0]
        self.index = np.zeros((self.n_items, width), np.intp)
        self.value = np.zeros((self.n_items, width))
        slot = np.arange(len(sim.indices)) - np.repeat(sim.indptr[:-1], counts)
        rows = np.repeat(np.arange(self.n_items), counts)
        self.index[rows, slot] = sim.indices
        self.value[rows, slot] = sim.data
        self.recency = model.config.recency
        self.fallback = model.config.popularity_fallback
        self.popularity = model.popularity

    def score(self, history: np.ndarray) -> np.ndarray:
        w = np.power(self.recency, np.arange(len(history) - 1, -1, -1))
        weights = self.value[history]
        weights *= w[:, None]
        sums = np.bincount(self.index[history].ravel(), weights=weights.ravel(), minlength=self.n_items)
        out = sums.astype(np.float32)
        out += self.fallback * self.popularity
        return out


def _scorer(model: BaseRecommender) -> Callable[[np.ndarray], np.ndarray]:
    if type(model) is ItemKNN:
        return PaddedKNN(model).score
    return lambda history: model.score([history])[0]


class BatchRelevance:
    chunk = 128
    """Requests whose rating features are gathered together."""

    def __init__(self, committee: RelevanceCommittee) -> None:
        self.c = committee
        self._index = {str(rid): i for i, rid in enumerate(committee.items.ids.tolist())}
        self._users = {str(rid): i for i, rid in enumerate(committee.users.ids.tolist())}
        self.exact_batch = committee.features == BASE_FEATURES
        self._liked = _scorer(committee.liked_knn) if self.exact_batch else None
        self._all = _scorer(committee.all_knn) if self.exact_batch else None
        self._fitted = self._fit_state(committee)

    @staticmethod
    def _fit_state(committee: RelevanceCommittee) -> tuple[object, ...]:
        return (committee.items, committee.users, committee.all_knn, committee.liked_knn, committee._sim)

    def serves(self, committee: RelevanceCommittee) -> bool:
        """Whether this batch view is of `committee` as fitted now (a refit needs a new view)."""
        return self.c is committee and all(
            a is b for a, b in zip(self._fitted, self._fit_state(committee), strict=True)
        )

    def probabilities(self, requests: Sequence[Request]) -> list[np.ndarray]:
        """P(relevant) of each request's items (NaN for items the committee does not know).
        Requests of one user (or one anonymous history) share that user's kNN rows."""
        c = self.c
        prepared = []
        for user_id, history, items in requests:
            user = self._users.get(user_id) if user_id is not None else None
            idx = np.fromiter((self._index.get(str(i), -1) for i in items), np.int64, len(items))
            if user is None:
                hist = np.fromiter((self._index.get(str(h), -1) for h in history), np.int64, len(history))
                hist = hist[hist >= 0]
            else:
                hist = np.zeros(0, np.int64)
            prepared.append((user, hist, idx))
        probs = [np.full(len(idx), np.nan) for _, _, idx in prepared]
        groups: dict[object, list[int]] = {}
        for n, (user, hist, idx) in enumerate(prepared):
            if (idx >= 0).any():
                groups.setdefault(user if user is not None else hist.tobytes(), []).append(n)
        exact: list[tuple[int, UserLists]] = []
        for members in groups.values():
            user, hist, _ = prepared[members[0]]
            lists = c._user_lists(user, hist)
            if not self.exact_batch or len(np.unique(lists[0])) != len(lists[0]):
                for n in members:
                    known = prepared[n][2]
                    x = c.feature_matrix(user, hist, known[known >= 0])
                    probs[n][known >= 0] = c.probability_from_features(x)
                continue
            exact.extend((n, lists) for n in members)
        for lo in range(0, len(exact), self.chunk):
            part = exact[lo : lo + self.chunk]
            known_items = [prepared[n][2][prepared[n][2] >= 0] for n, _ in part]
            features = self._features([lists for _, lists in part], known_items)
            for (n, _), x in zip(part, features, strict=True):
                probs[n][prepared[n][2] >= 0] = c.probability_from_features(x)
        return probs

    def _features(self, lists: list[UserLists], items: list[np.ndarray]) -> list[np.ndarray]:
        c = self.c
        assert self._liked is not None and self._all is not None
        knn_rating, genre_affinity = self._rating_features([(lst[0], lst[4]) for lst in lists], items)
        zeros = np.zeros(len(c.items), np.float32)
        rows: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        out = []
        for b, (lst, idx) in enumerate(zip(lists, items, strict=True)):
            key = id(lst)  # requests of one user share one lists tuple
            if key not in rows:
                scored = (self._liked(lst[1]), self._all(lst[0]), self._all(lst[2]) if len(lst[2]) else zeros)
                rows[key] = [(r, np.sort(r)) for r in scored]
            out.append(
                np.column_stack(
                    [
                        *[percentile_of(r, idx, ordered) for r, ordered in rows[key]],
                        c.item_mean[idx],
                        np.full(len(idx), lst[3]),
                        c.popularity[idx],
                        knn_rating[b],
                        genre_affinity[b],
                    ]
                )
            )
        return out

    def _rating_features(
        self, rated: list[tuple[np.ndarray, np.ndarray]], items: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """`RelevanceCommittee._rating_features` per request. scipy's `sim[items][:, all_h] @ x`
        sums each row's stored entries in storage order, and `genres[all_h].T @ x` sums over the
        history in order; a bincount over entries laid out in that order adds them in the same
        sequence (float64, from zero)."""
        c = self.c
        n_items = len(c.items)
        sim = c._sim
        offsets = np.cumsum([0] + [len(i) for i in items])
        cand = np.concatenate(items)
        case_of_row = np.repeat(np.arange(len(items)), [len(i) for i in items])
        # entries of the candidate rows, in storage order, keyed by (request, column)
        starts, counts = sim.indptr[cand], np.diff(sim.indptr)[cand]
        entry = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        entry_row = np.repeat(np.arange(len(cand)), counts)
        key = case_of_row[entry_row] * n_items + sim.indices[entry]
        # each request's history: key -> position in all_h
        lengths = np.array([len(h) for h, _ in rated], dtype=np.int64)
        hist_key = np.repeat(np.arange(len(rated)), lengths) * n_items + (
            np.concatenate([h for h, _ in rated]) if len(rated) else np.zeros(0, np.int64)
        )
        centred = np.concatenate([x for _, x in rated]) if len(rated) else np.zeros(0)
        order = np.argsort(hist_key, kind="stable")
        sorted_keys = hist_key[order]
        at = np.searchsorted(sorted_keys, key)
        hit = (at < len(sorted_keys)) & (sorted_keys[np.minimum(at, len(sorted_keys) - 1)] == key)
        pos = order[at[hit]]
        data = sim.data[entry[hit]].astype(np.float64)
        rows = entry_row[hit]
        num = np.bincount(rows, weights=data * centred[pos], minlength=len(cand))
        den = np.bincount(rows, weights=np.abs(data) * 1.0, minlength=len(cand))
        knn_rating = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        if c._genres is None:
            genre = np.zeros(len(cand))
        else:
            genre = self._genre_affinity(rated, lengths, centred, cand, case_of_row)
        empty = lengths[case_of_row] == 0
        knn_rating[empty] = 0.0
        genre[empty] = 0.0
        split = offsets[1:-1]
        return np.split(knn_rating, split), np.split(genre, split)

    def _genre_affinity(
        self,
        rated: list[tuple[np.ndarray, np.ndarray]],
        lengths: np.ndarray,
        centred: np.ndarray,
        cand: np.ndarray,
        case_of_row: np.ndarray,
    ) -> np.ndarray:
        c = self.c
        g = c._genres
        assert g is not None
        n_genres = g.shape[1]
        hist = np.concatenate([h for h, _ in rated]) if len(rated) else np.zeros(0, np.int64)
        case_of_hist = np.repeat(np.arange(len(rated)), lengths)
        starts, counts = g.indptr[hist], np.diff(g.indptr)[hist]
        entry = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        owner = np.repeat(np.arange(len(hist)), counts)
        bins = case_of_hist[owner] * n_genres + g.indices[entry]
        vals = g.data[entry].astype(np.float64)
        size = len(rated) * n_genres
        num = np.bincount(bins, weights=vals * centred[owner], minlength=size)
        den = np.bincount(bins, weights=vals * 1.0, minlength=size)
        affinity = num / (den + c.config.genre_prior)
        # candidates: cand_genres @ affinity (storage order), over the number of genres
        starts, counts = g.indptr[cand], np.diff(g.indptr)[cand]
        entry = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        owner = np.repeat(np.arange(len(cand)), counts)
        cvals = g.data[entry]
        score = np.bincount(
            owner,
            weights=cvals.astype(np.float64) * affinity[case_of_row[owner] * n_genres + g.indices[entry]],
            minlength=len(cand),
        )
        total = np.bincount(owner, weights=cvals, minlength=len(cand)).astype(g.dtype)
        out: np.ndarray = score / np.maximum(total, 1)
        return out
