"""Labels for relevance on implicit data (clicks, purchases; no ratings): later interactions.

A log of 0/1 interactions has no "disliked": every event is a choice. What stands in for a
rating is what the user chose *later*. Each user's interactions are cut in time as
`movielens.heldout_labels` cuts ratings (the latest `holdout_fraction` held out; the teacher
sees the rest); every held-out interaction is a *relevant* pair, and each is matched by
`negatives` items the user never interacted with (before or after the cut), drawn among the
`window` items nearest to it in popularity on the earlier part, so popularity alone cannot tell
them apart. "Relevant" then means: looks more like this user's next choices than an equally
popular item does — P >= 0.5 is even odds against such an item.

Pairs are split by user into a calibration half and an evaluation half, as for ratings.
"""

from __future__ import annotations

import numpy as np

from coachrec.data import Dataset
from coachrec.teacher.movielens import HeldOutLabels, RatedPairs, time_cut


def heldout_interactions(
    data: Dataset,
    *,
    holdout_fraction: float = 0.2,
    min_history: int = 3,
    negatives: int = 2,
    window: int = 50,
    seed: int = 0,
) -> HeldOutLabels:
    """Later interactions (relevant) and popularity-matched never-chosen items (not relevant);
    `ratings` holds 1.0 / 0.0. Pairs are sorted by user, positives first in time order."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    ev, held, train = time_cut(data, holdout_fraction, min_history)
    later = ev.filter(held).unique(["user", "item"], keep="first", maintain_order=True)
    if later.height == 0:
        raise ValueError(
            f"no user of {data.name!r} has {min_history} earlier interactions before the held-out "
            f"{holdout_fraction:.0%}: no later interactions to label"
        )
    pos_users = later["user"].to_numpy().astype(np.int64)
    pos_items = later["item"].to_numpy().astype(np.int64)

    popularity = train.item_popularity()
    order = np.argsort(-popularity, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    seen = ev.select("user", "item").unique()
    chosen: dict[int, set[int]] = {}
    for u, i in zip(seen["user"].to_numpy().tolist(), seen["item"].to_numpy().tolist(), strict=True):
        chosen.setdefault(u, set()).add(i)
    rng = np.random.default_rng(seed)
    neg_users, neg_items = [], []
    for u, i in zip(pos_users.tolist(), pos_items.tolist(), strict=True):
        lo = min(max(0, int(rank[i]) - window // 2), max(len(order) - window, 0))
        pool = [int(j) for j in order[lo : lo + window] if int(j) not in chosen[u]]
        for j in rng.permutation(pool)[:negatives].tolist() if pool else []:
            neg_users.append(u)
            neg_items.append(int(j))
            chosen[u].add(int(j))  # a negative is drawn once per user
    users = np.concatenate([pos_users, np.asarray(neg_users, np.int64)])
    items = np.concatenate([pos_items, np.asarray(neg_items, np.int64)])
    labels = np.r_[np.ones(len(pos_users), bool), np.zeros(len(neg_users), bool)]
    by_user = np.argsort(users, kind="stable")  # positives stay before negatives within a user
    pairs = RatedPairs(users[by_user], items[by_user], labels[by_user].astype(np.float64), labels[by_user])
    people = np.unique(pairs.users)
    calib = rng.choice(people, size=len(people) // 2, replace=False)
    in_calib = np.isin(pairs.users, calib)
    protocol = (
        f"per-user time cut (each user's latest {holdout_fraction:.0%} of interactions held out); users with >= "
        f"{min_history} earlier interactions; relevant = a later interaction, not relevant = {negatives} item(s) "
        f"per later interaction the user never chose, drawn among the {window} nearest in popularity; "
        f"calibration/evaluation split by user (seed {seed})"
    )
    return HeldOutLabels(train, pairs.take(in_calib), pairs.take(~in_calib), protocol)
