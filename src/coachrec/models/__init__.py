"""Recommenders behind one contract (`BaseRecommender`): fit, score, recommend, save, load.

Models are looked up by name; their modules load lazily so the CLI stays quick and the
baselines never import torch. `create(name, dataset=...)` applies the tuned settings of
`coachrec.models.defaults` for that dataset, then yours.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from coachrec.data import Dataset
from coachrec.models.base import BaseRecommender, Recommendations, SettingError, load, top_k

#: name -> "module:Class"
MODELS: dict[str, str] = {
    "pop": "coachrec.models.popularity:Popularity",
    "itemknn": "coachrec.models.itemknn:ItemKNN",
    "sasrec": "coachrec.models.sasrec:SASRec",
    "rum-item": "coachrec.models.rum:RUMItem",
    "rum-feature": "coachrec.models.rum:RUMFeature",
    "content": "coachrec.models.content:ContentModel",
    "hybrid": "coachrec.models.hybrid:Hybrid",
    "gru4rec": "coachrec.models.gru4rec:GRU4Rec",
    "sequential-rules": "coachrec.models.transitions:SequentialRules",
    "blend": "coachrec.models.blend:SequentialBlend",
}


def model_class(name: str) -> type[BaseRecommender]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    module, _, qual = MODELS[name].partition(":")
    cls: type[BaseRecommender] = getattr(importlib.import_module(module), qual)
    return cls


def config_fields(name: str) -> set[str]:
    """The settings of model `name` (its `Config` fields)."""
    return set(model_class(name).settings())


def create(name: str, dataset: str | Path | Dataset | None = None, **config: Any) -> BaseRecommender:
    """A new, unfitted model by name. With `dataset` (a name such as "beauty", a path, or a
    `Dataset`, whose `.name` is used) the tuned settings for that dataset apply first
    (`coachrec.models.defaults`); keywords override them, e.g. `create("sasrec",
    dataset="beauty", dim=64)`. Without it, the model's own defaults. Unknown settings raise
    `SettingError` listing the valid ones."""
    from coachrec.models.defaults import defaults

    if dataset is not None:
        config = defaults(name, dataset.name if isinstance(dataset, Dataset) else dataset) | config
    return model_class(name)(**config)


__all__ = ["MODELS", "BaseRecommender", "Recommendations", "SettingError", "create", "load", "model_class", "top_k"]
