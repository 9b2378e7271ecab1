"""Learning explorers: exact propensities of the executed policy, and learning from clicks."""

import math

import numpy as np

from coachrec.policy.bandits import BetaThompson, LinUCB


def test_thompson_logs_the_probability_it_sampled_with() -> None:
    items = np.array([4, 7, 9, 2])
    scores = np.array([0.9, 0.6, 0.5, 0.1])
    features = np.zeros((4, 1))
    explorer = BetaThompson(10, draws=400, seed=2)
    runs = [explorer.explore_candidates(items, scores, features, 2, f"r{i}") for i in range(1500)]
    first = np.array([r.order[0] for r in runs])
    for row in range(4):
        logged = [r.propensity[0] for r in runs if r.order[0] == row]
        if logged:  # same posterior for every request: the frequency is the logged propensity
            assert abs((first == row).mean() - np.mean(logged)) < 0.04
    for r in runs[:50]:
        assert 0 < r.propensity[1] <= 1 and np.isnan(r.propensity[2:]).all()
        assert sorted(r.order.tolist()) == [0, 1, 2, 3]


def test_thompson_learns_from_clicks_on_what_it_served() -> None:
    items = np.array([0, 1, 2])
    scores = np.array([0.5, 0.5, 0.5])
    explorer = BetaThompson(3, greedy=True)
    keys = [f"r{i}" for i in range(30)]
    shown = [explorer.explore_candidates(items, scores, np.zeros((3, 1)), 3, key) for key in keys]
    assert all(math.isclose(p, 1.0) for s in shown for p in s.propensity[:3])
    rewards = np.array([[1.0 if items[s.order[j]] == 2 else 0.0 for j in range(3)] for s in shown])
    assert explorer.learn(keys, rewards) == 30 and explorer.learn(keys, rewards) == 0  # each slate once
    assert explorer.clicks.tolist() == [0.0, 0.0, 30.0] and explorer.shows.tolist() == [30.0] * 3
    assert explorer.explore_candidates(items, scores, np.zeros((3, 1)), 1, "next").order[0] == 2


def test_linucb_explores_uncertain_features_and_exploits_learned_ones() -> None:
    items = np.arange(3)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    bandit = LinUCB(2, alpha=1.0)
    keys = [f"r{i}" for i in range(40)]
    # teach it that the first feature pays: serve item 0 only and click it
    served = [bandit.explore_candidates(items[:1], np.zeros(1), x[:1], 1, key) for key in keys]
    assert all(s.propensity[0] == 1.0 for s in served)
    bandit.learn(keys, np.ones((40, 1)))
    pick = bandit.explore_candidates(items, np.zeros(3), x, 3, "after")
    assert pick.order[0] in (0, 2)  # the learned direction
    greedy = LinUCB(2, alpha=0.0)
    greedy.a, greedy.b = bandit.a.copy(), bandit.b.copy()
    untried = greedy.explore_candidates(items, np.zeros(3), x, 3, "g").order.tolist()
    optimistic = LinUCB(2, alpha=5.0)
    optimistic.a, optimistic.b = bandit.a.copy(), bandit.b.copy()
    explored = optimistic.explore_candidates(items, np.zeros(3), x, 3, "o").order.tolist()
    assert untried.index(1) > explored.index(1)  # the unexplored direction rises with alpha
