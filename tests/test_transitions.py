"""Sequential rules learn which item follows which: on planted cyclic walks they predict the
next item, where order-blind item-kNN cannot tell the next item from the previous one."""

from __future__ import annotations

import numpy as np
import pytest

from coachrec.data import Dataset, Event, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create, load
from test_sasrec import planted


def test_rules_follow_the_order_item_knn_cannot_see():
    split = leave_one_out(planted())
    rules = create("sequential-rules").fit(split.train)
    knn = create("itemknn").fit(split.train)
    before, item, after = (split.train.items.index(f"i{k}") for k in (2, 3, 4))
    r, k = rules.score([[item]])[0], knn.score([[item]])[0]
    assert r[after] > 10 * r[before]  # i3 is always followed by i4, never by i2
    assert k[after] == pytest.approx(k[before], rel=0.2)  # co-occurrence is symmetric
    assert rules.recommend(history=["i3"], k=1).items == ["i4"]
    proto = named("loo-full")
    assert evaluate(rules, split.task("valid"), proto, ks=(1,)).metrics["recall@1"] > 0.95


def test_window_weights_later_items_by_one_over_the_gap(tmp_path):
    data = Dataset.from_events([Event("u", x, t) for t, x in enumerate("abc")], name="tiny")
    a, b, c = (data.items.index(x) for x in "abc")
    one = create("sequential-rules", window=1).fit(data)
    assert one.sim[a, b] == 1.0 and one.sim[a, c] == 0.0
    two = create("sequential-rules", window=2).fit(data)
    assert two.sim[a, c] == pytest.approx(0.5) and two.sim[c, a] == 0.0
    normed = create("sequential-rules", window=2, normalize=True).fit(data)
    assert normed.sim[a, b] == pytest.approx(1 / 1.5)
    again = load(two.save(tmp_path / "sr"))
    assert np.allclose(again.score([[a]]), two.score([[a]]))
    with pytest.raises(ValueError, match="window"):
        create("sequential-rules", window=0).fit(data)
