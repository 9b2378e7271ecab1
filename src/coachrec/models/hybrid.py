"""Hybrid: a sequential model blended with the content model so new items can surface.

Per history, both score vectors are z-normalized over the items (so their scales match),
then `(1 - weight) * z_seq + weight * z_content` for items with training interactions and
`z_content` alone for items with none: a sequential model's scores for an item it never
saw in training are noise (untrained embeddings), while the text still says what it is.

The sequential part trains in epochs: the hybrid's `on_epoch` and `checkpoint` apply to
those epochs (a checkpoint is the whole hybrid, content part included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender
from coachrec.models.blend import znorm
from coachrec.models.content import ContentModel


@dataclass
class HybridConfig:
    """`sequential`: registered model name; `sequential_config` / `content_config`: their
    config overrides; `weight`: the content share of the blend for warm items."""

    sequential: str = "sasrec"
    sequential_config: dict[str, Any] = field(default_factory=dict)
    content_config: dict[str, Any] = field(default_factory=dict)
    weight: float = 0.3


class Hybrid(BaseRecommender):
    """Sequential + content blend; `self.sequential` and `self.content` are the fitted parts."""

    name = "hybrid"
    Config = HybridConfig

    @classmethod
    def from_parts(
        cls, sequential: BaseRecommender, content: ContentModel, data: Dataset, weight: float = 0.3
    ) -> Hybrid:
        """A hybrid over parts already fitted on `data` (no second training run)."""
        if sequential.items is not data.items or content.items is not data.items:
            raise ValueError("hybrid.from_parts: both parts must be fitted on `data` (same item map)")
        cfg = HybridConfig(sequential.name, sequential.get_params(), content.get_params(), weight)
        model = cls(cfg)
        model.items, model.users = data.items, data.users
        model._hist_indptr, model._hist_items = data.sequences()
        model.sequential, model.content = sequential, content
        model.cold = data.item_popularity() == 0
        model.fit_info = cls._data_info(data) | {"from_parts": True}
        return model

    def _fit(self, data: Dataset) -> None:
        from coachrec.models import create

        if not 0.0 <= self.config.weight <= 1.0:
            raise ValueError(f"hybrid: weight must be in [0, 1], got {self.config.weight}")
        self.content = ContentModel(**self.config.content_config).fit(data)  # first: fails fast without text
        self.cold = data.item_popularity() == 0
        self.sequential = create(self.config.sequential, **self.config.sequential_config)
        self.sequential._end_epoch = self._end_epoch  # type: ignore[method-assign]  # its epochs are the hybrid's
        try:
            self.sequential.fit(data, valid=self._valid)
        finally:
            del self.sequential._end_epoch

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        z_seq = znorm(self.sequential.score(histories))
        z_con = znorm(self.content.score(histories))
        w = np.float32(self.config.weight)
        out = (1 - w) * z_seq + w * z_con
        out[:, self.cold] = z_con[:, self.cold]
        return out.astype(np.float32, copy=False)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "cold": self.cold,
            **self._part_state("seq", self.sequential),
            **self._part_state("content", self.content),
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.cold = state["cold"]
        content = self._restore_part(state, "content")
        if not isinstance(content, ContentModel):
            raise ValueError(f"a saved hybrid's content part is a {type(content).__name__}, not a ContentModel")
        self.sequential, self.content = self._restore_part(state, "seq"), content
