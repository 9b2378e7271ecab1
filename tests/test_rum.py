"""RUM (item- and feature-level memory) learns a planted pattern; the item-level attention
explains a recommendation by its planted cause."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coachrec.data import Dataset, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load

torch = pytest.importorskip("torch")


def cycle_data(n_users: int = 160, n_items: int = 30, length: int = 10, seed: int = 0) -> Dataset:
    """Item i is always followed by item (i + 1) % n_items; popularity is flat."""
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{(s + t) % n_items}", t)
        for u, s in enumerate(rng.integers(n_items, size=n_users))
        for t in range(length)
    ]
    return Dataset.from_frame(pl.DataFrame(rows, schema=["user", "item", "time"], orient="row"), name="cycle")


def cause_data(n_users: int = 300, n_noise: int = 30, seed: int = 0) -> Dataset:
    """Random noise items, then A somewhere, then B always right after two more noise items:
    B is caused by A, which is not the most recent item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        seq = (
            [f"n{j}" for j in rng.integers(n_noise, size=4)]
            + ["A"]
            + [f"n{j}" for j in rng.integers(n_noise, size=2)]
            + ["B"]
        )
        seq += [f"n{j}" for j in rng.integers(n_noise, size=2)]
        rows += [(f"u{u}", it, t) for t, it in enumerate(seq)]
    return Dataset.from_frame(pl.DataFrame(rows, schema=["user", "item", "time"], orient="row"), name="cause")


SMALL = {"epochs": 12, "dim": 32, "max_len": 10, "lr": 5e-3, "dropout": 0.0, "n_negatives": 20, "seed": 0}


@pytest.fixture(scope="module")
def split():
    return leave_one_out(cycle_data())


@pytest.fixture(scope="module", params=["rum-item", "rum-feature"])
def fitted(request, split):
    return create(request.param, **SMALL).fit(split.train)


def test_learns_planted_order_far_above_popularity(split, fitted):
    proto = named("loo-full")
    ours = evaluate(fitted, split, proto).metrics["ndcg@10"]
    pop = evaluate(create("pop").fit(split.train), split, proto).metrics["ndcg@10"]
    assert ours > 0.6 and ours > 3 * pop, (fitted.name, ours, pop)


def test_save_load_identical_scores(tmp_path, fitted):
    hist = [fitted.user_history(u) for u in range(4)] + [np.zeros(0, dtype=np.int64)]
    again = load(fitted.save(tmp_path / fitted.name))
    assert type(again) is type(fitted)
    np.testing.assert_array_equal(fitted.score(hist), again.score(hist))


def test_anonymous_history(fitted):
    rec = fitted.recommend(history=["i7", "i8", "i9"], k=3)
    assert "i10" in rec.items
    assert len(fitted.recommend(history=[], k=4)) == 4


def test_item_memory_explains_by_the_planted_cause():
    m = create("rum-item", **(SMALL | {"epochs": 15})).fit(cause_data())
    why = m.explain(["n1", "n2", "A", "n3", "n4"], "B")
    assert why[0][0] == "A", why
    assert abs(sum(w for _, w in why) - 1.0) < 1e-5


def test_feature_memory_has_no_item_explanation(split):
    m = create("rum-feature", **(SMALL | {"epochs": 1})).fit(split.train)
    with pytest.raises(ValueError, match="item-level"):
        m.explain(["i1"], "i2")
