"""Most-popular baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender


@dataclass
class PopularityConfig:
    """`half_life` (in events of the dataset's clock) down-weights old events; None = plain counts."""

    half_life: float | None = None


class Popularity(BaseRecommender):
    """Scores every item by how often it occurs in training, whatever the history."""

    name = "pop"
    Config = PopularityConfig

    def _fit(self, data: Dataset) -> None:
        items = data.events["item"].to_numpy()
        if self.config.half_life:
            t = data.events["time"].to_numpy().astype(np.float64)
            w = np.exp2(-(t.max() - t) / self.config.half_life)
        else:
            w = None
        self.counts = np.bincount(items, weights=w, minlength=data.n_items).astype(np.float32)

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts = state["counts"]
