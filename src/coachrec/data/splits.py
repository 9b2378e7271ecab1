"""Splits that never leak test events into training, and the evaluation tasks they define.

Each part is a `Dataset` whose `info` names it (`info["part"]`: "train", "valid", "test";
`train.concat(valid)` is "train+valid"; `info["split"]`: the split kind), so a model records
what it was fitted on (`fit_info["fit_on"]`; a dataset that is no split's part is "all").

Side information with timestamps is cut too. Item tags (MovieLens `tags.csv`) are user
events: a tag that a user assigned at or after one of their own held-out events says what
that user was watching then, so the parts of a split share a catalog whose tags (and so
`Catalog.texts()`, what the content model embeds) keep only

- leave-one-out: each user's tags strictly before that user's first held-out (validation
  or test) event; users without held-out events keep all of theirs;
- temporal and by-session: every tag strictly before the earliest held-out event (the
  temporal cut), or the start of the earliest held-out session.

That holds for the validation task too (the cut is the first held-out event, not the test
event), and for fitting on train + valid (more conservative than needed there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from coachrec.data.dataset import Dataset
from coachrec.data.sessions import sessionize


@dataclass
class EvalTask:
    """What to predict: for each user, the history the model sees and the target items."""

    users: np.ndarray  # user indices, one per row
    histories: list[np.ndarray]  # time-ordered item indices the model may use
    targets: list[np.ndarray]  # item indices to be ranked


@dataclass
class Split:
    """`train` fits the model; `valid` and `test` hold the held-out events.

    For the test task the model sees train + valid events as history (the standard
    leave-one-out protocol of SASRec and GRU4Rec), for the valid task only train."""

    train: Dataset
    valid: Dataset
    test: Dataset
    kind: str

    def fit_data(self, fit_on: str = "train") -> Dataset:
        """The events to fit on: "train", or "train+valid" (refit after model selection)."""
        if fit_on == "train":
            return self.train
        if fit_on == "train+valid":
            return self.train.concat(self.valid)
        raise ValueError(f"fit_on must be 'train' or 'train+valid', got {fit_on!r}")

    def task(self, stage: str = "test") -> EvalTask:
        if stage not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        seen = self.train if stage == "valid" else self.train.concat(self.valid)
        held = self.valid if stage == "valid" else self.test
        users = np.unique(held.events["user"].to_numpy())
        hist = seen.histories(users)
        tgt_indptr, tgt_items = held.sequences()
        targets = [np.unique(tgt_items[tgt_indptr[u] : tgt_indptr[u + 1]]) for u in users]
        return EvalTask(users=users, histories=hist, targets=targets)


def _split(
    ds: Dataset,
    train: pl.DataFrame,
    valid: pl.DataFrame,
    test: pl.DataFrame,
    split: str,
    kind: str,
    tags_before: int | pl.DataFrame,
) -> Split:
    """The three parts, named in `info`, sharing a catalog whose tags end at `tags_before`."""
    catalog = ds.catalog.visible_tags(tags_before) if ds.catalog is not None else None
    parts: dict[str, Dataset] = {}
    for name, ev in (("train", train), ("valid", valid), ("test", test)):
        parts[name] = ds.with_events(ev, catalog=catalog)
        parts[name].info.update(part=name, split=split)
    return Split(parts["train"], parts["valid"], parts["test"], kind)


def leave_one_out(ds: Dataset, min_events: int = 3) -> Split:
    """Last event of each user -> test, second-to-last -> valid, the rest -> train ("last"
    in the dataset's order: time, ties broken by a seeded hash, see `Dataset`).

    Users with fewer than `min_events` events stay entirely in train. Tags end at each
    user's first held-out event (see the module docstring)."""
    ev = ds.events.with_columns(pl.int_range(pl.len()).over("user").alias("_pos"), pl.len().over("user").alias("_n"))
    eligible = pl.col("_n") >= min_events
    test = ev.filter(eligible & (pl.col("_pos") == pl.col("_n") - 1))
    valid = ev.filter(eligible & (pl.col("_pos") == pl.col("_n") - 2))
    train = ev.filter(~eligible | (pl.col("_pos") < pl.col("_n") - 2))
    held = (
        ev.filter(eligible & (pl.col("_pos") >= pl.col("_n") - 2))
        .group_by("user")
        .agg(pl.col("time").min().alias("before"))
    )
    before = held.with_columns(
        user=pl.Series(ds.users.decode(held["user"].to_numpy()).astype(str).tolist(), dtype=pl.Utf8)
    )
    drop = ["_pos", "_n"]
    return _split(ds, train.drop(drop), valid.drop(drop), test.drop(drop), "leave-one-out", "leave-one-out", before)


def temporal(ds: Dataset, test_fraction: float = 0.1, valid_fraction: float = 0.1) -> Split:
    """Global time cut: the latest `test_fraction` of events -> test, the `valid_fraction`
    before it -> valid. Every training event is earlier than every test event."""
    if not 0 < test_fraction < 1 or not 0 <= valid_fraction < 1 or test_fraction + valid_fraction >= 1:
        raise ValueError("need 0 < test_fraction, 0 <= valid_fraction, and their sum < 1")
    if not ds.timestamps:
        raise ValueError(f"{ds.name}: has no timestamps, so a global temporal cut is meaningless; use leave_one_out")
    t = ds.events["time"].to_numpy()
    t_test = np.quantile(t, 1 - test_fraction, method="higher")
    t_valid = np.quantile(t, 1 - test_fraction - valid_fraction, method="higher")
    ev = ds.events
    return _split(
        ds,
        ev.filter(pl.col("time") < t_valid),
        ev.filter((pl.col("time") >= t_valid) & (pl.col("time") < t_test)),
        ev.filter(pl.col("time") >= t_test),
        "temporal",
        f"temporal (cut at t={int(t_test)})",
        int(t_valid),
    )


def by_session(ds: Dataset, test_fraction: float = 0.1, valid_fraction: float = 0.1, gap_seconds: int = 1800) -> Split:
    """Whole sessions, by start time: the latest sessions -> test, the ones before -> valid."""
    s = ds if "session" in ds.events.columns else sessionize(ds, gap_seconds)
    starts = s.events.group_by("session").agg(pl.col("time").min().alias("start")).sort(["start", "session"])
    n = starts.height
    n_test = max(1, round(n * test_fraction))
    n_valid = round(n * valid_fraction)
    if n_test + n_valid >= n:
        raise ValueError(f"{ds.name}: only {n} sessions, too few for the requested fractions")
    order = starts["session"].to_numpy()
    test_ids = order[n - n_test :]
    valid_ids = order[n - n_test - n_valid : n - n_test]
    ev = s.events
    in_test = pl.col("session").is_in(test_ids.tolist())
    in_valid = pl.col("session").is_in(valid_ids.tolist())
    first_held = int(starts["start"][n - n_test - n_valid])
    return _split(
        s,
        ev.filter(~in_test & ~in_valid),
        ev.filter(in_valid),
        ev.filter(in_test),
        "by-session",
        "by-session",
        first_held,
    )
