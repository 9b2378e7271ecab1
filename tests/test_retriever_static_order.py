"""Popularity's retriever filters a precomputed order: the same items as partitioning per request."""

from types import SimpleNamespace

import numpy as np

from coachrec.models import create
from coachrec.serve import RecommenderRetriever
from coachrec.serve.retrievers import top_allowed


def test_popularity_order_equals_top_allowed_under_any_mask(ml_small):
    pop = create("pop").fit(ml_small)
    retriever = RecommenderRetriever(pop, n=50, fill=True)
    scores = np.asarray(pop.score([np.zeros(0, np.int64)])[0], dtype=np.float64)
    rng = np.random.default_rng(0)
    for share in (1.0, 0.5, 0.01, 0.0):
        allowed = rng.random(pop.n_items) < share
        ctx = SimpleNamespace(scores={}, allowed=allowed, history=np.zeros(0, np.int64))
        idx, got = retriever.retrieve(ctx)
        want_idx, want = top_allowed(scores, allowed, 50)
        assert np.array_equal(idx, want_idx) and np.array_equal(got, want)
        assert np.array_equal(retriever.score_items(ctx, idx), want)  # fill kept the scores
    pop.config.half_life = 30 * 24 * 3600.0  # a refit changes the order: the cache follows it
    pop.fit(ml_small)
    ctx = SimpleNamespace(scores={}, allowed=np.ones(pop.n_items, bool), history=np.zeros(0, np.int64))
    fresh = np.asarray(pop.score([np.zeros(0, np.int64)])[0], dtype=np.float64)
    assert np.array_equal(retriever.retrieve(ctx)[0], top_allowed(fresh, ctx.allowed, 50)[0])


def test_top_k_breaks_ties_at_the_cut_to_the_lower_index():
    """argpartition may keep any of the items tied at the k-th score; top_k keeps the lowest."""
    from coachrec.models import top_k

    rng = np.random.default_rng(0)
    for _ in range(300):
        x = rng.integers(0, 5, (3, 40)).astype(float)
        k = int(rng.integers(1, 40))
        want = np.array([np.lexsort((np.arange(40), -row))[:k] for row in x])
        assert np.array_equal(top_k(x, k), want)
        assert np.array_equal(top_k(x[0], k), want[0])
        assert np.array_equal(top_k(x.reshape(3, 1, 40), k)[:, 0], want)
