"""The sequential blend: weights chosen on validation favour the part that predicts, the blend
is at least as good as that part on validation, and it round-trips through save/load."""

from __future__ import annotations

import numpy as np
import pytest

from coachrec.data import leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load
from coachrec.models.blend import SequentialBlend, choose_weights, simplex_grid

pytest.importorskip("torch")
from test_sasrec import planted  # the planted cyclic walks SASRec learns


@pytest.fixture(scope="module")
def parts():
    split = leave_one_out(planted())
    seq = create("sasrec", epochs=6, dim=32, max_len=10, dropout=0.1, lr=5e-3, seed=1).fit(split.train)
    pop = create("pop").fit(split.train)
    return split, seq, pop


def test_simplex_grid_covers_the_simplex():
    grid = simplex_grid(3, 10)
    assert len(grid) == 66
    assert np.allclose(grid.sum(axis=1), 1.0)
    assert grid.min() >= 0
    with pytest.raises(ValueError):
        simplex_grid(0, 10)


def test_weights_chosen_on_validation_favour_the_predictive_part(parts):
    split, seq, pop = parts
    valid = split.task("valid")
    weights, table = choose_weights([seq, pop], valid, steps=4)
    assert len(table) == 5
    assert weights[0] > weights[1]
    blend = SequentialBlend.from_parts([seq, pop], split.train, valid=valid, steps=4)
    assert np.allclose(blend.weights, weights)
    proto = named("loo-full")
    best_part = max(evaluate(m, valid, proto).metrics["ndcg@10"] for m in (seq, pop))
    got = evaluate(blend, valid, proto).metrics["ndcg@10"]
    assert got >= best_part - 1e-9
    assert abs(got - max(r["valid_ndcg@10"] for r in table)) < 1e-4


def test_given_weights_and_save_load_round_trip(parts, tmp_path):
    split, seq, pop = parts
    blend = SequentialBlend.from_parts([seq, pop], split.train, weights=[3, 1])
    assert np.allclose(blend.weights, [0.75, 0.25])
    hist = split.task("test").histories[:5]
    again = load(blend.save(tmp_path / "blend"))
    assert np.allclose(again.score(hist), blend.score(hist), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        SequentialBlend.from_parts([seq, pop], split.train, weights=[1.0])
    other = create("pop").fit(planted(n_items=31))  # another catalogue: indices mean other items
    with pytest.raises(ValueError, match="same item map"):
        SequentialBlend.from_parts([seq, other], split.train)


def test_parts_loaded_from_disk_blend_like_the_fitted_ones(parts, tmp_path):
    split, seq, pop = parts
    again = load(seq.save(tmp_path / "seq"))
    assert again.items is not split.train.items  # a saved copy of the item map, not the same object
    hist = split.task("test").histories[:5]
    fitted = SequentialBlend.from_parts([seq, pop], split.train, weights=[2, 1])
    loaded = SequentialBlend.from_parts([again, pop], split.train, weights=[2, 1])
    assert np.allclose(loaded.score(hist), fitted.score(hist), atol=1e-5)


def test_registered_blend_fits_its_parts_and_chooses_weights_on_validation():
    split = leave_one_out(planted())
    blend = create("blend", parts=["pop", "itemknn"], steps=4).fit(split.train, valid=split.task("valid"))
    assert [p.name for p in blend.parts] == ["pop", "itemknn"]
    assert len(blend.weight_table) == 5
    assert np.isclose(blend.weights.sum(), 1.0)
    with pytest.raises(ValueError, match="part_configs"):
        create("blend", parts=["pop", "itemknn"], part_configs=[{}]).fit(split.train)


def test_rank_norm_gives_reciprocal_ranks_in_row_order():
    from coachrec.models.blend import normalise, rank_norm

    x = np.array([[0.1, 3.0, -2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype=np.float32)
    r = rank_norm(x)
    assert np.allclose(r[0], 1.0 / (60.0 + np.array([2, 0, 3, 1])))
    assert np.allclose(r[1], 1.0 / (60.0 + np.array([1, 2, 3, 0])))  # tie: lower index first
    cut = rank_norm(x, depth=2)  # ranks 2 and below share the value of rank 2
    assert np.allclose(cut[0], 1.0 / (60.0 + np.array([2, 0, 2, 1])))
    with pytest.raises(ValueError, match="norm"):
        normalise(x, "softmax")


@pytest.mark.parametrize("norm", ["z", "rank"])
def test_fine_search_picks_validation_weights_scored_exactly(parts, norm):
    from coachrec.models.blend import search_weights

    split, seq, pop = parts
    valid = split.task("valid")
    knn = create("itemknn").fit(split.train)
    weights, table = search_weights([seq, pop, knn], valid, norm=norm, candidates=5, max_grid=20, finalists=3)
    assert np.isclose(weights.sum(), 1.0) and weights.min() >= 0
    assert 1 <= len(table) <= 3
    # the returned weights are the best finalist, and its exact NDCG is the evaluator's
    best = max(table, key=lambda r: r["valid_ndcg@10"])
    assert np.allclose(best["weights"], weights, atol=1e-4)
    blend = SequentialBlend.from_parts([seq, pop, knn], split.train, weights=list(weights))
    blend.config.norm = norm
    got = evaluate(blend, valid, named("loo-full")).metrics["ndcg@10"]
    assert abs(got - best["valid_ndcg@10"]) < 1e-4
    # no worse on validation than the best single part, scored the same way
    singles = [evaluate(m, valid, named("loo-full")).metrics["ndcg@10"] for m in (seq, pop, knn)]
    assert best["valid_ndcg@10"] >= max(singles) - 1e-4
    # with every item a candidate the pooled estimate is exact
    _, full = search_weights([seq, pop], valid, norm=norm, candidates=10_000, max_grid=10, finalists=2)
    for row in full:
        assert abs(row["pooled_ndcg@10"] - row["valid_ndcg@10"]) < 1e-4
        assert row["pooled_unsure"] == 0.0


def test_fine_blend_from_parts_round_trips_its_norm(parts, tmp_path):
    split, seq, pop = parts
    blend = SequentialBlend.from_parts(
        [seq, pop], split.train, valid=split.task("valid"), norm="rank", search="fine", candidates=5
    )
    assert blend.config.norm == "rank" and blend.weight_table
    hist = split.task("test").histories[:5]
    again = load(blend.save(tmp_path / "fine"))
    assert again.config.norm == "rank"
    assert np.allclose(again.score(hist), blend.score(hist), atol=1e-6)
    with pytest.raises(ValueError, match="search"):
        SequentialBlend.from_parts([seq, pop], split.train, valid=split.task("valid"), search="random")
