"""Planted truth from real data: what each user really prefers, hidden from the served stack.

Each user's last `holdout` share of events (by time) is held out; the served stack is fitted on
the rest. A held-out item's grade (0..4) comes from its real rating (MovieLens: 5 -> 4, 4.5 -> 3,
4 -> 2, 3.5 -> 1, lower -> 0) or is 4 for rating-free interaction data (Beauty); every other
item is grade 0. The probability that a user who examines an item likes (clicks) it follows
ULTRA: `noise + (1 - noise) * (2**grade - 1) / 15`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from coachrec.data import Dataset

MAX_GRADE = 4


def grade_of_rating(rating: np.ndarray) -> np.ndarray:
    """MovieLens stars (0.5..5) to grades 0..4: 5 -> 4, 4.5 -> 3, 4 -> 2, 3.5 -> 1, below -> 0."""
    return np.clip(np.floor((np.asarray(rating, dtype=np.float64) - 3.0) * 2.0), 0, MAX_GRADE).astype(np.int8)


@dataclass
class PlantedTruth:
    """Graded true preference of (user index, item index) pairs; unlisted pairs are grade 0."""

    n_items: int
    keys: np.ndarray
    """Sorted `user * n_items + item` of the pairs with a grade above 0."""
    grades: np.ndarray
    noise: float = 0.05
    users: np.ndarray | None = None
    """User indices with at least one graded held-out item (the ones worth simulating)."""

    @classmethod
    def holdout(cls, data: Dataset, *, holdout: float = 0.3, noise: float = 0.05) -> tuple[PlantedTruth, Dataset]:
        """The truth from each user's last `holdout` share of events and the rest to fit on."""
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        ev = data.events.with_columns(
            pl.int_range(pl.len()).over("user").alias("_pos"), pl.len().over("user").alias("_n")
        )
        cut = (pl.col("_n") - (pl.col("_n") * holdout).ceil().cast(pl.Int64)).clip(lower_bound=1)
        held = ev.filter(pl.col("_pos") >= cut)
        train = data.with_events(ev.filter(pl.col("_pos") < cut).drop(["_pos", "_n"]))
        users = held["user"].to_numpy().astype(np.int64)
        items = held["item"].to_numpy().astype(np.int64)
        values = held["value"].to_numpy().astype(np.float64)
        rated = values.max(initial=0.0) > 1.0  # implicit data stores value 1 for every event
        grades = grade_of_rating(values) if rated else np.full(len(items), MAX_GRADE, np.int8)
        keys = users * data.n_items + items
        order = np.argsort(keys, kind="stable")
        keys, grades = keys[order], grades[order]
        last = np.r_[keys[1:] != keys[:-1], True]  # a pair held out twice keeps its latest grade
        keys, grades = keys[last], grades[last]
        positive = grades > 0
        truth = cls(data.n_items, keys[positive], grades[positive], noise, np.unique(keys[positive] // data.n_items))
        return truth, train

    def grade(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Grades of pairs (any matching shapes); items < 0 (padding) are grade 0."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        key = u * self.n_items + i
        at = np.clip(np.searchsorted(self.keys, key), 0, max(len(self.keys) - 1, 0))
        found = (len(self.keys) > 0) & (i >= 0)
        if len(self.keys):
            found = found & (self.keys[at] == key)
        return np.where(found, self.grades[at] if len(self.grades) else 0, 0).astype(np.int8)

    def preference(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(click | examined) of pairs: ULTRA's `noise + (1 - noise) (2^g - 1) / (2^4 - 1)`."""
        g = self.grade(users, items).astype(np.float64)
        out: np.ndarray = self.noise + (1.0 - self.noise) * (2.0**g - 1.0) / (2.0**MAX_GRADE - 1.0)
        return np.where(np.asarray(items) >= 0, out, 0.0)
