"""The batched relevance path gives the per-request committee's probabilities to the last bit,
and `Judge.judge` (batched) the same judgments as `judge_case` one case at a time."""

import numpy as np
import polars as pl
import pytest

from coachrec.models import create
from coachrec.serve import Stack
from coachrec.serve.pipeline import PipelineConfig
from coachrec.teacher import CatalogView, Judge, RelevanceCommittee, cases_from_store, load_rubric, relevance_batch
from coachrec.teacher.movielens import RatedPairs
from coachrec.teacher.relevance import _percentiles
from coachrec.teacher.relevance_batch import BatchRelevance, PaddedKNN, padded_rows, percentile_of
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore


@pytest.fixture(scope="module")
def committee(ml_small):
    committee = RelevanceCommittee().fit(ml_small)
    events = ml_small.events.filter(pl.col("user") < 40)
    labels = events["value"].to_numpy() >= 4
    pairs = RatedPairs(events["user"].to_numpy(), events["item"].to_numpy(), events["value"].to_numpy(), labels)
    return committee.fit_blend(committee.pair_features(pairs), pairs.labels)


@pytest.fixture(params=["numba", "numpy"])
def kernels(request, monkeypatch):
    """Each test below runs with the numba loops (when numba is installed) and the numpy kernels."""
    if request.param == "numba":
        pytest.importorskip("numba")
        assert relevance_batch.SUMS is not relevance_batch._sums_numpy
        assert relevance_batch.RATING_SUMS is not relevance_batch._rating_sums_numpy
    else:
        monkeypatch.setattr(PaddedKNN, "sums", staticmethod(relevance_batch._sums_numpy))
        monkeypatch.setattr(relevance_batch, "RATING_SUMS", relevance_batch._rating_sums_numpy)
    return request.param


def test_percentile_of_equals_the_stable_double_argsort():
    rng = np.random.default_rng(0)
    for row in (rng.random(500).astype(np.float32), rng.integers(0, 4, 500).astype(np.float32), np.zeros(7)):
        items = rng.choice(len(row), size=min(len(row), 40), replace=False)
        assert percentile_of(row, items).tobytes() == _percentiles(row[None])[0, items].tobytes()


def test_padded_rows_hold_each_csr_row_in_storage_order(committee):
    sim = committee.liked_knn.sim.tocsr()  # rows of many lengths: padding varies
    index, value, counts = padded_rows(sim)
    assert (counts < index.shape[1]).any()
    for row in (0, 1, int(np.argmin(counts)), int(np.argmax(counts)), len(counts) - 1):
        lo, hi = sim.indptr[row], sim.indptr[row + 1]
        assert counts[row] == hi - lo
        assert (index[row, : hi - lo] == sim.indices[lo:hi]).all() and (value[row, : hi - lo] == sim.data[lo:hi]).all()
        assert (index[row, hi - lo :] == 0).all() and (value[row, hi - lo :] == 0.0).all()


def test_padded_knn_scores_equal_itemknn(kernels, committee):
    for model in (committee.all_knn, committee.liked_knn):
        padded = PaddedKNN(model)
        # the last history is longer than 1,075 items: 0.5 ** age underflows to 0 for the oldest
        for history in (np.array([3, 17, 250, 9]), np.zeros(0, np.int64), np.arange(0, 900, 7), np.arange(0, 9000, 6)):
            assert padded.score(history).tobytes() == model.score([history])[0].tobytes()


def test_batch_probabilities_equal_the_per_request_committee(kernels, committee, ml_small):
    ids = ml_small.items.ids.tolist()
    users = ml_small.users.ids.tolist()
    rng = np.random.default_rng(1)
    requests = []
    for n in range(60):
        items = [ids[i] for i in rng.choice(len(ids), size=8, replace=False)]
        history = [ids[i] for i in rng.choice(len(ids), size=int(rng.integers(0, 30)), replace=False)]
        user = users[n % 25] if n % 3 else None  # known users (some twice), anonymous histories
        requests.append((user, history, items))
    lengths = np.diff(committee._indptr)
    disliked = np.bincount(
        ml_small.events["user"].to_numpy(), ml_small.events["value"].to_numpy() <= 2.5, minlength=len(users)
    )
    longest, no_dislikes = int(np.argmax(lengths)), int(np.flatnonzero(disliked == 0)[0])
    assert lengths[longest] > 1075  # the oldest items' weights underflow in the all-items kNN
    for user in (longest, no_dislikes, no_dislikes):  # a user with no disliked item: an all-zero row
        requests.append((users[user], [], [ids[i] for i in rng.choice(len(ids), size=10, replace=False)]))
    requests += [
        (None, [ids[5], ids[9], ids[5]], [ids[1], ids[2]]),  # an item twice in the history: per-request path
        (None, [], [ids[3], "no-such-item"]),  # an unknown item: NaN
        ("no-such-user", ["no-such-item"], ["no-such-item"]),
        (users[0], [], []),
    ]
    got = BatchRelevance(committee).probabilities(requests)
    for (user, history, items), p in zip(requests, got, strict=True):
        expected = committee.probability(user, history, items)
        assert p.tobytes() == expected.tobytes(), (user, items)
    assert np.isnan(got[-3][1]) and not np.isnan(got[-3][0])


def test_batched_judge_equals_judging_case_by_case(kernels, committee, ml_small):
    stack = Stack([committee.all_knn, create("pop").fit(ml_small)], ml_small.catalog, PipelineConfig(candidates=50))
    store = TraceStore(":memory:")
    pipeline = stack.pipeline(Tracer(store))
    requests = replay_requests(ml_small.users.ids[:30].tolist(), 40, seed=3)
    results = [pipeline.recommend(r) for r in requests]
    store.flush()
    cases = cases_from_store(store, [r.trace_id for r in results])
    rubric = load_rubric()
    names = [c.name for c in rubric.criteria if c.member in ("program", "recommender")]
    judge = Judge(rubric, CatalogView(ml_small.catalog), relevance=committee, criteria=names)
    judge.batch = 16  # several batches
    batched = judge.judge(cases)
    one_by_one = [j for case in cases for j in judge.judge_case(case)]
    assert len(batched) == len(one_by_one) > len(cases)
    assert sum(j.criterion == "relevance" for j in batched) >= 30
    for a, b in zip(batched, one_by_one, strict=True):
        assert a == b or (np.isnan(a.score) and np.isnan(b.score) and a.rationale == b.rationale)
