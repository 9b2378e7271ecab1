"""Position bias in the coach: the signal, PAL's pCTR as a stack's ranker, the off-policy gate row."""

import numpy as np
import pytest

pytest.importorskip("torch")

from coachrec.coach.position_remedy import (
    fit_pal,
    ope_row,
    pal_student,
    pool_features,
    position_bias,
    served_scores,
)
from coachrec.coach.remedies import REMEDIES, remedies_for
from coachrec.policy.ope import SlateLog
from coachrec.ranking import ItemStats
from coachrec.ranking.pal import PAL, PALConfig
from coachrec.serve import PipelineConfig, Service, Stack
from coachrec.serve.impressions import read_slates
from coachrec.sim import PlantedTruth, PositionBased, Simulator, examination


def slates(exam: np.ndarray, n: int = 3000, seed: int = 0) -> tuple[SlateLog, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = len(exam)
    rel = rng.random((n, k)) * 0.5
    reward = (rng.random((n, k)) < rel * exam[None, :]).astype(float)
    ids = np.array([f"r{i}" for i in range(n)], dtype=object)
    users = np.array([f"u{i % 150}" for i in range(n)], dtype=object)
    log = SlateLog(ids, users, np.tile(np.arange(k), (n, 1)), np.full((n, k), 0.5), reward)
    return log, rel


def test_the_signal_flags_clicks_that_fall_faster_than_relevance() -> None:
    biased = position_bias(*slates(examination("ultra", 1.0, 10)))
    assert biased.flagged and "position, not preference" in biased.reason
    assert biased.relative_examination[0] == 1.0 and biased.relative_examination[-1] < 0.3
    fair = position_bias(*slates(np.full(10, 0.7), seed=1))
    assert not fair.flagged and fair.ci_low < 1.0 < fair.ci_high
    log, rel = slates(np.ones(4), n=20)
    with pytest.raises(ValueError, match="slate shape"):
        position_bias(log, rel[:, :2])


def test_pal_logistic_pctr_is_the_same_probability_as_a_student() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    click = (rng.random(2000) < 1 / (1 + np.exp(-x[:, 0]))).astype(float)
    model = PAL(4, 5, PALConfig()).fit(x, rng.integers(0, 5, 2000), click)
    student = pal_student(model, ("a", "b", "c", "d"), strength=3.0)
    assert np.allclose(student.probability(x[:50]), model.score(x[:50]), atol=1e-6)
    with pytest.raises(ValueError, match="logistic"):
        pal_student(PAL(4, 5, PALConfig(hidden=8)), ("a", "b", "c", "d"), 1.0)


@pytest.fixture(scope="module")
def logged(ml_small, tmp_path_factory):
    truth, train = PlantedTruth.holdout(ml_small)
    champion = Stack.fit(train, models=("pop", "itemknn"), learn_blend=False,
                         config=PipelineConfig(candidates=15, diversity=1.0, epsilon=0.3))  # fmt: skip
    service = Service.open(champion, db=tmp_path_factory.mktemp("pos") / "traces.duckdb")
    Simulator(service, truth, PositionBased(examination("ultra", 1.5, 10)), seed=1).run(300, k=10)
    log = read_slates(service.store, service.feedback)
    service.close()
    return champion, ItemStats.from_data(train, champion.catalog), log


def test_the_pal_candidate_serves_what_the_off_policy_row_evaluates(logged) -> None:
    champion, stats, log = logged
    model, _ = fit_pal(champion, stats, log)
    assert model.prob_seen()[0] == 1.0 and model.prob_seen()[-1] < 0.9  # position bias learned from the clicks
    candidate = champion.with_ranker(pal_student(model, champion.feature_names, 1e4), stats)
    feats, _, blend = pool_features(champion, stats, log)
    scores = served_scores(candidate, feats, blend, log)
    # the candidate's own rank stage scores the logged pool as the estimator assumes
    i = 0
    model_0 = champion.models[0]
    history = model_0.user_history(model_0.users.index(str(log.user_id[i])))
    ranked = candidate.candidates([history], through="rank")[0]
    pool = log.pool_items[i][log.pool[i]]
    assert sorted(model_0.items.ids[ranked.idx].astype(str)) == sorted(pool)
    mine = scores[i][log.pool[i]]
    assert [pool[j] for j in np.argsort(-mine, kind="stable")] == list(model_0.items.ids[ranked.idx].astype(str))
    assert np.allclose(np.sort(mine)[::-1], ranked.score, rtol=1e-5)
    row = ope_row(log, champion, candidate, stats, min_ess=1e6, n_boot=100)
    assert row.section == "off-policy (logged traffic)" and row.passed is False and "refused, ESS" in row.metric
    decided = ope_row(log, champion, candidate, stats, min_ess=0.0, n_boot=100)
    assert "refused" not in decided.metric and decided.ci_low <= decided.delta <= decided.ci_high
    assert decided.champion == pytest.approx(log.reward.sum(axis=1).mean()) and decided.discordant > 0
    better = ope_row(log, champion, candidate, stats, min_ess=0.0, n_boot=100, role="independent")
    assert better.role == "independent" and better.passed == (better.ci_low > 0)
    assert decided.passed == (decided.ci_low > -0.02 * decided.champion)


def test_the_remedy_is_registered_and_says_what_it_needs() -> None:
    from types import SimpleNamespace

    from coachrec.coach.remedies import RemedyError

    assert [r.name for r in remedies_for("position_bias")] == ["pal-ranker"]
    with pytest.raises(RemedyError, match="logged impressions with positions and clicks"):
        REMEDIES["pal-ranker"].build(SimpleNamespace(logged=None))  # type: ignore[arg-type]


def test_the_remedy_builds_a_pal_ranked_candidate_from_the_logged_clicks(logged, ml_small) -> None:
    from types import SimpleNamespace

    from coachrec.data.splits import leave_one_out

    champion, _, log = logged
    split = leave_one_out(PlantedTruth.holdout(ml_small)[1])
    users = [str(u) for u in champion.models[0].users.ids[:60]]
    ctx = SimpleNamespace(champion=champion, split=split, selection_users=users, seed=0, logged=log)
    cand = REMEDIES["pal-ranker"].build(ctx)  # type: ignore[arg-type]
    student = cand.stack.ranker.student
    assert student.fit_info["from"] == "pal" and student.strength in (1.0, 10.0, 100.0, 1e4)
    assert set(cand.details["selection_ndcg_by_strength"]) == {1.0, 10.0, 100.0, 1e4}
    assert cand.selection["valid_ndcg@10"] == max(cand.details["selection_ndcg_by_strength"].values())
    assert "ProbSeen relative to slot 1" in cand.note and cand.details["probseen"][0] == 1.0
