"""A blend of fitted sequential models: their errors differ (GRU4Rec leads in MRR, SASRec in
recall), so a weighted sum of their scores can beat each of them.

Per history, each part's score vector is z-normalised over the items (so the scales match),
then `sum_i w_i * z_i`. The weights are chosen on a validation task (`choose_weights`: every
point of a simplex grid, validation NDCG@10 under leave-one-out full ranking with seen items
excluded), never on test targets. `SequentialBlend.from_parts` wraps parts already fitted on
the same data, so the blend costs no second training run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.data import Dataset, EvalTask
from coachrec.models.base import BaseRecommender


def znorm(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (rows with none: unscaled)."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    out: np.ndarray = (x - mu) / np.where(sd > 0, sd, 1.0)
    return out


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
    parts: Sequence[BaseRecommender], task: EvalTask, steps: int = 10, batch_size: int = 512
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The simplex-grid weights with the best NDCG@10 on `task` (one target per user, full
    ranking, seen items excluded, ties pessimistic; ties between weightings go to the first
    grid point), and every grid point's NDCG@10."""
    from coachrec.metrics.ranking import target_ranks

    if any(len(t) != 1 for t in task.targets):
        raise ValueError("choose_weights: the validation task must hold one target per user")
    grid = simplex_grid(len(parts), steps)
    gain = np.zeros(len(grid))
    n = len(task.users)
    for lo in range(0, n, batch_size):
        hist = task.histories[lo : lo + batch_size]
        tgt = np.concatenate(task.targets[lo : lo + batch_size]).astype(np.int64)
        z = np.stack([znorm(np.asarray(p.score(hist), dtype=np.float32)) for p in parts])
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


@dataclass
class BlendConfig:
    """`parts`: registered model names; `part_configs`: their config overrides (by position);
    `weights`: one per part (empty: chosen on the validation task given to `fit`, equal
    weights without one); `steps`: grid resolution of that choice (1/steps)."""

    parts: list[str] = field(default_factory=lambda: ["sasrec", "gru4rec"])
    part_configs: list[dict[str, Any]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    steps: int = 10


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
    ) -> SequentialBlend:
        """A blend of parts already fitted on `data`; weights given, or chosen on `valid`."""
        if not parts:
            raise ValueError("blend: needs at least one part")
        if not all(_same_items(p, data) for p in parts):
            raise ValueError("blend.from_parts: every part must be fitted on `data` (same item map)")
        cfg = BlendConfig([p.name for p in parts], [p.get_params() for p in parts], list(weights or []), steps)
        model = cls(cfg)
        model.items, model.users = data.items, data.users
        model._hist_indptr, model._hist_items = data.sequences()
        model.parts = list(parts)
        model._set_weights(valid)
        model.fit_info = cls._data_info(data) | {"from_parts": True}
        return model

    def _set_weights(self, valid: EvalTask | None) -> None:
        c = self.config
        self.weight_table: list[dict[str, Any]] = []
        if c.weights:
            if len(c.weights) != len(self.parts) or min(c.weights) < 0 or sum(c.weights) <= 0:
                raise ValueError(
                    f"blend: weights must be {len(self.parts)} non-negative numbers, not all 0: {c.weights}"
                )
            w = np.asarray(c.weights, dtype=np.float64)
        elif valid is not None:
            w, self.weight_table = choose_weights(self.parts, valid, c.steps)
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
                out += w * znorm(np.asarray(part.score(histories), dtype=np.float32))
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
