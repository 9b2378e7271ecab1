"""`coachrec bench rectools` without RecTools: the export the driver reads, the driver's own
evaluator (same ranks as coachrec's `evaluate`), and the timing summary."""

from __future__ import annotations

import importlib.util

import numpy as np
import polars as pl
import pytest

from coachrec.data import Dataset, leave_one_out
from coachrec.metrics import evaluate, named
from coachrec.models import create
from coachrec_bench import rectools_ref


def _driver():
    spec = importlib.util.spec_from_file_location("_rectools_driver", rectools_ref.DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(rng.zipf(1.5)) % 40}", t) for u in range(60) for t in range(int(rng.integers(3, 9)))]
    users, items, times = zip(*rows, strict=True)
    return Dataset.from_frame(pl.DataFrame({"user": users, "item": items, "time": times}), name="toy")


def test_driver_ranks_match_coachrec_evaluate(tmp_path):
    split = leave_one_out(_data())
    valid, test = split.task("valid"), split.task("test")
    rectools_ref.export(split, valid, test, tmp_path)
    arrays = np.load(tmp_path / "split.npz")
    indptr, items = split.train.sequences()
    assert np.array_equal(arrays["train_items"], items)
    assert np.array_equal(np.bincount(arrays["train_users"], minlength=len(indptr) - 1), np.diff(indptr))
    model = create("itemknn").fit(split.train)
    driver = _driver()
    for name, task in (("valid", valid), ("test", test)):
        ranks = driver.task_ranks(
            model.score, arrays[f"{name}_indptr"], arrays[f"{name}_items"], arrays[f"{name}_targets"], batch=7
        )
        ours = evaluate(model, task, named("loo-full"), ks=(10, 20))
        theirs = rectools_ref.rank_metrics(ranks)
        for k in ("recall@10", "ndcg@10", "ndcg@20", "mrr@10"):
            assert theirs[k].mean() == pytest.approx(ours.metrics[k])
        assert driver.ndcg10(ranks) == pytest.approx(ours.metrics["ndcg@10"])


def test_pessimistic_ties_and_timing_summary():
    driver = _driver()
    scores = np.array([[1.0, 1.0, 0.5], [0.2, 0.9, 0.9]])
    assert driver.pessimistic_ranks(scores, np.array([0, 2])).tolist() == [1, 1]
    log = [
        {"epoch": 1, "seconds": 10.0, "cpu_seconds": 4.0, "valid_ndcg@10": 0.1},
        {"epoch": 2, "seconds": 22.0, "cpu_seconds": 9.0, "valid_ndcg@10": 0.3},
        {"epoch": 3, "seconds": 33.0, "cpu_seconds": 13.0, "valid_ndcg@10": 0.2},
    ]
    t = rectools_ref.timing(log)
    assert t == {
        "seconds_per_epoch": 11.0,
        "cpu_seconds_per_epoch": 4.0,
        "epochs_run": 3,
        "best_epoch": 2,
        "time_to_best_s": 22.0,
        "valid_ndcg@10": 0.3,
    }
