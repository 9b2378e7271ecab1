"""Evaluate a model on a split under an explicit protocol."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.data import EvalTask, Split
from coachrec.metrics import beyond
from coachrec.metrics.protocol import Protocol
from coachrec.metrics.ranking import metrics_from_ranks, multi_target_ranks, target_ranks
from coachrec.progress import Advance

ScoreFn = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass
class EvalResult:
    """Mean metrics, per-user values (for paired tests) and the protocol that produced them."""

    model: str
    dataset: str
    protocol: Protocol
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    users: np.ndarray = field(repr=False)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def to_dict(self) -> dict[str, Any]:
        """The `coachrec evaluate --json` contract."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "protocol": self.protocol.short,
            "protocol_detail": self.protocol.to_dict(),
            "metrics": {k: round(float(v), 6) for k, v in self.metrics.items()},
            "users": self.n_users,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def _sample_negatives(
    rng: np.random.Generator,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    n_items: int,
    n: int,
    p: np.ndarray | None,
) -> np.ndarray:
    """n distinct negatives per row, none in the row's history nor its target (rejection
    sampling, vectorized over rows)."""
    rows = len(targets)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    if (n_items - lengths - 1 < n).any():
        bad = int(np.argmax(n_items - lengths - 1 < n))
        raise ValueError(f"row {bad}: only {n_items - lengths[bad] - 1} unseen items, cannot sample {n} negatives")
    seen_rows = np.concatenate([np.repeat(np.arange(rows), lengths), np.arange(rows)])
    seen_items = np.concatenate([np.concatenate(histories) if rows else np.zeros(0, np.int64), targets])
    forbidden = np.unique(seen_rows * n_items + seen_items)
    out = np.full((rows, n), -1, dtype=np.int64)
    todo = np.arange(rows)
    draw = n * 2 + 16
    while len(todo):
        cand = (
            rng.choice(n_items, size=(len(todo), draw), p=p)
            if p is not None
            else rng.integers(0, n_items, size=(len(todo), draw))
        )
        key = todo[:, None] * n_items + cand
        pos = np.searchsorted(forbidden, key).clip(max=len(forbidden) - 1)
        ok = forbidden[pos] != key
        # first occurrence of each item within a row only
        order = np.argsort(cand, axis=1, kind="stable")
        sorted_c = np.take_along_axis(cand, order, axis=1)
        first = np.ones_like(ok)
        dup_sorted = np.concatenate([np.zeros((len(todo), 1), bool), sorted_c[:, 1:] == sorted_c[:, :-1]], axis=1)
        np.put_along_axis(first, order, ~dup_sorted, axis=1)
        ok &= first
        enough = ok.sum(axis=1) >= n
        for_rows = np.nonzero(enough)[0]
        if len(for_rows):
            sel = ok[for_rows]
            idx = np.argsort(~sel, axis=1, kind="stable")[:, :n]
            out[todo[for_rows]] = np.take_along_axis(cand[for_rows], idx, axis=1)
        todo = todo[~enough]
        draw *= 2
    return out


def evaluate(
    model: Any,
    data: Split | EvalTask,
    protocol: Protocol,
    ks: tuple[int, ...] = (10, 20),
    *,
    model_name: str | None = None,
    dataset: str | None = None,
    popularity: np.ndarray | None = None,
    item_features: Any = None,
    batch_size: int = 512,
    progress: Advance | None = None,
) -> EvalResult:
    """Rank held-out targets under `protocol`. `model` is a `BaseRecommender` or any object
    with `score(histories) -> (n, n_items)`. `popularity` (training counts per item) drives the
    popularity sampler and novelty; by default it comes from the split's training data.
    `progress(done, total)` is called after every batch of users (a `coachrec.progress.Advance`,
    e.g. from `Progress.bar`; silent by default; `coachrec evaluate` draws a bar with it)."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable(done, total) or None, got {progress!r}")
    t0 = time.perf_counter()
    if isinstance(data, Split):
        task = data.task("test")
        n_items = data.train.n_items
        if popularity is None:
            popularity = data.train.concat(data.valid).item_popularity()
        dataset = dataset or data.train.name
        if item_features is None and data.train.catalog is not None:
            item_features = data.train.catalog.genre_matrix()[0]
    else:
        task = data
        n_items = int(model.n_items)
    if popularity is None:
        popularity = np.ones(n_items, dtype=np.int64)
    multi = any(len(t) != 1 for t in task.targets)
    if protocol.candidates == "sampled" and multi:
        raise ValueError("a sampled protocol ranks one target per user; this split has several (use full ranking)")
    rng = np.random.default_rng(protocol.seed)
    p = None
    if protocol.candidates == "sampled" and protocol.sampler == "popularity":
        p = popularity.astype(np.float64) + 1e-12
        p /= p.sum()
    per_user: dict[str, list[np.ndarray]] = {}
    lists: list[np.ndarray] = []
    kmax = max(ks)
    n = len(task.users)
    for lo in range(0, n, batch_size):
        hist = task.histories[lo : lo + batch_size]
        tgts = task.targets[lo : lo + batch_size]
        b = len(hist)
        scores = np.array(model.score(hist), dtype=np.float32, copy=True)
        t_rows = np.repeat(np.arange(b), [len(t) for t in tgts])
        t_cols = np.concatenate(tgts).astype(np.int64)
        if protocol.exclude_seen:
            target_scores = scores[t_rows, t_cols]
            h_rows = np.repeat(np.arange(b), [len(h) for h in hist])
            scores[h_rows, np.concatenate(hist).astype(np.int64)] = -np.inf
            scores[t_rows, t_cols] = target_scores
        if protocol.candidates == "full":
            ranks = target_ranks(scores, t_cols) if not multi else multi_target_ranks(scores, t_rows, t_cols)
            n_targets = np.array([len(t) for t in tgts])
            top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
            vals = np.take_along_axis(scores, top, axis=1)
            lists.append(np.take_along_axis(top, np.argsort(-vals, axis=1, kind="stable"), axis=1))
        else:
            negs = _sample_negatives(rng, hist, t_cols, n_items, protocol.n_negatives, p)
            cand = np.concatenate([t_cols[:, None], negs], axis=1)
            sub = np.take_along_axis(scores, cand, axis=1)
            ranks = target_ranks(sub, np.zeros(b, dtype=np.int64))
            n_targets = np.ones(b, dtype=np.int64)
        m = metrics_from_ranks(ranks, t_rows, b, n_targets, ks)
        for key, val in m.items():
            per_user.setdefault(key, []).append(val)
        if progress is not None:
            progress(lo + b, n)
    pu = {k: np.concatenate(v) for k, v in per_user.items()}
    metrics = {k: float(v.mean()) for k, v in pu.items()}
    if lists:
        top10 = np.concatenate(lists)[:, : min(10, kmax)]
        metrics["coverage@10"] = beyond.coverage(top10, n_items)
        metrics["novelty@10"] = beyond.novelty(top10, popularity, int(n))
        metrics["arp@10"] = beyond.average_popularity(top10, popularity)
        metrics["gini@10"] = beyond.gini(top10, n_items)
        if item_features is not None:
            metrics["ild@10"] = beyond.intra_list_diversity(top10, item_features)
    return EvalResult(
        model=str(model_name or getattr(model, "name", type(model).__name__)),
        dataset=dataset or "?",
        protocol=protocol,
        metrics=metrics,
        per_user=pu,
        users=task.users,
        seconds=time.perf_counter() - t0,
    )
