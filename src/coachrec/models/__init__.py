"""Recommenders behind one protocol: fit, score, recommend, save, load.

Models are looked up by name; their modules load lazily so the CLI stays quick and the
baselines never import torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from coachrec.models.base import BaseRecommender, Recommendations, Recommender, load, top_k

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
}


def model_class(name: str) -> type[BaseRecommender]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    module, _, cls = MODELS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def config_fields(name: str) -> set[str]:
    """The settings of model `name`'s config (empty for a model without a config dataclass)."""
    cfg = model_class(name).Config
    return {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()


def epoch_field(name: str) -> str | None:
    """The config setting that counts training epochs ("n_epochs" or "epochs"), if any."""
    return next((f for f in ("n_epochs", "epochs") if f in config_fields(name)), None)


def create(name: str, **config: Any) -> BaseRecommender:
    """A new, unfitted model by name with config overrides, e.g. `create("itemknn", neighbors=50)`."""
    return model_class(name)(**config)


__all__ = ["MODELS", "BaseRecommender", "Recommendations", "Recommender", "config_fields", "create", "epoch_field", "load", "model_class", "top_k"]
