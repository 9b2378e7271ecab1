"""Held-out MovieLens ratings as human labels for relevance, and the committee that judges it."""

import numpy as np
import polars as pl
import pytest

from coachrec.teacher import RelevanceCommittee, measure
from coachrec.teacher.movielens import heldout_labels


@pytest.fixture(scope="module")
def labels(ml_small):
    some_users = ml_small.with_events(ml_small.events.filter(pl.col("user") < 250))  # keeps the test quick
    return heldout_labels(some_users, per_user=2, sample="balanced", seed=0)


def test_heldout_labels_are_later_ratings_of_users_the_teacher_knows(ml_small, labels):
    both = np.concatenate([labels.calibration.users, labels.evaluation.users])
    assert len(both) > 150
    assert not set(labels.calibration.users) & set(labels.evaluation.users)  # split by user
    for pairs in (labels.calibration, labels.evaluation):
        assert np.all(pairs.labels == (pairs.ratings >= 4.0))
        assert np.all((pairs.ratings >= 4.0) | (pairs.ratings <= 2.5))  # 3.0 and 3.5 left out
    train = labels.train.events
    held = pl.DataFrame(
        {"user": labels.evaluation.users.astype(np.int32), "item": labels.evaluation.items.astype(np.int32)}
    )
    assert held.join(train, on=["user", "item"], how="inner").height == 0  # the teacher never saw them
    last_train = train.group_by("user").agg(pl.col("time").max().alias("t"))
    times = ml_small.events.join(held, on=["user", "item"]).join(last_train, on="user")
    assert (times["time"] >= times["t"]).all()  # labels come later than the user's training history


def test_all_later_ratings_are_labelled_by_the_rubric_threshold(ml_small):
    some_users = ml_small.with_events(ml_small.events.filter(pl.col("user") < 100))
    labels = heldout_labels(some_users, seed=0)
    pairs = labels.calibration
    assert np.all(pairs.labels == (pairs.ratings >= 4.0))
    assert ((pairs.ratings > 2.5) & (pairs.ratings < 4.0)).any()  # 3.0 and 3.5 kept, as not liked
    held = labels.calibration.users.size + labels.evaluation.users.size
    assert held == some_users.events.height - labels.train.events.height  # every held-out rating labelled
    with pytest.raises(ValueError, match="sample must be"):
        heldout_labels(some_users, sample="some")  # type: ignore[arg-type]


def test_committee_beats_chance_on_held_out_users(labels):
    committee = RelevanceCommittee().fit(labels.train)
    committee.fit_blend(committee.pair_features(labels.calibration), labels.calibration.labels)
    p = committee.probability_from_features(committee.pair_features(labels.evaluation))
    q = measure("relevance", committee.model_id, p >= 0.5, labels.evaluation.labels, kappa_floor=0.4, scores=p)
    assert q.auc is not None and q.auc > 0.65 and q.kappa > 0.15
    assert set(committee.blend_weights()) == {"bias", *committee.features}
    unknown = committee.probability("no-such-user", ["1", "2"], ["1", "not-an-item"])
    assert np.isfinite(unknown[0]) and np.isnan(unknown[1])


def test_later_slates_cut_each_users_pairs_in_order():
    from coachrec.coach.trust import later_slates

    users = np.array([3, 3, 3, 5, 5, 5, 5, 5, 9])
    assert later_slates(users, 2).tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 5]


def test_relevance_trust_is_measured_on_slates_of_the_served_size(ml_small):
    from coachrec.coach.trust import measured_committee
    from coachrec.teacher import load_rubric

    some_users = ml_small.with_events(ml_small.events.filter(pl.col("user") < 200))
    committee, q = measured_committee(some_users, load_rubric(), slate_size=10, seed=0)
    assert q.unit == "slate" and q.kappa_ci is not None
    assert "slates of 10" in q.protocol and "every later rating" in q.protocol
    evaluation_users = len(np.unique(heldout_labels(some_users, seed=0).evaluation.users))
    assert q.n > evaluation_users  # prolific raters give several slates, not one each
    assert q.kappa > 0.2  # well above chance on later real ratings, even on 200 users
    p = committee.probability("1", [], ["1", "not-an-item"])
    assert np.isfinite(p[0]) and np.isnan(p[1])
