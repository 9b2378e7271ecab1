"""Metrics against brute-force definitions on random data."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coachrec.metrics import (
    beyond,
    cohen_kappa,
    compare,
    metrics_from_ranks,
    multi_target_ranks,
    paired_bootstrap,
    permutation_test,
    target_ranks,
)


def brute_rank(row: np.ndarray, t: int) -> int:
    """Pessimistic rank: items scored higher, plus other items scored equal."""
    return sum(1 for j, s in enumerate(row) if j != t and s >= row[t])


scores_st = st.integers(1, 6).flatmap(
    lambda n: st.integers(2, 12).flatmap(
        lambda m: st.tuples(
            st.lists(st.lists(st.integers(0, 4), min_size=m, max_size=m), min_size=n, max_size=n),
            st.lists(st.integers(0, m - 1), min_size=n, max_size=n),
        )
    )
)


@given(scores_st)
@settings(max_examples=200, deadline=None)
def test_single_target_rank_is_pessimistic(data):
    rows, targets = data
    s = np.array(rows, dtype=np.float32)
    t = np.array(targets)
    got = target_ranks(s, t)
    assert got.tolist() == [brute_rank(s[i], t[i]) for i in range(len(t))]


@given(scores_st, st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_metrics_match_definitions(data, k):
    rows, targets = data
    s = np.array(rows, dtype=np.float32)
    t = np.array(targets)
    ranks = target_ranks(s, t)
    m = metrics_from_ranks(ranks, np.arange(len(t)), len(t), np.ones(len(t), dtype=np.int64), (k,))
    for i in range(len(t)):
        r = brute_rank(s[i], t[i])
        assert m[f"hr@{k}"][i] == (r < k)
        assert m[f"recall@{k}"][i] == (r < k)
        assert m[f"precision@{k}"][i] == pytest.approx((r < k) / k)
        assert m[f"ndcg@{k}"][i] == pytest.approx(1 / math.log2(r + 2) if r < k else 0.0)
        assert m[f"mrr@{k}"][i] == pytest.approx(1 / (r + 1) if r < k else 0.0)


@given(
    st.integers(2, 15).flatmap(
        lambda m: st.tuples(
            st.lists(st.lists(st.floats(-5, 5, width=32), min_size=m, max_size=m), min_size=1, max_size=5),
            st.just(m),
        )
    ),
    st.integers(1, 6),
    st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
def test_multi_target_ranks_and_ndcg(data, k, rnd):
    rows, m = data
    s = np.array(rows, dtype=np.float32)
    s[s < -4] = -np.inf  # excluded items
    pairs = [(i, j) for i in range(len(s)) for j in rnd.sample(range(m), rnd.randint(1, min(3, m)))]
    r = np.array([p[0] for p in pairs])
    c = np.array([p[1] for p in pairs])
    ranks = multi_target_ranks(s, r, c)
    assert ranks.tolist() == [brute_rank(s[i], j) for i, j in pairs]
    n_t = np.bincount(r, minlength=len(s))
    met = metrics_from_ranks(ranks, r, len(s), n_t, (k,))
    for i in range(len(s)):
        mine = [brute_rank(s[i], j) for (u, j) in pairs if u == i]
        dcg = sum(1 / math.log2(x + 2) for x in mine if x < k)
        idcg = sum(1 / math.log2(x + 2) for x in range(min(len(mine), k)))
        assert met[f"ndcg@{k}"][i] == pytest.approx(dcg / idcg)
        assert met[f"recall@{k}"][i] == pytest.approx(sum(x < k for x in mine) / len(mine))


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[0.1, np.nan]]), np.array([0]))


def test_all_equal_scores_rank_last():
    s = np.zeros((1, 100), dtype=np.float32)
    assert target_ranks(s, np.array([3]))[0] == 99


@given(st.lists(st.integers(0, 2), min_size=1, max_size=60), st.lists(st.integers(0, 2), min_size=1, max_size=60))
def test_kappa_matches_formula(a, b):
    n = min(len(a), len(b))
    a, b = np.array(a[:n]), np.array(b[:n])
    po = float(np.mean(a == b))
    pe = sum(np.mean(a == c) * np.mean(b == c) for c in range(3))
    expected = 1.0 if pe == 1 and po == 1 else (0.0 if pe == 1 else (po - pe) / (1 - pe))
    assert cohen_kappa(a, b) == pytest.approx(expected)


def test_kappa_known_value():
    # classic example: 50 items, agreement 0.7, chance 0.5 -> kappa 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_bootstrap_and_permutation():
    rng = np.random.default_rng(1)
    a = rng.random(500)
    better = a + 0.1 + rng.normal(0, 0.05, 500)
    c = compare(a, better)
    assert c.ci_low > 0.08 and c.ci_high < 0.12 and c.p_value < 0.01 and c.significant
    same = a + rng.normal(0, 0.05, 500)
    lo, hi = paired_bootstrap(a, same)
    assert lo < 0.01 and hi > -0.01
    assert permutation_test(a, a + rng.normal(0, 1e-9, 500)) > 0.01
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:10])


def test_beyond_accuracy():
    lists = np.array([[0, 1], [0, 2]])
    assert beyond.coverage(lists, 4) == 0.75
    pop = np.array([10, 5, 1, 0])
    assert beyond.average_popularity(lists, pop) == pytest.approx(6.5)
    assert beyond.novelty(lists, pop, 10) == pytest.approx(np.mean(-np.log2(np.array([10, 5, 10, 1]) / 10)))
    feats = np.eye(3)
    assert beyond.intra_list_diversity(lists, feats) == pytest.approx(1.0)
    assert beyond.intra_list_diversity(np.array([[0, 0]]), feats) == pytest.approx(0.0)
    assert beyond.gini(np.array([[0], [0]]), 2) == pytest.approx(0.5)


def test_evaluate_reports_progress_through_a_callback_and_draws_nothing(capsys):
    from coachrec.data import EvalTask
    from coachrec.metrics import evaluate, named

    class Const:
        n_items = 6

        def score(self, histories):
            return np.tile(np.arange(6, dtype=np.float32), (len(histories), 1))

    task = EvalTask(np.arange(5), [np.array([0])] * 5, [np.array([5])] * 5)
    calls = []
    res = evaluate(
        Const(),
        task,
        named("loo-full"),
        ks=(1,),
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)] and res.metrics["hr@1"] == 1.0
    evaluate(Const(), task, named("loo-full"), ks=(1,))  # silent by default
    assert capsys.readouterr() == ("", "")
    with pytest.raises(TypeError, match="progress must be a callable"):
        evaluate(Const(), task, named("loo-full"), progress=True)
    import inspect

    import coachrec.metrics.evaluation as ev

    assert "rich" not in inspect.getsource(ev)  # library code does not draw
