"""The serving pipeline: stages and spans, constraints end to end, guardrail, span metrics."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from coachrec.data import Dataset
from coachrec.models import create
from coachrec.policy import Constraints, Range
from coachrec.serve import (
    FeedbackEvent,
    FeedbackLog,
    Pipeline,
    PipelineConfig,
    RecommendRequest,
    Service,
    UnknownUserError,
)
from coachrec.serve.candidates import Candidates, RequestContext
from coachrec.serve.stages import Guardrail
from coachrec.tracing import SpanKind, Tracer, TraceStore

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


def synthetic(n_users: int = 80, n_items: int = 150, seed: int = 0) -> Dataset:
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
            "title": [f"Film {i}" for i in range(n_items)],
            "genres": [[GENRES[i % 5], GENRES[(i * 7) % 5]] for i in range(n_items)],
            "year": [None if i % 13 == 0 else 1950 + i % 70 for i in range(n_items)],
        },
        schema_overrides={"year": pl.Int64},
    )
    return Dataset.from_frame(events, catalog=catalog, name="synthetic")


@pytest.fixture(scope="module")
def stack():
    data = synthetic()
    return data, [create("itemknn").fit(data), create("pop").fit(data)]


def make(stack, **config):
    data, models = stack
    store = TraceStore(":memory:")
    pipeline = Pipeline.from_models(models, data.catalog, tracer=Tracer(store), config=PipelineConfig(**config))
    return pipeline, store


def test_every_stage_is_a_span_with_items_and_scores(stack) -> None:
    pipeline, store = make(stack, epsilon=0.2)
    result = pipeline.recommend(RecommendRequest(user_id="3", k=10))
    assert len(result.items) == 10 and len(set(result.items)) == 10 and result.note is None
    assert all(result.reasons) and len(result.scores) == 10
    store.flush()
    spans = {s.name: s for s in store.trace(result.trace_id)}
    kinds = {name: s.kind for name, s in spans.items()}
    assert kinds == {
        "recommend": "CHAIN",
        "retrieve": "RETRIEVER",
        "retrieve.itemknn": "RETRIEVER",
        "retrieve.pop": "RETRIEVER",
        "rank": "RANKER",
        "policy.constraints": "POLICY",
        "policy.diversity": "POLICY",
        "policy.explore": "POLICY",
        "guardrail": "GUARDRAIL",
        "explain": "TOOL",
    }
    rank = spans["rank"]
    assert set(rank.output_value()["sources"]) == {"itemknn", "pop"}
    assert rank.input_value()["items"] and len(rank.output_value()["scores"]) == len(rank.output_value()["items"])
    assert spans["guardrail"].output_value()["items"] == result.items
    assert all(s.request_id == result.request_id for s in spans.values())


def test_constraints_hold_and_fewer_than_k_is_reported(stack) -> None:
    data, _ = stack
    pipeline, _ = make(stack)
    seen = set(data.items.decode(pipeline.history_of(RecommendRequest(user_id="5"))[0]).tolist())
    c = Constraints(require_genres=("horror",), exclude_genres=("Comedy",), ranges={"year": Range(1960, 1990)})
    result = pipeline.recommend(RecommendRequest(user_id="5", k=50, constraints=c))
    frame = data.catalog.frame.filter(pl.col("item").is_in(result.items))
    assert frame.height == len(result.items) > 0
    for genres, year in zip(frame["genres"].to_list(), frame["year"].to_list(), strict=False):
        assert "Horror" in genres and "Comedy" not in genres and 1960 <= year <= 1990
    assert not seen & set(result.items)
    assert len(result.items) < 50 and result.note and "constraints allow only" in result.note


def test_anonymous_and_unknown_users(stack) -> None:
    pipeline, _ = make(stack)
    result = pipeline.recommend(RecommendRequest(history=["1", "2", "nope"], k=5))
    assert len(result.items) == 5 and result.ignored_history == ["nope"]
    assert not {"1", "2"} & set(result.items)
    with pytest.raises(UnknownUserError, match="user_id"):
        pipeline.recommend(RecommendRequest(user_id="stranger"))


class Rogue:
    """A stage that injects a forbidden item, a duplicate and a nonexistent index at the top."""

    name = "rogue"
    kind = SpanKind.RERANKER

    def __init__(self, forbidden: int) -> None:
        self.forbidden = forbidden

    def __call__(self, ctx: RequestContext, c: Candidates, span) -> Candidates:
        bad = np.array([self.forbidden, c.idx[0], 10_000], dtype=np.int64)
        return Candidates(
            np.concatenate([bad, c.idx]),
            np.concatenate([[9.0, 9.0, 9.0], c.score]),
            np.vstack([np.full((3, c.sources.shape[1]), np.nan, np.float32), c.sources]),
            c.source_names,
        )


def test_guardrail_drops_and_records_violations(stack) -> None:
    data, models = stack
    pipeline, store = make(stack, diversity=1.0)
    seen = set(pipeline.history_of(RecommendRequest(user_id="7"))[0].tolist())
    horror = next(
        int(i) for i in np.flatnonzero(pipeline.catalog.index.genres[:, GENRES.index("Horror")]) if i not in seen
    )
    guard_at = next(i for i, s in enumerate(pipeline.stages) if isinstance(s, Guardrail))
    pipeline.stages.insert(guard_at, Rogue(horror))
    result = pipeline.recommend(
        RecommendRequest(user_id="7", k=10, constraints=Constraints(exclude_genres=("Horror",)))
    )
    assert len(result.items) == 10 and len(set(result.items)) == 10
    assert str(data.items.ids[horror]) not in result.items
    store.flush()
    guard = next(s for s in store.trace(result.trace_id) if s.name == "guardrail")
    assert guard.status == "ERROR"
    reasons = [v["reason"] for v in guard.attribute_dict()["violations"]]
    assert reasons[0].startswith("has excluded genre") and reasons[1:] == ["nonexistent item", "duplicate"]


def test_span_metrics_after_feedback(stack, tmp_path) -> None:
    data, models = stack
    store = TraceStore(tmp_path / "t.duckdb")
    pipeline = Pipeline.from_models(models, data.catalog, tracer=Tracer(store))
    service = Service(pipeline, store, FeedbackLog(store.path))
    result = service.recommend(RecommendRequest(user_id="9", k=10))
    clicked = result.items[2]
    service.record_feedback(
        [FeedbackEvent(result.request_id, item, "impression", position=i) for i, item in enumerate(result.items)]
        + [
            FeedbackEvent(result.request_id, clicked, "click", position=2),
            FeedbackEvent(result.request_id, result.items[5], "thumbs_down", position=5),
        ]
    )
    out = service.update_span_metrics([result.request_id])[result.request_id]
    table = store.span_metrics(request_id=result.request_id).to_pylist()
    names = {(m["span_name"], m["name"]) for m in table}
    for span in ("retrieve", "retrieve.itemknn", "retrieve.pop", "rank"):
        for metric in ("precision@10", "recall@10", "mrr@10", "ndcg@10"):
            assert (span, metric) in names
    assert len(out) == 4 and all("K=10" in m["protocol"] for m in table)
    service.close()
