"""Shared fixtures of the LLM-layer tests: a small synthetic catalog and a traced pipeline."""

from __future__ import annotations

import numpy as np
import polars as pl

from coachrec.data import Dataset
from coachrec.llm.fake import FakeBackend
from coachrec.models import create
from coachrec.serve import Pipeline
from coachrec.serve.llm_stages import LLMServeConfig, TierBackends, attach_llm
from coachrec.tracing import Tracer, TraceStore

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


def synthetic(
    n_users: int = 60,
    n_items: int = 120,
    seed: int = 0,
    titles: dict[int, str] | None = None,
    tags: dict[int, list[str]] | None = None,
) -> Dataset:
    """Users with 15 popularity-skewed events each; `titles`/`tags` override items' text."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=15, replace=False, p=pop / pop.sum())
        users += [str(u)] * 15
        items += [str(i) for i in chosen]
    events = pl.DataFrame({"user": users, "item": items, "time": np.arange(len(users))})
    catalog = pl.DataFrame(
        {
            "item": [str(i) for i in range(n_items)],
            "title": [(titles or {}).get(i, f"Film Number {i} ({1950 + i % 70})") for i in range(n_items)],
            "genres": [[GENRES[i % 5], GENRES[(i * 7 + 1) % 5]] for i in range(n_items)],
            "year": [1950 + i % 70 for i in range(n_items)],
            "tags": [(tags or {}).get(i, [f"tag{i % 4}"]) for i in range(n_items)],
        },
        schema_overrides={"year": pl.Int64},
    )
    return Dataset.from_frame(events, catalog=catalog, name="synthetic")


def llm_pipeline(
    data: Dataset,
    config: LLMServeConfig | None = None,
    small: FakeBackend | None = None,
    escalate: FakeBackend | None = None,
) -> tuple[Pipeline, TraceStore, TierBackends]:
    models = [create("itemknn").fit(data), create("pop").fit(data)]
    store = TraceStore(":memory:")
    pipeline = Pipeline.from_models(models, data.catalog, tracer=Tracer(store))
    loaders = {"small": lambda: small or FakeBackend("fake-small")}
    if escalate is not None:
        loaders["escalate"] = lambda: escalate
    backends = attach_llm(pipeline, data.catalog, config or LLMServeConfig(), TierBackends(loaders))
    return pipeline, store, backends
