"""Item-kNN scores only the most recent items whose weight can still change a float32 score."""

import numpy as np

from coachrec.models import create


def _full_history_scores(model, histories):
    """The same scores with every history item counted (the depth cap switched off)."""
    model.__dict__["depth"] = None
    try:
        return model._score(histories)
    finally:
        model.__dict__.pop("depth")


def test_depth_cap_keeps_scores_and_ranking_on_long_histories(ml_small):
    model = create("itemknn").fit(ml_small)
    assert model.depth is not None and 30 < model.depth < 100
    indptr, items = ml_small.sequences()
    lengths = np.diff(indptr)
    longest = np.argsort(-lengths)[:40]  # hundreds to thousands of items each
    assert lengths[longest].min() > 5 * model.depth
    histories = [items[indptr[u] : indptr[u + 1]] for u in longest]
    capped, full = model._score(histories), _full_history_scores(model, histories)
    np.testing.assert_array_max_ulp(capped, full, maxulp=1)
    for a, b in zip(capped, full, strict=True):
        top = np.argsort(-b, kind="stable")[:100]
        assert np.array_equal(np.argsort(-a, kind="stable")[:100], top)


def test_no_cap_without_recency_decay_or_fallback(ml_small):
    assert create("itemknn", recency=1.0).fit(ml_small).depth is None
    assert create("itemknn", popularity_fallback=0.0).fit(ml_small).depth is None
    assert create("itemknn", recency=0.0).fit(ml_small).depth == 1
