"""The click simulator: planted truth from held-out ratings, click models, and the real serving
path writing impressions, clicks and propensities that `read_slates` reads back."""

import math

import numpy as np
import pytest

from coachrec.policy import EpsilonGreedy, PlackettLuce
from coachrec.policy.ope import evaluate, target_probabilities
from coachrec.serve import PipelineConfig, Service, Stack
from coachrec.serve.impressions import read_slates
from coachrec.sim import Cascade, PlantedTruth, PositionBased, Simulator, TrustBias, examination, set_explorer
from coachrec.sim.truth import grade_of_rating


def test_grades_come_from_held_out_ratings(ml_small) -> None:
    assert grade_of_rating(np.array([5.0, 4.5, 4.0, 3.5, 3.0, 0.5])).tolist() == [4, 3, 2, 1, 0, 0]
    truth, train = PlantedTruth.holdout(ml_small, holdout=0.3)
    assert len(train) < len(ml_small)
    ev = ml_small.events
    user = int(truth.users[0])
    rows = ev.filter(ev["user"] == user)
    held = rows.tail(math.ceil(rows.height * 0.3))
    kept = train.events.filter(train.events["user"] == user)
    assert kept.height + held.height == rows.height  # the truth is exactly what the stack does not see
    items = held["item"].to_numpy()
    assert truth.grade(np.full(len(items), user), items).tolist() == grade_of_rating(held["value"].to_numpy()).tolist()
    unseen = np.setdiff1d(np.arange(ml_small.n_items), items)[:50]
    assert (truth.grade(np.full(50, user), unseen) == 0).all()
    assert np.allclose(truth.preference(np.array([user]), unseen[:1]), truth.noise)


def test_click_models_sample_what_they_expect() -> None:
    assert np.allclose(examination("ultra", 1.0, 3), [0.68, 0.61, 0.48])
    assert np.allclose(examination("inverse", 2.0, 3), [1, 1 / 4, 1 / 9])
    assert np.allclose(examination("ultra", 0.0, 12), 1.0)
    with pytest.raises(ValueError, match="curve"):
        examination("linear", 1.0, 3)  # type: ignore[arg-type]
    pref = np.tile([0.8, 0.3, 0.5, 0.1], (40000, 1))
    rng = np.random.default_rng(0)
    for model in (PositionBased(examination("ultra", 1.0, 4)), Cascade(), Cascade(stop=0.5),
                  TrustBias(examination("inverse", 1.0, 4))):  # fmt: skip
        expected = model.click_probability(pref[:1])[0]
        assert np.abs(model.sample(pref, rng).mean(axis=0) - expected).max() < 0.01, model.name
    assert np.allclose(
        Cascade().click_probability(pref[:1])[0], [0.8, 0.2 * 0.3, 0.2 * 0.7 * 0.5, 0.2 * 0.7 * 0.5 * 0.1]
    )


@pytest.fixture(scope="module")
def served(ml_small, tmp_path_factory):
    truth, train = PlantedTruth.holdout(ml_small)
    stack = Stack.fit(train, models=("pop",), config=PipelineConfig(candidates=20, diversity=1.0, epsilon=0.4),
                      learn_blend=False)  # fmt: skip
    service = Service.open(stack, db=tmp_path_factory.mktemp("sim") / "traces.duckdb")
    yield truth, service
    service.close()


def test_simulated_traffic_lands_in_the_trace_store_and_feedback_log(served) -> None:
    truth, service = served
    sim = Simulator(service, truth, PositionBased(examination("ultra", 1.0, 10)), seed=3)
    stats = sim.run(120, k=10)
    assert stats.requests == 120 and stats.impressions == 1200
    events = service.feedback.events()
    kinds = events["kind"].to_pylist()
    assert kinds.count("impression") == 1200 and kinds.count("click") == stats.clicks > 0
    assert set(events["position"].to_pylist()) == set(range(10))
    log = read_slates(service.store, service.feedback)
    assert len(log) == 120 and log.impressions == 1200
    assert log.reward.sum() == stats.clicks
    # the logged propensities are the epsilon-greedy policy's, slot by slot given the slots above
    p, _ = target_probabilities(log, EpsilonGreedy(0.4), -np.arange(log.pool_items.shape[1], dtype=float)[None, :]
                                * np.ones((len(log), 1)))  # fmt: skip
    assert np.allclose(p, log.propensity, atol=1e-6)
    assert log.source_names == ("pop",) and np.isfinite(log.pool_sources[log.pool]).all()
    own = evaluate(log, EpsilonGreedy(0.4), estimators=("ips", "snips"), n_boot=0)
    assert math.isclose(own["ips"].value, stats.clicks / 120) and own["ips"].ess == pytest.approx(120)


def test_a_plackett_luce_explorer_serves_and_logs_exact_propensities(served) -> None:
    truth, service = served
    set_explorer(service.pipeline, PlackettLuce(temperature=0.2, seed=1))
    try:
        Simulator(service, truth, Cascade(), seed=4).run(40, k=5)
        log = read_slates(service.store, service.feedback)
        new = log.select(np.array([r.startswith("sim4-") for r in log.request_id]))
        assert len(new) == 40
        p, _ = target_probabilities(new, PlackettLuce(0.2), new.pool_scores)
        assert np.allclose(p[new.slots], new.propensity[new.slots], atol=1e-5)  # scores are traced to 6 decimals
        assert (new.shown[:, :5] >= 0).all() and (new.shown[:, 5:] < 0).all()
    finally:
        set_explorer(service.pipeline, EpsilonGreedy(0.4))


class _NoPropensity:
    """An explorer that shows the ranking as is and logs no propensity (what older traces hold)."""

    name = "unlogged"

    def explore(self, n_candidates, k, key, scores=None):
        from coachrec.policy import Exploration

        return Exploration(np.arange(n_candidates), np.zeros(n_candidates, bool), np.full(n_candidates, np.nan))


def test_ope_on_traffic_without_logged_propensities_is_refused(served) -> None:
    from coachrec.policy.ope import OPEError

    truth, service = served
    set_explorer(service.pipeline, _NoPropensity())
    try:
        Simulator(service, truth, PositionBased(examination("inverse", 1.0, 10)), seed=5).run(10, k=10)
    finally:
        set_explorer(service.pipeline, EpsilonGreedy(0.4))
    log = read_slates(service.store, service.feedback)
    unlogged = log.select(np.array([r.startswith("sim5-") for r in log.request_id]))
    with pytest.raises(OPEError, match="100 of 100 logged slots have no propensity .*request 'sim5-0'"):
        evaluate(unlogged, EpsilonGreedy(0.1))
