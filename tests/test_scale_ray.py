"""Ray pipelines give the single-process results: batch judging through an actor pool and
full-ranking evaluation over user shards, on a local Ray runtime (2 CPUs, started once)."""

import sys

import numpy as np
import polars as pl
import pytest

from coachrec.data import leave_one_out
from coachrec.data.splits import EvalTask
from coachrec.metrics import evaluate, named
from coachrec.models import create
from coachrec.scale import RayMissingError, evaluate_with_ray, judge_with_ray, ray_runtime, require_ray
from coachrec.serve import Stack
from coachrec.serve.pipeline import PipelineConfig
from coachrec.teacher import CatalogView, Judge, RelevanceCommittee, cases_from_store, load_rubric
from coachrec.teacher.movielens import RatedPairs
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore


@pytest.fixture(scope="module")
def ray_local():
    ray = ray_runtime(num_cpus=2)  # Ray is in the dev extra run.sh installs: no skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def judged(ml_small):
    committee = RelevanceCommittee().fit(ml_small)
    events = ml_small.events.filter(pl.col("user") < 40)
    pairs = RatedPairs(
        events["user"].to_numpy(),
        events["item"].to_numpy(),
        events["value"].to_numpy(),
        events["value"].to_numpy() >= 4,
    )
    committee.fit_blend(committee.pair_features(pairs), pairs.labels)
    stack = Stack([committee.all_knn, create("pop").fit(ml_small)], ml_small.catalog, PipelineConfig(candidates=50))
    store = TraceStore(":memory:")
    pipeline = stack.pipeline(Tracer(store))
    results = [pipeline.recommend(r) for r in replay_requests(ml_small.users.ids[:40].tolist(), 24, seed=5)]
    store.flush()
    cases = cases_from_store(store, [r.trace_id for r in results])
    rubric = load_rubric()
    names = [c.name for c in rubric.criteria if c.member in ("program", "recommender")]
    catalog = ml_small.catalog

    def make_judge() -> Judge:
        return Judge(rubric, CatalogView(catalog), relevance=committee, criteria=names)

    return make_judge, cases, stack, committee


def test_ray_batch_judging_equals_one_process(ray_local, judged):
    make_judge, cases, _, _ = judged
    local = make_judge().judge(cases)
    distributed = judge_with_ray(make_judge, cases, workers=2, batch_size=5)
    assert len(distributed) == len(local) > len(cases)  # several criteria per case
    assert {j.criterion for j in local} >= {"relevance", "constraint_adherence"}
    for a, b in zip(local, distributed, strict=True):
        assert (a.trace_id, a.criterion, a.label, a.span_id, a.failure_modes) == (
            b.trace_id,
            b.criterion,
            b.label,
            b.span_id,
            b.failure_modes,
        )
        assert a.score == b.score or (np.isnan(a.score) and np.isnan(b.score))  # to the last digit
        assert a.details == b.details and a.rationale == b.rationale


def test_ray_full_ranking_evaluation_equals_one_process(ray_local, judged, ml_small):
    _, _, stack, _ = judged
    model = stack.models[0]  # item-kNN fitted on the whole data: leave-one-out targets of 200 users
    test = leave_one_out(ml_small).task("test")
    task = EvalTask(test.users[:200], test.histories[:200], test.targets[:200])
    protocol = named("loo-full")
    local = evaluate(model, task, protocol)
    distributed = evaluate_with_ray(model, task, protocol, workers=2, shard_size=50)
    assert distributed.metrics["ndcg@10"] > 0
    for name, values in distributed.per_user.items():
        np.testing.assert_array_equal(values, local.per_user[name])
        assert distributed.metrics[name] == local.metrics[name]
    with pytest.raises(ValueError, match="full protocol"):
        evaluate_with_ray(model, task, named("loo-sampled100"))


def test_a_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayMissingError, match=r"coachrec\[ray\]"):
        require_ray()


def test_ray_teacher_labelling_for_distillation_equals_one_process(ray_local, judged, ml_small):
    from coachrec.coach.distill import teacher_pairs
    from coachrec.ranking.features import ItemStats
    from coachrec.scale import teacher_pairs_with_ray

    _, cases, stack, committee = judged
    stats = ItemStats.from_data(ml_small, stack.catalog)
    x, y, w, n = teacher_pairs(stack, stats, committee, cases, 20)
    rx, ry, rw, rn = teacher_pairs_with_ray(stack, stats, committee, cases, 20, workers=2, shard_size=6)
    assert n == rn and len(y) > 100
    assert rx.dtype == x.dtype and ry.dtype == y.dtype
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)
    np.testing.assert_array_equal(rw, w)
