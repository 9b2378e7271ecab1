"""Request understanding on the serving path: text in a request changes what is recommended
(romances without horror, pre-1980 classics), titles the text names become history or, when
disliked, exclusions, explicit constraints are never loosened, a request without text gets
exactly the old slate, the HTTP API takes a conversation and rejects bad ones, semantic
retrieval finds an item by words of its text, and the LLM reranker gets the request's words.

Runs on the bundled ml-latest-small (its MiniLM item embeddings are computed once and cached
under $COACHREC_HOME) and the shipped ReDial sample in tests/data/redial/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from coachrec.policy import Constraints, Range
from coachrec.serve import PipelineConfig, RecommendRequest, Stack
from coachrec.serve.candidates import Turn, as_turns
from coachrec.serve.semantic import SemanticRetriever
from coachrec.serve.understanding import IntentParser
from coachrec.tracing import Tracer, TraceStore

REDIAL = Path(__file__).resolve().parent / "data" / "redial"


@pytest.fixture(scope="module")
def text_stack(ml_small):
    """The default stack: item-kNN + popularity, text stages, text blend learned at fit."""
    return Stack.fit(ml_small)


@pytest.fixture(scope="module")
def pipeline(text_stack):
    p = text_stack.pipeline(Tracer(enabled=False))
    p.warm()
    return p


@pytest.fixture(scope="module")
def frame(ml_small):
    return ml_small.catalog.frame


def _genres(frame, items):
    by_id = dict(zip(frame["item"].to_list(), frame["genres"].to_list(), strict=True))
    return [by_id[i] for i in items]


def _years(frame, items):
    by_id = dict(zip(frame["item"].to_list(), frame["year"].to_list(), strict=True))
    return [by_id[i] for i in items]


def test_the_stack_learned_its_text_blend(text_stack):
    w = text_stack.config.text_weights
    assert text_stack.config.understand and text_stack.config.semantic
    assert set(w) == {"itemknn", "pop", "intent", "semantic", "mentioned"} and all(v >= 0 for v in w.values())
    assert w["intent"] > 0 and "simulated requests" in text_stack.source
    assert text_stack.retriever_names == ("itemknn", "pop", "intent", "semantic", "mentioned")


def test_a_romance_without_horror(pipeline, frame):
    result = pipeline.recommend(RecommendRequest(context="no horror please, I want a romance", k=10))
    genres = _genres(frame, result.items)
    assert len(result.items) == 10
    assert not any("Horror" in g for g in genres)
    assert sum("Romance" in g for g in genres) >= 8, list(zip(result.titles, genres, strict=True))


def test_a_classic_from_before_1980(pipeline, frame):
    result = pipeline.recommend(RecommendRequest(context="a classic from before 1980", k=10))
    years = _years(frame, result.items)
    assert len(years) == 10 and all(y < 1980 for y in years), list(zip(result.titles, years, strict=True))
    assert result.allowed_in_catalog < 9742  # the text's year bound became a hard constraint


def test_named_titles_become_history_and_dislikes_exclusions(pipeline, text_stack):
    liked = pipeline.recommend(RecommendRequest(context="Something like Super Troopers please", k=10))
    st = text_stack.catalog.frame.filter(pl.col("title").str.starts_with("Super Troopers"))["item"][0]
    assert st not in liked.items and any(r == "similar to Super Troopers (2001)" for r in liked.reasons)
    matrix = text_stack.catalog.frame.filter(pl.col("title") == "Matrix, The (1999)")["item"][0]
    store = TraceStore(":memory:")
    traced = text_stack.pipeline(Tracer(store))
    result = traced.recommend(RecommendRequest(context="I didn't like The Matrix. Any good sci fi?", k=20))
    assert matrix not in result.items
    store.flush()
    span = next(s for s in store.trace(result.trace_id) if s.name == "understand")
    out = span.output_value()
    assert out["disliked"] == [matrix] and matrix not in out["liked"]
    assert matrix in out["constraints"]["exclude_items"]
    mention = next(e for e in out["evidence"] if e["kind"] == "mention")
    assert mention["text"] == "The Matrix" and mention["polarity"] == -1 and mention["span"] == [14, 24]
    genre = next(e for e in out["evidence"] if e["kind"] == "genre")
    assert genre["value"] == "Sci-Fi" and 0 < genre["confidence"] <= 1
    root = next(s for s in store.trace(result.trace_id) if s.name == "recommend")
    assert root.input_value()["context"] == "I didn't like The Matrix. Any good sci fi?"


@pytest.mark.parametrize(
    ("text", "exclude", "require", "soft_negative", "years"),
    [
        ("no horror please, I want a romance", ["Horror"], [], [], (None, None)),
        ("anything but comedy", ["Comedy"], [], [], (None, None)),
        ("not too violent, something funny", [], [], ["Action", "Crime"], (None, None)),
        ("I'm not a horror fan", [], [], ["Horror"], (None, None)),
        ("nothing scary or gory", ["Horror"], [], [], (None, None)),
        ("only comedies", [], ["Comedy"], [], (None, None)),
        ("a classic from before 1980", [], [], [], (None, 1979)),
        ("nothing before 2000", [], [], [], (2000, None)),
        ("something from between 1990 and 1999", [], [], [], (1990, 1999)),
        ("80s movies", [], [], [], (None, None)),
    ],
)
def test_negations_and_explicit_statements(ml_small, text, exclude, require, soft_negative, years):
    parser = IntentParser(ml_small.catalog)
    intent = parser.parse(as_turns(text))
    assert list(intent.exclude_genres) == exclude
    assert list(intent.require_genres) == require
    for g in soft_negative:
        assert intent.genres[g] < 0
    assert (intent.year_min, intent.year_max) == years


def test_soft_preferences_of_moods_eras_and_tags(ml_small):
    parser = IntentParser(ml_small.catalog)
    eighties = parser.parse(as_turns("some 80s movies"))
    assert [(y.lo, y.hi) for y in eighties.years] == [(1980, 1989)] and eighties.year_max is None
    kids = parser.parse(as_turns("a cartoon for my kids"))
    assert kids.genres["Animation"] > 0 and kids.genres["Children"] > 0
    tt = parser.parse(as_turns("sci fi with time travel"))
    assert tt.genres["Sci-Fi"] > 0 and tt.tags["time travel"] > 0
    # the last seeker turn weighs most; the recommender's words add no preferences
    conv = parser.parse([Turn("seeker", "I want a comedy"), Turn("recommender", "How about a horror film?"),
                         Turn("seeker", "Actually, a drama")])  # fmt: skip
    assert conv.genres["Drama"] > conv.genres["Comedy"] > 0 and "Horror" not in conv.genres


def test_explicit_constraints_are_never_loosened(pipeline, frame, ml_small):
    explicit = Constraints(require_genres=("Comedy",), ranges={"year": Range(min=1990)}, exclude_genres=("Drama",))
    text = "anything from before 1980, no comedies and no horror"
    result = pipeline.recommend(RecommendRequest(context=text, k=10, constraints=explicit))
    genres, years = _genres(frame, result.items), _years(frame, result.items)
    assert result.items and all("Comedy" in g and "Drama" not in g and "Horror" not in g for g in genres)
    assert all(y >= 1990 for y in years)
    # the mask a text can produce is always inside the request's own
    idx = pipeline.catalog.index
    for t in ["no horror", "only westerns", "before 1950", "after 2010", "I didn't like Toy Story", text]:
        ctx_allowed = _allowed_after_understanding(pipeline, t, explicit)
        assert not (ctx_allowed & ~idx.mask(explicit, np.zeros(0, np.int64))).any(), t


def _allowed_after_understanding(pipeline, text, constraints):
    from coachrec.serve.candidates import Candidates, RequestContext
    from coachrec.tracing import NoopSpan

    hist = np.zeros(0, np.int64)
    ctx = RequestContext("t", None, hist, 10, constraints, pipeline.catalog.index.mask(constraints, hist),
                         pipeline.catalog, Tracer(enabled=False), text, turns=as_turns(text))  # fmt: skip
    pipeline.stages[0](ctx, Candidates.empty(), NoopSpan())
    return ctx.allowed


def test_no_text_gives_exactly_the_old_slate(text_stack, ml_small):
    old = Stack(text_stack.models, text_stack.catalog, PipelineConfig()).pipeline(Tracer(enabled=False))
    new = text_stack.pipeline(Tracer(enabled=False))
    requests = [RecommendRequest(user_id=u, k=10) for u in ("1", "7", "42", "414")]
    requests += [RecommendRequest(history=["1", "2", "3"], k=10), RecommendRequest(history=[], k=5),
                 RecommendRequest(user_id="9", k=10, context="   "),
                 RecommendRequest(user_id="5", k=10, constraints=Constraints(exclude_genres=("Horror",)))]  # fmt: skip
    for r in requests:
        a, b = old.recommend(r), new.recommend(r)
        assert (a.items, a.scores, a.reasons, a.note) == (b.items, b.scores, b.reasons, b.note)
    histories = [ml_small.sequences()[1][:30], np.zeros(0, np.int64)]
    plain = Stack(text_stack.models, text_stack.catalog, PipelineConfig())
    np.testing.assert_array_equal(plain.scorer().score(histories), text_stack.scorer().score(histories))


def test_text_weights_are_saved_with_the_stack(text_stack, tmp_path):
    loaded = Stack.load(text_stack.save(tmp_path / "stack"), text_stack.catalog)
    assert loaded.config == text_stack.config and loaded.config.text_weights == text_stack.config.text_weights
    r = RecommendRequest(context="a funny animated movie for kids", k=10)
    assert loaded.pipeline().recommend(r).items == text_stack.pipeline().recommend(r).items


def test_semantic_retrieval_finds_an_item_by_words_of_its_text(ml_small):
    from coachrec.serve.candidates import RequestContext, ServingCatalog

    serving = ServingCatalog(ml_small.catalog)
    frame = ml_small.catalog.frame
    for encoder in ("static", "full"):
        retriever = SemanticRetriever(ml_small.catalog, 10, query_encoder_name=encoder)
        for phrase, title in [("shawshank redemption prison drama", "Shawshank Redemption, The (1994)"),
                              ("toy story pixar animation", "Toy Story (1995)")]:  # fmt: skip
            hist = np.zeros(0, np.int64)
            ctx = RequestContext("t", None, hist, 10, Constraints(), np.ones(len(serving), bool), serving,
                                 Tracer(enabled=False), phrase, turns=as_turns(phrase))  # fmt: skip
            idx, scores = retriever.retrieve(ctx)
            want = frame.with_row_index().filter(pl.col("title") == title)["index"][0]
            assert want in idx[:5].tolist(), (encoder, phrase, serving.titles[idx[:5]])
            assert np.all(np.diff(scores) <= 1e-6)


def test_a_redial_turn_through_the_served_stack(pipeline, text_stack, frame):
    first = json.loads((REDIAL / "test.jsonl").read_text().splitlines()[0])
    turns = [{"speaker": "seeker" if i % 2 else "recommender", "text": u} for i, u in enumerate(first["context"]) if u]
    assert turns == [{"speaker": "seeker", "text": "Hi I am looking for a movie like Super Troopers (2001)"}]
    result = pipeline.recommend(RecommendRequest(context=turns, k=10))
    st = text_stack.catalog.frame.filter(pl.col("title") == "Super Troopers (2001)")["item"][0]
    assert st not in result.items
    assert sum("Comedy" in g for g in _genres(frame, result.items)) >= 7


def test_the_http_api_takes_a_conversation(text_stack, tmp_path, frame):
    from fastapi.testclient import TestClient

    from coachrec.app import create_app
    from coachrec.serve import Service
    from coachrec.serve.auth import Authenticator

    service = Service.open(text_stack, tmp_path / "t.duckdb")
    retrievers = [r for stage in service.pipeline.stages for r in getattr(stage, "retrievers", [])]
    semantic = [r for r in retrievers if isinstance(r, SemanticRetriever)]
    assert semantic and all(r._items is not None for r in semantic)  # warmed at start-up, not on the first request
    try:
        with TestClient(create_app(service, auth=Authenticator.insecure())) as client:
            conv = [{"speaker": "seeker", "text": "Hi! I'm looking for a movie tonight."},
                    {"speaker": "recommender", "text": "Sure, what do you like?"},
                    {"speaker": "user", "text": "no horror please, I want a romance"}]  # fmt: skip
            r = client.post("/v1/recommend", json={"context": conv, "k": 10})
            assert r.status_code == 200, r.text
            items = [i["item"] for i in r.json()["items"]]
            genres = _genres(frame, items)
            assert not any("Horror" in g for g in genres) and sum("Romance" in g for g in genres) >= 8
            service.store.flush()
            spans = {s.name: s for s in service.store.trace(r.json()["trace_id"])}
            assert spans["recommend"].input_value()["context"][2] == {"speaker": "seeker", "text": conv[2]["text"]}
            assert "understand" in spans and "retrieve.semantic" in spans and "retrieve.intent" in spans
            assert client.post("/v1/recommend", json={"context": "a western", "k": 3}).status_code == 200
            bad = [
                ({"context": []}, "context"),
                ({"context": "x" * 100_000}, "context"),
                ({"context": [{"speaker": "narrator", "text": "hi"}]}, "context.0.speaker"),
                ({"context": [{"speaker": "seeker"}]}, "context.0.text"),
                ({"context": [{"speaker": "seeker", "text": "x" * 5_000}]}, "context.0.text"),
                ({"context": [{"speaker": "seeker", "text": "hi"}] * 201}, "context"),
                ({"context": 42}, "context"),
            ]
            for body, field in bad:
                resp = client.post("/v1/recommend", json=body)
                assert 400 <= resp.status_code < 500, (body, resp.text)
                assert field in resp.json()["detail"], resp.json()
    finally:
        service.close()


def test_in_process_context_errors_name_the_problem():
    with pytest.raises(ValueError, match="empty conversation"):
        as_turns([])
    with pytest.raises(ValueError, match=r"context.0.speaker: unknown speaker 'narrator'"):
        as_turns([{"speaker": "narrator", "text": "hi"}])
    with pytest.raises(ValueError, match="at most 20,000"):
        as_turns("x" * 100_000)
    assert as_turns("  ") == () and as_turns([{"speaker": "assistant", "text": "hi"}]) == (Turn("recommender", "hi"),)


def test_the_llm_reranker_gets_the_request_text_behind_the_router(text_stack):
    from coachrec.llm.fake import FakeBackend
    from coachrec.llm.router import RouterConfig
    from coachrec.serve.llm_stages import LLMServeConfig, TierBackends, attach_llm

    store = TraceStore(":memory:")
    pipeline = text_stack.pipeline(Tracer(store))
    small = FakeBackend("fake-small")
    config = LLMServeConfig(router=RouterConfig(skip_margin=0.25, escalate_margin=0.0))
    attach_llm(pipeline, text_stack.catalog, config, TierBackends({"small": lambda: small}))
    understood = pipeline.recommend(RecommendRequest(context="no horror please, I want a romance", k=5))
    unclear = pipeline.recommend(RecommendRequest(context="qwzx blorft", k=5))
    store.flush()

    def span(result, name):
        return next((s for s in store.trace(result.trace_id) if s.name == name), None)

    a = span(understood, "llm.rerank").attribute_dict()
    assert a["router.understood"] is True and a["router.free_text"] is False
    b = span(unclear, "llm.rerank").attribute_dict()
    assert b["router.understood"] is False and b["router.tier"] == "small"
    call = span(unclear, "llm.small")
    assert call is not None and "qwzx blorft" in call.input_value()["prompt"]
