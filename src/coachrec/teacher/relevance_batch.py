"""The relevance committee over a batch of requests: `RelevanceCommittee.probability` for many
(user, history, shown items) at once, equal to the per-request call to the last bit.

Per request the committee scores the whole catalog three times (liked, all and disliked item-kNN)
and ranks every item twice to turn scores into percentiles; here the kNN rows of a user are
scored once for all of that user's requests in a chunk (a loop over the padded neighbour rows,
compiled by numba when it is installed, else one numpy gather and bincount; the same float64
additions in the same order either way), the user's candidates are ranked together by counting
from the sorted row (ties broken by index, as the stable double argsort does; an all-zero row
ranks by index), and the rating features are gathered from the similarity and genre matrices
per chunk, accumulating in the order scipy's sparse products do. Only the blend's prediction
stays per request (a BLAS product over a different number of rows may round differently). A
request whose history holds an item twice, and committees with extra models, take the
per-request path.

    p = BatchRelevance(committee).probabilities([(user_id, history, items), ...])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import sparse

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
    tied = np.flatnonzero(ties)
    for j, item, value in zip(tied.tolist(), items[tied].tolist(), values[tied], strict=True):
        rank[j] += int(np.count_nonzero(row[:item] == value))
    out: np.ndarray = rank / max(len(row) - 1, 1)
    return out


def padded_rows(sim: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR matrix's rows as (rows x widest row) arrays of column indices and float64 values,
    each row's stored entries first in storage order, then padding (column 0, value 0.0); and
    each row's count of stored entries."""
    counts = np.diff(sim.indptr)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    stored = np.arange(width) < counts[:, None]  # row-major True cells: CSR storage order
    index = np.zeros((sim.shape[0], width), np.intp)
    value = np.zeros((sim.shape[0], width))
    index[stored] = sim.indices
    value[stored] = sim.data
    return index, value, counts


def _sums_numpy(
    index: np.ndarray, value: np.ndarray, counts: np.ndarray, history: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Each item's sum of `w[p] * value[history[p], s]` over the history's padded rows: one
    gather and one bincount, in history order (the padding adds +0.0)."""
    weights = value[history]
    weights *= w[:, None]
    out: np.ndarray = np.bincount(index[history].ravel(), weights=weights.ravel(), minlength=index.shape[0])
    return out


def _compiled(loop: Callable[..., Any]) -> Callable[..., Any] | None:
    """`loop` compiled by numba (no fastmath: IEEE operations in the written order), or None
    without numba (it comes with the torch extra; the numpy kernels run then)."""
    try:
        from numba import njit
    except ImportError:
        return None
    compiled: Callable[..., Any] = njit(cache=True)(loop)
    return compiled


def _sums_loop(
    index: np.ndarray, value: np.ndarray, counts: np.ndarray, history: np.ndarray, w: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """`_sums_numpy` as one loop over the stored entries (no padding, no temporaries): the same
    products (rounded, then added: no fastmath, no fused multiply-add) in the same order."""
    out = np.zeros(index.shape[0])
    for p in range(history.shape[0]):
        h = history[p]
        wp = w[p]
        for s in range(counts[h]):
            out[index[h, s]] += value[h, s] * wp
    return out


SUMS: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] = (
    _compiled(_sums_loop) or _sums_numpy
)
"""The kNN sums kernel: compiled with numba when it is installed, else numpy's bincount."""


def _rating_sums_numpy(
    index: np.ndarray,
    value: np.ndarray,
    counts: np.ndarray,
    cand: np.ndarray,
    cand_lo: np.ndarray,
    hist: np.ndarray,
    hist_lo: np.ndarray,
    centred: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`knn_rating`'s numerator and denominator for request b's candidates
    `cand[cand_lo[b]:cand_lo[b + 1]]` over its history `hist[hist_lo[b]:hist_lo[b + 1]]` (mean-
    centred ratings `centred`): each candidate row's stored entries in storage order, those in
    the history summed from zero, as `sim[items][:, all_h] @ x` does."""
    columns = index[cand]
    pos = np.empty(columns.shape, np.int64)  # where an entry's column sits in `centred`, or -1
    at = np.full(index.shape[0], -1, np.int64)
    for b in range(len(cand_lo) - 1):
        h = hist[hist_lo[b] : hist_lo[b + 1]]
        at[h] = np.arange(hist_lo[b], hist_lo[b + 1])
        pos[cand_lo[b] : cand_lo[b + 1]] = at[columns[cand_lo[b] : cand_lo[b + 1]]]
        at[h] = -1
    hit = (pos >= 0) & (np.arange(index.shape[1]) < counts[cand][:, None])
    rows = np.nonzero(hit)[0]
    data = value[cand][hit]
    num = np.bincount(rows, weights=data * centred[pos[hit]], minlength=len(cand))
    den = np.bincount(rows, weights=np.abs(data) * 1.0, minlength=len(cand))
    return num, den


def _rating_sums_loop(
    index: np.ndarray,
    value: np.ndarray,
    counts: np.ndarray,
    cand: np.ndarray,
    cand_lo: np.ndarray,
    hist: np.ndarray,
    hist_lo: np.ndarray,
    centred: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """`_rating_sums_numpy` as one loop: the same products and sums in the same order."""
    num = np.zeros(cand.shape[0])
    den = np.zeros(cand.shape[0])
    at = np.full(index.shape[0], -1, np.int64)
    for b in range(cand_lo.shape[0] - 1):
        for p in range(hist_lo[b], hist_lo[b + 1]):
            at[hist[p]] = p
        for r in range(cand_lo[b], cand_lo[b + 1]):
            item = cand[r]
            for s in range(counts[item]):
                p = at[index[item, s]]
                if p >= 0:
                    d = value[item, s]
                    num[r] += d * centred[p]
                    den[r] += abs(d) * 1.0
        for p in range(hist_lo[b], hist_lo[b + 1]):
            at[hist[p]] = -1
    return num, den


RATING_SUMS: Callable[..., tuple[np.ndarray, np.ndarray]] = _compiled(_rating_sums_loop) or _rating_sums_numpy
"""The `knn_rating` sums kernel: compiled with numba when it is installed, else numpy's."""


class PaddedKNN:
    """`ItemKNN.score` of one history from the similarity rows laid out as a padded
    (items x neighbours) array: a loop over each history item's stored entries (numba), or one
    gather and one bincount (numpy; the padding adds +0.0, every stored similarity being
    positive), instead of a CSR walk; each item's sum is the same sequence of float64 additions,
    in history order, that `ItemKNN._score` makes."""

    sums = staticmethod(SUMS)

    def __init__(self, model: ItemKNN) -> None:
        self.sim = model.sim.tocsr()
        self.index, self.value, self.counts = padded_rows(self.sim)
        self.n_items = self.sim.shape[0]
        self.recency = model.config.recency
        self.fallback = model.config.popularity_fallback
        self.popularity = model.popularity
        self.score(np.zeros(0, np.int64))  # compile (or load) the kernel now, not in the first request

    def score(self, history: np.ndarray) -> np.ndarray:
        w = np.power(self.recency, np.arange(len(history) - 1, -1, -1))
        if len(w) and w[0] == 0.0:  # the oldest items' weights underflowed: they add +0.0
            keep = int(np.count_nonzero(w))  # w falls with age, so the zeros lead
            history, w = history[len(w) - keep :], w[len(w) - keep :]
        out = self.sums(self.index, self.value, self.counts, np.asarray(history, np.int64), w)
        out = out.astype(np.float32)
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
        owner = getattr(self._all, "__self__", None)  # the all-items PaddedKNN, if it is one
        self._sim_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None
        if isinstance(owner, PaddedKNN) and owner.sim is committee._sim:
            self._sim_rows = (owner.index, owner.value, owner.counts)
        else:
            self._sim_rows = padded_rows(committee._sim) if self.exact_batch else None
        self._fitted = self._fit_state(committee)
        if self._sim_rows is not None:  # compile (or load) the kernel now, not in the first request
            none, at = np.zeros(0, np.int64), np.zeros(1, np.int64)
            RATING_SUMS(*self._sim_rows, none, at, none, at, np.zeros(0))

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
        """Each request's feature matrix (`RelevanceCommittee.feature_matrix`), as row slices of
        one matrix for the chunk; the candidates of one user's requests are ranked together."""
        c = self.c
        assert self._liked is not None and self._all is not None
        knn_rating, genre_affinity = self._rating_features([(lst[0], lst[4]) for lst in lists], items)
        lengths = [len(idx) for idx in items]
        offsets = np.cumsum([0, *lengths])
        cand = np.concatenate(items)
        x = np.empty((len(cand), len(BASE_FEATURES)))
        by_user: dict[int, list[int]] = {}
        for b, lst in enumerate(lists):
            by_user.setdefault(id(lst), []).append(b)  # requests of one user share one lists tuple
        last = max(len(c.items) - 1, 1)
        for members in by_user.values():
            liked, everything, disliked = lists[members[0]][1], lists[members[0]][0], lists[members[0]][2]
            at = np.concatenate([np.arange(offsets[b], offsets[b + 1]) for b in members])
            mine = cand[at]
            x[at, 0] = percentile_of(self._liked(liked), mine)
            x[at, 1] = percentile_of(self._all(everything), mine)
            # no disliked item: an all-zero row, where the stable rank of an item is its index
            x[at, 2] = percentile_of(self._all(disliked), mine) if len(disliked) else mine / last
        x[:, 3] = c.item_mean[cand]
        x[:, 4] = np.repeat([lst[3] for lst in lists], lengths)
        x[:, 5] = c.popularity[cand]
        x[:, 6] = knn_rating
        x[:, 7] = genre_affinity
        return [x[offsets[b] : offsets[b + 1]] for b in range(len(items))]

    def _rating_features(
        self, rated: list[tuple[np.ndarray, np.ndarray]], items: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`RelevanceCommittee._rating_features` per request (concatenated). scipy's `sim[items][:, all_h] @ x`
        sums each row's stored entries in storage order, and `genres[all_h].T @ x` sums over the
        history in order; a bincount over entries laid out in that order adds them in the same
        sequence (float64, from zero)."""
        c = self.c
        assert self._sim_rows is not None
        index, value, counts = self._sim_rows
        cand = np.concatenate(items)
        case_of_row = np.repeat(np.arange(len(items)), [len(i) for i in items])
        lengths = np.array([len(h) for h, _ in rated], dtype=np.int64)
        hist = np.concatenate([h for h, _ in rated]) if len(rated) else np.zeros(0, np.int64)
        centred = np.concatenate([x for _, x in rated]) if len(rated) else np.zeros(0)
        cand_lo = np.cumsum([0, *[len(i) for i in items]])
        hist_lo = np.concatenate([[0], np.cumsum(lengths)])
        num, den = RATING_SUMS(index, value, counts, cand, cand_lo, hist.astype(np.int64, copy=False), hist_lo, centred)
        knn_rating = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        if c._genres is None:
            genre = np.zeros(len(cand))
        else:
            genre = self._genre_affinity(rated, lengths, centred, cand, case_of_row)
        empty = lengths[case_of_row] == 0
        knn_rating[empty] = 0.0
        genre[empty] = 0.0
        return knn_rating, genre

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
