"""Human labels for relevance from MovieLens: later real ratings of the same users.

Each user's ratings are cut in time: the latest `holdout_fraction` of a user's ratings are held
out and the teacher is fitted on everything else (other users' events included, as in the usual
leave-last-out protocol; a global time cut leaves only a dozen users with later ratings on
ml-latest-small). Pairs are split by user into a calibration half (blend weights, LLM
thresholds) and an evaluation half (every reported figure). Two ways to label them:

- `sample="all"` (default): every held-out rating, *relevant* when rating >= `like` (4.0). This is
  what the rubric's relevance criterion means (P(rating >= 4)), with the share of liked items
  users really have, so slates of these pairs look like slates a user would rate;
- `sample="balanced"`: rating <= `dislike` (2.5) is *not relevant*, ratings in between (3.0, 3.5)
  are left out as ambiguous, and at most `per_user` pairs per user and label are drawn (an
  item-level probe of how well the members separate clear likes from clear dislikes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from coachrec.data import Dataset


@dataclass
class RatedPairs:
    """Parallel arrays: user index, item index, the real later rating, and the binary label."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def take(self, mask: np.ndarray) -> RatedPairs:
        return RatedPairs(self.users[mask], self.items[mask], self.ratings[mask], self.labels[mask])


@dataclass
class HeldOutLabels:
    train: Dataset
    calibration: RatedPairs
    evaluation: RatedPairs
    protocol: str


def time_cut(data: Dataset, holdout_fraction: float, min_history: int) -> tuple[pl.DataFrame, pl.Expr, Dataset]:
    """The per-user time cut: the events (with `_pos`, `_n` per user), the expression marking each
    eligible user's latest `holdout_fraction` (users keeping >= `min_history` earlier events), and
    the dataset of everything else."""
    ev = data.events.with_columns(  # events are sorted by (user, time)
        pl.int_range(pl.len()).over("user").alias("_pos"), pl.len().over("user").alias("_n")
    )
    n_held = (pl.col("_n") * holdout_fraction).ceil()
    held = (pl.col("_n") - n_held >= min_history) & (pl.col("_pos") >= pl.col("_n") - n_held)
    return ev, held, data.with_events(ev.filter(~held).drop("_pos", "_n"))


def heldout_labels(
    data: Dataset,
    *,
    holdout_fraction: float = 0.2,
    like: float = 4.0,
    dislike: float = 2.5,
    min_history: int = 5,
    per_user: int = 4,
    sample: Literal["all", "balanced"] = "all",
    seed: int = 0,
) -> HeldOutLabels:
    """Labelled later ratings (see the module docstring for `sample`)."""
    if sample not in ("all", "balanced"):
        raise ValueError(f"sample must be 'all' or 'balanced', got {sample!r}")
    if not like > dislike:
        raise ValueError(f"like ({like}) must be above dislike ({dislike})")
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ev, held, train = time_cut(data, holdout_fraction, min_history)
    rng = np.random.default_rng(seed)
    if sample == "all":
        picked = ev.filter(held).with_columns((pl.col("value") >= like).alias("label"))
    else:
        later = ev.filter(held & ((pl.col("value") >= like) | (pl.col("value") <= dislike))).with_columns(
            (pl.col("value") >= like).alias("label")
        )
        later = later.with_columns(pl.Series("r", rng.random(later.height)))
        picked = (
            later.sort("r")
            .with_columns(pl.int_range(pl.len()).over(["user", "label"]).alias("n"))
            .filter(pl.col("n") < per_user)
        )
    picked = picked.sort(["user", "time", "item"])
    pairs = RatedPairs(
        picked["user"].to_numpy().astype(np.int64),
        picked["item"].to_numpy().astype(np.int64),
        picked["value"].to_numpy().astype(np.float64),
        picked["label"].to_numpy().astype(bool),
    )
    users = np.unique(pairs.users)
    calib_users = rng.choice(users, size=len(users) // 2, replace=False)
    in_calib = np.isin(pairs.users, calib_users)
    labelling = (
        f"every later rating, relevant = rating >= {like}"
        if sample == "all"
        else f"relevant = later rating >= {like}, not relevant = <= {dislike}, ratings between dropped; "
        f"<= {per_user} pairs per user and label"
    )
    protocol = (
        f"per-user time cut (each user's latest {holdout_fraction:.0%} of ratings held out); users with >= "
        f"{min_history} earlier ratings; {labelling}; calibration/evaluation split by user (seed {seed})"
    )
    return HeldOutLabels(train, pairs.take(in_calib), pairs.take(~in_calib), protocol)
