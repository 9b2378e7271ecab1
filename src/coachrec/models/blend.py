"""A blend of fitted sequential models: their errors differ (GRU4Rec leads in MRR, SASRec in
recall), so a weighted sum of their scores can beat each of them.

Per history, each part's score vector is z-normalised over the items (so the scales match),
then `sum_i w_i * z_i`. The weights are chosen on a validation task (`choose_weights`: every
point of a simplex grid, validation NDCG@10 under leave-one-out full ranking with seen items
excluded), never on test targets. `SequentialBlend.from_parts` wraps parts already fitted on
the same data, so the blend costs no second training run.

`norm` "rank" replaces each part's scores by reciprocal-rank-fusion values 1 / (60 + rank)
within the row (ranks past 1,000 count as 1,000) instead of z-scores. `search` "fine"
(`search_weights`) is for more parts and finer weights than an exact grid can afford: every
validation user's candidates (the union of each part's top `candidates` unseen items, plus
the target) are pooled once, a coarse simplex grid and then pairwise hill-climbing moves of
0.05, 0.02 and 0.01 are scored on that pool, and the best few weightings are re-scored
exactly (full ranking, as `choose_weights`); the exact validation NDCG@10 picks the weights.
Still validation only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.data import Dataset, EvalTask
from coachrec.models.base import BaseRecommender, top_k


def znorm(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (rows with none: unscaled)."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    out: np.ndarray = (x - mu) / np.where(sd > 0, sd, 1.0)
    return out


NORMS = ("z", "rank")
SEARCHES = ("grid", "fine")
RRF_K = 60.0
RANK_DEPTH = 1000


def rank_norm(x: np.ndarray, depth: int = RANK_DEPTH) -> np.ndarray:
    """Each row's scores as 1 / (60 + rank), rank 0 = the highest (ties by item index); every
    item ranked `depth` or lower gets 1 / (60 + depth) (a full sort per row costs more than
    the whole rest of a blend, and those ranks are far from any top 10)."""
    n, v = x.shape
    d = min(depth, v)
    out = np.full(x.shape, 1.0 / (RRF_K + d), dtype=np.float32)
    top = top_k(x, d)
    out[np.arange(n)[:, None], top] = (1.0 / (RRF_K + np.arange(d, dtype=np.float32)))[None, :]
    return out


def normalise(x: np.ndarray, norm: str = "z") -> np.ndarray:
    """`x` (rows of item scores) z-normalised ("z") or as reciprocal-rank values ("rank")."""
    if norm == "z":
        return znorm(x)
    if norm == "rank":
        return rank_norm(x)
    raise ValueError(f"blend: norm must be one of {NORMS}, got {norm!r}")


def _same_items(part: BaseRecommender, data: Dataset) -> bool:
    """`part` indexes the items as `data` does (the same map, or a saved copy of it)."""
    a, b = part.items, data.items
    return a is b or (a is not None and len(a) == len(b) and bool(np.array_equal(a.ids, b.ids)))


def simplex_grid(n_parts: int, steps: int) -> np.ndarray:
    """Every weight vector of `n_parts` non-negative multiples of 1/steps that sum to 1."""
    if n_parts < 1 or steps < 1:
        raise ValueError(f"simplex_grid needs n_parts >= 1 and steps >= 1, got {n_parts}, {steps}")
    rows = [c for c in itertools.product(range(steps + 1), repeat=n_parts) if sum(c) == steps]
    return np.asarray(rows, dtype=np.float64) / steps


def choose_weights(
    parts: Sequence[BaseRecommender],
    task: EvalTask,
    steps: int = 10,
    batch_size: int = 512,
    *,
    norm: str = "z",
    grid: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The simplex-grid weights (or the rows of `grid`) with the best NDCG@10 on `task` (one
    target per user, full ranking, seen items excluded, ties pessimistic; ties between
    weightings go to the first grid point), and every grid point's NDCG@10."""
    from coachrec.metrics.ranking import target_ranks

    if any(len(t) != 1 for t in task.targets):
        raise ValueError("choose_weights: the validation task must hold one target per user")
    grid = simplex_grid(len(parts), steps) if grid is None else np.asarray(grid, dtype=np.float64)
    gain = np.zeros(len(grid))
    n = len(task.users)
    for lo in range(0, n, batch_size):
        hist = task.histories[lo : lo + batch_size]
        tgt = np.concatenate(task.targets[lo : lo + batch_size]).astype(np.int64)
        z = np.stack([normalise(np.asarray(p.score(hist), dtype=np.float32), norm) for p in parts])
        rows = np.repeat(np.arange(len(hist)), [len(h) for h in hist])
        cols = np.concatenate(hist).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
        for g, w in enumerate(grid):
            s = np.tensordot(w.astype(np.float32), z, axes=1)
            keep = s[np.arange(len(tgt)), tgt].copy()
            s[rows, cols] = -np.inf
            s[np.arange(len(tgt)), tgt] = keep
            r = target_ranks(s, tgt)
            gain[g] += np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0).sum()
    ndcg = gain / max(n, 1)
    table = [
        {"weights": [round(float(v), 4) for v in w], "valid_ndcg@10": round(float(s), 5)}
        for w, s in zip(grid, ndcg, strict=True)
    ]
    return grid[int(np.argmax(ndcg))], table


def _pool(
    parts: Sequence[BaseRecommender], task: EvalTask, norm: str, candidates: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per validation user: the normalised scores (parts, users, width) of the union of each
    part's top `candidates` unseen items (the target left out), which of those columns are real
    (not padding or a repeat), the target's normalised scores (parts, users) and each part's
    `candidates`-th best unseen score (parts, users): an item outside the union scores at most
    the weighted sum of those in any blend."""
    n_parts, n = len(parts), len(task.users)
    zc: list[np.ndarray] = []
    ok: list[np.ndarray] = []
    zt: list[np.ndarray] = []
    floor: list[np.ndarray] = []
    for lo in range(0, n, batch_size):
        hist = task.histories[lo : lo + batch_size]
        tgt = np.concatenate(task.targets[lo : lo + batch_size]).astype(np.int64)
        b = len(hist)
        z = np.stack([normalise(np.asarray(p.score(hist), dtype=np.float32), norm) for p in parts])
        c = min(candidates, z.shape[2] - 1)
        rows = np.repeat(np.arange(b), [len(h) for h in hist])
        cols = np.concatenate(hist).astype(np.int64) if len(rows) else np.zeros(0, np.int64)
        masked = z.copy()
        masked[:, rows, cols] = -np.inf
        top = np.argpartition(-masked, c - 1, axis=2)[:, :, :c]
        low = np.take_along_axis(masked, top, axis=2).min(axis=2)
        floor.append(np.where(np.isfinite(low), low, -1e30))
        idx = np.sort(top.transpose(1, 0, 2).reshape(b, n_parts * c), axis=1)
        real = np.ones(idx.shape, dtype=bool)
        real[:, 1:] = idx[:, 1:] != idx[:, :-1]
        real &= idx != tgt[:, None]
        real &= np.isfinite(masked[0][np.arange(b)[:, None], idx])
        zc.append(z[:, np.arange(b)[:, None], idx])
        ok.append(real)
        zt.append(z[:, np.arange(b), tgt])
    return np.concatenate(zc, axis=1), np.concatenate(ok), np.concatenate(zt, axis=1), np.concatenate(floor, axis=1)


def search_weights(
    parts: Sequence[BaseRecommender],
    task: EvalTask,
    *,
    norm: str = "z",
    candidates: int = 100,
    max_grid: int = 500,
    moves: Sequence[float] = (0.05, 0.02, 0.01),
    finalists: int = 5,
    batch_size: int = 512,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Weights for many parts, chosen on `task` (validation) by validation NDCG@10: a coarse
    simplex grid (the finest of at most `max_grid` points, at most 1/10) and hill-climbing
    moves of weight between two parts, both scored on the pooled candidates (`_pool`); then
    the `finalists` best weightings re-scored exactly by `choose_weights` (full ranking), the
    best of those returned. The table holds the finalists' exact NDCG@10 and, per finalist,
    its pooled estimate and the share of users whose pooled rank < 10 is not provably exact."""
    if any(len(t) != 1 for t in task.targets):
        raise ValueError("search_weights: the validation task must hold one target per user")
    n_parts = len(parts)
    zc, ok, zt, floor = _pool(parts, task, norm, candidates, batch_size)
    n = zc.shape[1]
    seen: dict[tuple[float, ...], tuple[float, float]] = {}

    def pooled(w: np.ndarray) -> float:
        key = tuple(round(float(v), 4) for v in w)
        if key not in seen:
            s = np.tensordot(w.astype(np.float32), zc, axes=1)
            t = w.astype(np.float32) @ zt
            r = ((s >= t[:, None]) & ok).sum(axis=1)
            hit = r < 10
            gain = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).sum()) / max(n, 1)
            unsure = float((hit & (t <= w.astype(np.float32) @ floor)).mean()) if n else 0.0
            seen[key] = (gain, unsure)
        return seen[key][0]

    steps = max(s for s in range(1, 11) if math.comb(s + n_parts - 1, n_parts - 1) <= max_grid or s == 1)
    best = max(simplex_grid(n_parts, steps), key=pooled)
    for d in moves:
        improved = True
        while improved:
            improved = False
            for i, j in itertools.permutations(range(n_parts), 2):
                if best[i] < d - 1e-9:
                    continue
                w = best.copy()
                w[i] -= d
                w[j] += d
                w = np.clip(w, 0.0, None)
                if pooled(w) > pooled(best) + 1e-12:
                    best, improved = w, True
    top = sorted(seen, key=lambda k: -seen[k][0])[:finalists]
    weights, exact = choose_weights(parts, task, batch_size=batch_size, norm=norm, grid=np.asarray(top))
    for row, key in zip(exact, top, strict=True):
        row["pooled_ndcg@10"] = round(seen[key][0], 5)
        row["pooled_unsure"] = round(seen[key][1], 5)
    return weights, exact


@dataclass
class BlendConfig:
    """`parts`: registered model names; `part_configs`: their config overrides (by position);
    `weights`: one per part (empty: chosen on the validation task given to `fit`, equal
    weights without one); `steps`: grid resolution of that choice (1/steps); `norm`: "z"
    (z-scores) or "rank" (1 / (60 + rank)) per part; `search`: "grid" (exact simplex grid)
    or "fine" (`search_weights`, with `candidates` per part pooled)."""

    parts: list[str] = field(default_factory=lambda: ["sasrec", "gru4rec"])
    part_configs: list[dict[str, Any]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    steps: int = 10
    norm: str = "z"
    search: str = "grid"
    candidates: int = 100


class SequentialBlend(BaseRecommender):
    """Weighted sum of z-normalised part scores; `self.parts` are the fitted parts and
    `self.weight_table` the validation NDCG@10 of every weighting tried (when chosen)."""

    name = "blend"
    Config = BlendConfig

    @classmethod
    def from_parts(
        cls,
        parts: Sequence[BaseRecommender],
        data: Dataset,
        *,
        weights: Sequence[float] | None = None,
        valid: EvalTask | None = None,
        steps: int = 10,
        norm: str = "z",
        search: str = "grid",
        candidates: int = 100,
    ) -> SequentialBlend:
        """A blend of parts already fitted on `data`; weights given, or chosen on `valid`."""
        if not parts:
            raise ValueError("blend: needs at least one part")
        if not all(_same_items(p, data) for p in parts):
            raise ValueError("blend.from_parts: every part must be fitted on `data` (same item map)")
        cfg = BlendConfig(
            [p.name for p in parts],
            [p.get_params() for p in parts],
            list(weights or []),
            steps,
            norm,
            search,
            candidates,
        )
        model = cls(cfg)
        model.items, model.users = data.items, data.users
        model._hist_indptr, model._hist_items = data.sequences()
        model.parts = list(parts)
        model._set_weights(valid)
        model.fit_info = cls._data_info(data) | {"from_parts": True}
        return model

    def _set_weights(self, valid: EvalTask | None) -> None:
        c = self.config
        if c.norm not in NORMS or c.search not in SEARCHES:
            raise ValueError(f"blend: norm must be one of {NORMS} and search one of {SEARCHES}")
        self.weight_table: list[dict[str, Any]] = []
        if c.weights:
            if len(c.weights) != len(self.parts) or min(c.weights) < 0 or sum(c.weights) <= 0:
                raise ValueError(
                    f"blend: weights must be {len(self.parts)} non-negative numbers, not all 0: {c.weights}"
                )
            w = np.asarray(c.weights, dtype=np.float64)
        elif valid is not None and c.search == "fine":
            w, self.weight_table = search_weights(self.parts, valid, norm=c.norm, candidates=c.candidates)
        elif valid is not None:
            w, self.weight_table = choose_weights(self.parts, valid, c.steps, norm=c.norm)
        else:
            w = np.ones(len(self.parts))
        self.weights = (w / w.sum()).astype(np.float32)

    def _fit(self, data: Dataset) -> None:
        from coachrec.models import create

        c = self.config
        if c.part_configs and len(c.part_configs) != len(c.parts):
            raise ValueError(f"blend: part_configs must have one entry per part ({len(c.parts)})")
        configs = c.part_configs or [{} for _ in c.parts]
        self.parts = [
            create(n, dataset=data, **cfg).fit(data, valid=self._valid) for n, cfg in zip(c.parts, configs, strict=True)
        ]
        self._set_weights(self._valid)

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(histories), self.n_items), dtype=np.float32)
        for w, part in zip(self.weights, self.parts, strict=True):
            if w > 0:
                out += w * normalise(np.asarray(part.score(histories), dtype=np.float32), self.config.norm)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {"weights": self.weights}
        for i, part in enumerate(self.parts):
            state.update(self._part_state(f"part{i}", part))
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float32)
        self.weight_table = []
        self.parts = [self._restore_part(state, f"part{i}") for i in range(len(self.weights))]
