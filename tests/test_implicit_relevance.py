"""Relevance on implicit data (Beauty): labels from later interactions, the implicit committee,
and its slate-level trust."""

import numpy as np
import pytest
from scipy.stats import rankdata

from coachrec.coach.trust import balanced, measured_committee, mixed_slates
from coachrec.teacher import load_rubric
from coachrec.teacher.implicit_relevance import ImplicitCommittee, mid_rank_percentile
from coachrec.teacher.later_interactions import heldout_interactions
from coachrec.teacher.movielens import RatedPairs


@pytest.fixture(scope="module")
def labels(beauty):
    return heldout_interactions(beauty, negatives=2, seed=0)


def test_positives_are_each_users_later_interactions(beauty, labels):
    pairs = [labels.calibration, labels.evaluation]
    train = {(u, i) for u, i in labels.train.events.select("user", "item").iter_rows()}
    every = {(u, i) for u, i in beauty.events.select("user", "item").iter_rows()}
    for part in pairs:
        pos = {(int(u), int(i)) for u, i, y in zip(part.users, part.items, part.labels, strict=True) if y}
        assert pos <= every and not pos & train  # chosen, and after the cut
    held = every - train
    assert held == {(int(u), int(i)) for p in pairs for u, i, y in zip(p.users, p.items, p.labels, strict=True) if y}


def test_negatives_were_never_chosen_and_match_popularity(beauty, labels):
    every = {(u, i) for u, i in beauty.events.select("user", "item").iter_rows()}
    pop = labels.train.item_popularity()
    rank = np.empty(len(pop), np.int64)
    rank[np.argsort(-pop, kind="stable")] = np.arange(len(pop))
    for part in (labels.calibration, labels.evaluation):
        neg = ~part.labels
        assert neg.sum() > 0
        assert not {(int(u), int(i)) for u, i in zip(part.users[neg], part.items[neg], strict=True)} & every
        # at most two negatives per later interaction, within the popularity window
        assert neg.sum() <= 2 * part.labels.sum()
    pos_rank = rank[labels.evaluation.items[labels.evaluation.labels]]
    neg_rank = rank[labels.evaluation.items[~labels.evaluation.labels]]
    assert abs(np.median(pos_rank) - np.median(neg_rank)) < 50


def test_calibration_and_evaluation_users_are_disjoint(labels):
    assert not set(labels.calibration.users.tolist()) & set(labels.evaluation.users.tolist())


def test_mid_rank_percentile_is_scipy_average_rank():
    rng = np.random.default_rng(0)
    row = rng.integers(0, 5, 200).astype(float)  # many ties
    items = rng.integers(0, 200, 50)
    expected = (2 * rankdata(row)[items] - 1) / (2 * len(row))
    np.testing.assert_allclose(mid_rank_percentile(row, items), expected)


def _pairs(users, labels):
    n = len(users)
    return RatedPairs(np.asarray(users), np.arange(n), np.asarray(labels, float), np.asarray(labels, bool))


def test_balanced_keeps_one_negative_per_positive_per_user():
    pairs = _pairs([0, 0, 0, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1, 0])
    kept = balanced(pairs)
    assert kept.items.tolist() == [0, 1, 4, 5, 6]


def test_mixed_slates_keep_every_positive_and_vary_the_share():
    users = np.repeat(np.arange(300), 6)
    labels = np.tile([1, 1, 0, 0, 0, 0], 300)
    rows, slate = mixed_slates(_pairs(users, labels), seed=0)
    assert len(np.unique(slate)) == 300
    share = np.bincount(slate, weights=labels[rows]) / np.bincount(slate)
    assert labels[rows].sum() == 600  # every later interaction is in its user's slate
    assert (share >= 0.5).any() and (share < 0.5).any()
    assert np.all(users[rows] == np.unique(users)[slate])


def test_implicit_committee_is_measured_on_slates_and_ranks_later_choices_higher(beauty, labels):
    committee, quality = measured_committee(beauty, load_rubric(), seed=0)
    assert isinstance(committee, ImplicitCommittee)
    assert quality.unit == "slate" and quality.kappa_ci is not None
    assert "later interaction" in quality.protocol
    assert quality.may_gate == (quality.kappa_ci[0] >= quality.kappa_floor)
    split = ImplicitCommittee().fit(labels.train)
    cal = balanced(labels.calibration)
    split.fit_blend(split.pair_features(cal), cal.labels)
    ev = labels.evaluation
    p = split.probability_from_features(split.pair_features(ev))
    assert p[ev.labels].mean() > p[~ev.labels].mean()  # later choices look more relevant


def test_implicit_committee_scores_live_requests_and_unknown_items(beauty):
    committee, _ = measured_committee(beauty, load_rubric(), seed=0)
    user = str(beauty.users.ids[0])
    items = [str(beauty.items.ids[i]) for i in range(3)] + ["no-such-item"]
    p = committee.probability(user, [], items)
    assert np.isnan(p[-1]) and np.all((p[:3] >= 0) & (p[:3] <= 1))
    anon = committee.probability(None, [str(beauty.items.ids[5]), str(beauty.items.ids[6])], items[:3])
    assert np.all(np.isfinite(anon))
