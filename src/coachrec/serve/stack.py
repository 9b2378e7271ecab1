"""Which models a server runs: a saved stack from `--model-path`, else one fitted at start-up.

Resolution order in `resolve_stack`: an explicit model path; then (when the model registry
lands) the registry's champion, inserted before the bundled fallback; then item-kNN + popularity
fitted on the bundled MovieLens latest-small, so a fresh install serves something sensible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coachrec import datasets
from coachrec.data import Catalog
from coachrec.models import BaseRecommender, create, load

DEFAULT_MODELS = ("itemknn", "pop")


@dataclass
class Stack:
    models: list[BaseRecommender]
    catalog: Catalog
    source: str  # where the models came from, for /health and traces
    ranker: Any = None
    """A `rank` stage replacing the score blend (a coached champion's distilled ranker)."""


def _catalog_for(dataset: str) -> Catalog:
    data = datasets.load(dataset)
    if data.catalog is None:
        raise ValueError(f"dataset {dataset!r} has no item catalog; the server needs titles and attributes")
    return data.catalog


def load_stack(path: str | Path, dataset: str = "ml-latest-small") -> Stack:
    """Models saved under `path`: one saved model folder, or a folder of them (each a retriever).

    The catalog (titles, genres, attributes) comes from `dataset`, realigned to the models' items.
    """
    folder = Path(path)
    if (folder / "model.json").exists():
        folders = [folder]
    else:
        folders = sorted(p for p in folder.iterdir() if (p / "model.json").exists()) if folder.is_dir() else []
    if not folders:
        raise FileNotFoundError(f"{folder}: no saved coachrec model (a model.json here or in a subfolder)")
    models = [load(f) for f in folders]
    return Stack(models, _catalog_for(dataset), f"saved models in {folder}")


def fit_default_stack(dataset: str = "ml-latest-small", models: tuple[str, ...] = DEFAULT_MODELS) -> Stack:
    """Fit the default retrievers on a named dataset (all of it: serving, not evaluating)."""
    data = datasets.load(dataset)
    if data.catalog is None:
        raise ValueError(f"dataset {dataset!r} has no item catalog; the server needs titles and attributes")
    fitted = [create(name).fit(data) for name in models]
    return Stack(fitted, data.catalog, f"{'+'.join(models)} fitted at start-up on {dataset}")


def resolve_stack(model_path: str | Path | None, dataset: str = "ml-latest-small") -> Stack:
    """The stack to serve (see the module docstring for the order)."""
    if model_path is not None:
        return load_stack(model_path, dataset)
    from coachrec.coach.registry import champion_stack  # the registry's champion, when there is one

    champion = champion_stack(dataset)
    if champion is not None:
        return champion
    return fit_default_stack(dataset)
