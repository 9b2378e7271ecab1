"""Ray pipelines give the single-process results: batch judging through an actor pool (library
and `coachrec judge --ray`), teacher labelling and full-ranking evaluation over shards, on one
local Ray runtime (2 CPUs) for the module. Each test starts one actor pool (their start-up is
most of the time), on small data."""

import sys
from collections import Counter

import numpy as np
import polars as pl
import pytest

from coachrec.data import leave_one_out
from coachrec.data.splits import EvalTask
from coachrec.metrics import evaluate, named
from coachrec.models import create
from coachrec.scale import RayMissingError, evaluate_with_ray, ray_runtime, require_ray
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
    """One actor pool: `judging_with(ray_executor(2))` sends `Judge.judge_each` (and so the coach
    loop's `Judge.judge`) through `judge_each_with_ray`, which `judge_with_ray` flattens."""
    from coachrec.scale import ray_executor
    from coachrec.teacher.judge import judging_with

    make_judge, cases, _, _ = judged
    judge = make_judge()
    local = judge.judge_each(cases)
    ticks: list[tuple[int, int]] = []
    with judging_with(ray_executor(2, batch_size=5)):
        grouped = judge.judge_each(cases, progress=lambda n, total: ticks.append((n, total)))
    assert ticks == [(len(cases), len(cases))] and len(grouped) == len(cases)
    flat_local, distributed = [j for g in local for j in g], [j for g in grouped for j in g]
    assert len(distributed) == len(flat_local) > len(cases)  # several criteria per case
    assert {j.criterion for j in flat_local} >= {"relevance", "constraint_adherence"}
    for a, b in zip(flat_local, distributed, strict=True):
        assert (a.trace_id, a.criterion, a.label, a.span_id, a.failure_modes) == (
            b.trace_id,
            b.criterion,
            b.label,
            b.span_id,
            b.failure_modes,
        )
        assert a.score == b.score or (np.isnan(a.score) and np.isnan(b.score))  # to the last digit
        assert a.details == b.details and a.rationale == b.rationale
    assert [len(g) for g in grouped] == [len(g) for g in local]
    assert judge.judge_each(cases[:3]) == local[:3]  # outside the block: in this process again


def test_judge_cli_with_ray_records_the_same_judgments(ray_local, ml_small, tmp_path):
    from typer.testing import CliRunner

    from coachrec.cli import app

    db = tmp_path / "traces.duckdb"
    store = TraceStore(db)
    pipeline = Stack([create("pop").fit(ml_small)], ml_small.catalog, PipelineConfig()).pipeline(Tracer(store))
    for r in replay_requests(ml_small.users.ids[:8].tolist(), 10, seed=2):
        pipeline.recommend(r)
    store.close()
    args = ["judge", "--sample", "all", "--db", str(db), "--llm", "none", "--no-relevance", "--rejudge"]
    runs = []
    for n, extra in enumerate(([], ["--ray", "1"])):  # one actor: the 2-actor pool is tested above
        out = CliRunner().invoke(app, [*args, "--review-db", str(tmp_path / f"review{n}.duckdb"), *extra])
        assert out.exit_code == 0, out.output
        assert "10 of 10 traces sampled" in out.output
        store = TraceStore(db, read_only=True)
        table = store.evaluations().select(["span_id", "name", "score", "label", "explanation"])
        store.close()
        runs.append(Counter(tuple(r.values()) for r in table.to_pylist()))
    assert sum(runs[0].values()) >= 60 and set(runs[0].values()) == {1}
    # the Ray run recorded each in-process evaluation once more: same span, criterion, score, label, rationale
    assert runs[1] == Counter(dict.fromkeys(runs[0], 2))


def test_ray_full_ranking_evaluation_equals_one_process(ray_local, judged, ml_small):
    _, _, stack, _ = judged
    model = stack.models[0]  # item-kNN fitted on the whole data: leave-one-out targets of 80 users
    test = leave_one_out(ml_small).task("test")
    task = EvalTask(test.users[:80], test.histories[:80], test.targets[:80])
    protocol = named("loo-full")
    local = evaluate(model, task, protocol)
    distributed = evaluate_with_ray(model, task, protocol, workers=2, shard_size=20)
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
