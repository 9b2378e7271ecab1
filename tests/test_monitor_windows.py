"""Monitors over real served traces: windows read from the trace store (with feedback and
judgments), a planted input drift found, the judge's own drift told apart on a published
anchor set, and the report written with its plots."""

import time

import numpy as np
import pytest
from scipy import stats

from coachrec.models import create
from coachrec.monitor import (
    ItemStats,
    anchor_labels,
    attribute,
    compare,
    judge_drift,
    mcnemar_exact,
    read_window,
    rejudge_anchor,
    system_drift,
)
from coachrec.monitor.report import write_report
from coachrec.policy import Constraints, Range
from coachrec.review import ReviewStore
from coachrec.serve import Stack
from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, feedback_path_for
from coachrec.serve.pipeline import PipelineConfig, RecommendRequest
from coachrec.teacher import CatalogView, Judge, cases_from_store, load_rubric, record
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import Tracer, TraceStore

PROGRAM = [c.name for c in load_rubric().criteria if c.member == "program"]


@pytest.fixture(scope="module")
def served(ml_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("monitor")
    path = folder / "traces.duckdb"
    store = TraceStore(path)
    stack = Stack([create("pop").fit(ml_small)], ml_small.catalog, PipelineConfig(candidates=50))
    pipeline = stack.pipeline(Tracer(store))
    users = ml_small.users.ids[:200].tolist()
    before = [pipeline.recommend(r) for r in replay_requests(users, 150, context_rate=0.1, seed=1)]
    before_short = [pipeline.recommend(r) for r in _short(users[:15])]  # too few items allowed: incomplete
    store.flush()
    cut = time.time_ns()
    after = [pipeline.recommend(r) for r in replay_requests(users, 150, context_rate=0.7, seed=2)]
    after_short = [pipeline.recommend(r) for r in _short(users[15:30])]
    store.flush()
    log = FeedbackLog(feedback_path_for(path))
    log.append(
        [FeedbackEvent(r.request_id, r.items[0], "impression", position=0) for r in before + after]
        + [FeedbackEvent(r.request_id, r.items[0], "click", position=0) for r in before[::3]]
    )
    log.close()
    judge = Judge(load_rubric(), CatalogView(ml_small.catalog), criteria=PROGRAM)
    cases = cases_from_store(store, [r.trace_id for r in before + before_short + after + after_short])
    judgments = judge.judge(cases)
    record(store, judgments)
    yield {
        "store": store,
        "cut": cut,
        "before": before + before_short,
        "cases": cases,
        "judgments": judgments,
        "folder": folder,
    }
    store.close()


def _short(users):
    only = Constraints(require_genres=("Film-Noir",), ranges={"year": Range(2012, None)})
    return [RecommendRequest(user_id=u, k=10, constraints=only, request_id=f"short-{u}") for u in users]


def test_a_window_has_one_row_per_request_with_inputs_scores_outcomes_and_quality(served, ml_small):
    store = served["store"]
    ref = read_window(store, until=served["cut"], items=ItemStats.from_dataset(ml_small))
    assert ref.n == 165
    assert set(ref.frame["trace_id"].to_list()) == {r.trace_id for r in served["before"]}
    assert ref.frame["has_context"].mean() == pytest.approx(
        np.mean([r.request_id in _with_context(served) for r in served["before"]])
    )
    assert {"history_len", "uses_constraints", "popularity", "item_year", "new_items"} <= set(ref.columns("inputs"))
    assert "score.retrieve.pop" in ref.columns("scores") and "score.rank" in ref.columns("scores")
    assert ref.frame["engaged"].mean() == pytest.approx(50 / 150)  # every third replayed request clicked
    assert ref.frame["engaged@1"].sum() == 50 and ref.frame["skipped"].sum() == 100
    quality = ref.columns("quality")
    assert "fail.constraint_adherence" in quality
    assert ref.frame["popularity"].min() > 0


def _with_context(served):
    return {c.request_id for c in served["cases"] if c.context}


def test_a_planted_change_of_the_request_mix_is_found_and_named(served):
    store = served["store"]
    ref, cur = read_window(store, until=served["cut"]), read_window(store, since=served["cut"])
    report = compare(ref, cur)
    by_name = {c.column: c for c in report.columns}
    ctx = by_name["has_context"]
    assert ctx.test == "z" and ctx.drifted and ctx.p_value < 1e-6  # 10% -> 70% free-text requests
    assert by_name["engaged"].drifted  # clicks were planted on the reference only
    sys_drift = system_drift(ref, cur)
    assert sys_drift.drifted and "has_context" in sys_drift.drifted_columns
    halves = ref.take(np.arange(0, ref.n, 2)), ref.take(np.arange(1, ref.n, 2))
    assert not system_drift(*halves).drifted  # one stationary window split in two
    psi = compare(ref, cur, test="psi")
    assert {c.test for c in psi.columns} == {"psi"}


def test_the_anchor_set_tells_a_changed_judge_from_a_changed_system(served, ml_small):
    store, folder = served["store"], served["folder"]
    review = ReviewStore(folder / "review.duckdb")
    cases, judgments = (
        served["cases"][:60],
        [j for j in served["judgments"] if j.trace_id in {c.trace_id for c in served["cases"][:60]}],
    )
    review.enqueue(judgments, cases, review_below=0.0, audit_rate=1.0)
    for item in review.items():
        review.annotate(item.item_id, "accept", reviewer="test")
    review.publish("anchor")
    golden = review.golden_cases("anchor")
    review.close()
    rubric = load_rubric()
    pinned = anchor_labels(judgments)
    same = rejudge_anchor(Judge(rubric, CatalogView(ml_small.catalog), criteria=PROGRAM), store, golden)
    clean = judge_drift(golden, pinned, same)
    assert not clean.drifted and all(c.to_fail == c.to_pass == 0 for c in clean.criteria)
    # a silent judge change: the same criteria, a stricter threshold on slate completeness and grounding
    strict = rubric.model_copy(
        update={"criteria": tuple(c.model_copy(update={"pass_threshold": 1.0}) for c in rubric.criteria)}
    )
    changed = rejudge_anchor(Judge(strict, CatalogView(ml_small.catalog), criteria=PROGRAM), store, golden)
    flipped = judge_drift(golden, pinned, changed)
    for c in flipped.criteria:
        keys = [(g.trace_id, c.criterion) for g in golden if g.criterion == c.criterion]
        assert c.to_fail == sum(pinned[k] == "pass" and changed[k] == "fail" for k in keys)
        assert c.p_value == pytest.approx(mcnemar_exact(c.to_fail, c.to_pass))
    ref, cur = read_window(store, until=served["cut"]), read_window(store, since=served["cut"])
    assert attribute(ref, cur, clean).verdict == "system"
    assert attribute(ref, ref.take(np.arange(ref.n)), clean).verdict == "none"
    adherence = [k for k in pinned if k[1] == "constraint_adherence" and pinned[k] == "pass"][:15]
    planted = {**pinned, **dict.fromkeys(adherence, "fail")}  # 15 verdicts flipped on fixed inputs
    judge_only = judge_drift(golden, pinned, planted)
    assert judge_only.drifted
    assert attribute(ref, ref.take(np.arange(ref.n)), judge_only).verdict == "judge"
    assert attribute(ref, cur, judge_only).verdict == "both"


def test_mcnemar_is_the_exact_binomial_on_flipped_cases():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(12, 0) == pytest.approx(2 * 0.5**12)
    assert mcnemar_exact(7, 3) == pytest.approx(stats.binomtest(3, 10, 0.5).pvalue)


def test_the_report_shows_each_test_and_plots_what_drifted(served, tmp_path):
    store = served["store"]
    ref, cur = read_window(store, until=served["cut"]), read_window(store, since=served["cut"])
    md = write_report(tmp_path, ref, cur, title="planted request mix")
    text = md.read_text()
    assert "| has_context | z |" in text and "**yes**" in text
    assert (tmp_path / "has_context.png").stat().st_size > 1000
    assert (tmp_path / "report.html").read_text().count("<table") >= 2


def test_a_drift_alert_queues_examples_of_the_drifted_window_for_review(served, tmp_path):
    from coachrec.monitor.alerts import examples, file_alert

    store = served["store"]
    ref, cur = read_window(store, until=served["cut"]), read_window(store, since=served["cut"])
    report = compare(ref, cur)
    picked = examples(ref, cur, "has_context", 5)
    contexts = dict(zip(cur.frame["trace_id"].to_list(), cur.frame["has_context"].to_list(), strict=True))
    assert len(picked) == 5 and all(contexts[t] == 1 for t in picked)  # the value whose share rose
    review = ReviewStore(tmp_path / "review.duckdb")
    alert = file_alert(review, store, ref, cur, report, per_column=2)
    assert "has_context" in alert.columns and alert.queued > 0 and alert.unjudged == 0
    queued = review.items()
    assert {i.trace_id for i in queued} <= set(alert.traces) and all("audit" in i.queued_because for i in queued)
    review.close()


def test_the_label_free_estimate_reproduces_the_judged_rate_it_was_fitted_on(served):
    from coachrec.monitor.estimate import FailureModel

    ref = read_window(served["store"], until=served["cut"])
    rates = {c: ref.frame[c].drop_nulls().mean() for c in ref.columns("quality")}
    criterion = max(rates, key=lambda c: min(rates[c], 1 - rates[c]))  # the most balanced judged criterion
    assert 0 < rates[criterion] < 1
    model = FailureModel.fit(ref, criterion.removeprefix("fail."))
    # an unpenalised intercept makes the fitted probabilities sum to the failures
    assert model.estimate(ref.take(np.flatnonzero(ref.frame[criterion].is_not_null().to_numpy()))) == pytest.approx(
        rates[criterion], abs=1e-6
    )
    with pytest.raises(ValueError, match="no judgments of 'nonexistent'"):
        FailureModel.fit(ref, "nonexistent")
