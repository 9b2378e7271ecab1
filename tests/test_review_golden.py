"""Review queue, annotations, versioned golden sets and judge quality on them (no model needed)."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coachrec.review import ReviewError, ReviewStore, golden_quality
from coachrec.review.api import review_router
from coachrec.serve.auth import Authenticator
from coachrec.teacher import JudgeCase, Judgment, load_rubric
from coachrec.teacher.cases import SpanRef


def case(trace_id: str) -> JudgeCase:
    return JudgeCase(
        trace_id=trace_id,
        request_id=f"r-{trace_id}",
        user_id="1",
        start_ns=0,
        latency_ns=1,
        k=2,
        items=["1", "2"],
        scores=[1.0, 0.5],
        reasons=["", ""],
        explored=[False, False],
        history=["3"],
        constraints={},
        context=None,
        retrievers=["itemknn", "pop"],
        spans=[SpanRef(f"s-{trace_id}", "recommend", "CHAIN")],
    )


def judgment(trace_id: str, criterion: str, score: float, orders=None, version="judge@v1") -> Judgment:
    return Judgment(
        criterion,
        trace_id,
        f"s-{trace_id}",
        "recommend",
        "CHAIN",
        score,
        "pass" if score >= 0.5 else "fail",
        () if score >= 0.5 else ("mode",),
        "because",
        "fake",
        version,
        order_scores=orders,
    )


@pytest.fixture
def store(tmp_path):
    s = ReviewStore(tmp_path / "review.duckdb")
    yield s
    s.close()


def test_queue_rules_and_annotations(store):
    js = [
        judgment("a", "slate_variety", 0.2),
        judgment("b", "slate_variety", 0.8, orders=(0.9, 0.7)),
        judgment("c", "slate_variety", 0.6, orders=(0.9, 0.3)),
        judgment("d", "relevance", 0.9),
    ]
    cases = [case(t) for t in "abcd"]
    assert store.enqueue(js, cases, review_below=0.5) == 2  # a: low score, c: swap disagreement
    reasons = {i.trace_id: i.queued_because for i in store.items()}
    assert reasons == {"a": ("low_score",), "c": ("swap_disagreement",)}
    assert store.enqueue(js, cases, review_below=0.5, audit_rate=1.0) == 2  # b and d drawn for audit; a, c not again
    with pytest.raises(ReviewError, match="no case"):
        store.enqueue([judgment("zzz", "relevance", 0.1)], cases, review_below=0.5)

    items = {i.trace_id: i for i in store.items()}
    store.annotate(items["a"].item_id, "accept", reviewer="ann")
    store.annotate(items["c"].item_id, "note", note="cast is similar")
    fixed = store.annotate(items["c"].item_id, "correct", label="fail", note="but all thrillers", reviewer="bob")
    assert (
        fixed.human_label == "fail" and fixed.note == "cast is similar\nbut all thrillers" and fixed.reviewer == "bob"
    )
    store.annotate(items["b"].item_id, "skip")
    with pytest.raises(ReviewError, match="needs a label"):
        store.annotate(items["d"].item_id, "correct", label="maybe")
    assert store.counts() == {"accepted": 1, "corrected": 1, "skipped": 1, "pending": 1}


def test_golden_sets_are_versioned_immutable_and_keep_provenance(store):
    js = [judgment(t, "slate_variety", s, orders=o) for t, s, o in (("a", 0.2, (0.1, 0.3)), ("c", 0.6, (0.9, 0.3)))]
    store.enqueue(js, [case("a"), case("c")], review_below=0.5)
    with pytest.raises(ReviewError, match="nothing to publish"):
        store.publish("default")
    items = {i.trace_id: i for i in store.items()}
    store.annotate(items["a"].item_id, "accept", reviewer="ann")
    v1 = store.publish("default", description="first")
    assert (v1.version, v1.n_cases) == (1, 1)
    store.annotate(items["c"].item_id, "correct", label="fail", reviewer="bob")
    # a re-judged trace, reviewed again: its newer label replaces the old one in the next version
    store.enqueue([judgment("a", "slate_variety", 0.3, version="judge@v2")], [case("a")], review_below=0.5)
    again = next(i for i in store.items() if i.judge_version == "judge@v2")
    store.annotate(again.item_id, "correct", label="pass", reviewer="cy")
    v2 = store.publish("default")
    assert (v2.version, v2.n_cases) == (2, 2)

    first = store.golden_cases("default", 1)
    assert [(c.trace_id, c.label) for c in first] == [("a", "fail")]  # v1 unchanged
    latest = {c.trace_id: c for c in store.golden_cases("default")}
    assert latest["a"].label == "pass" and latest["a"].provenance["judge_version"] == "judge@v2"
    prov = latest["c"].provenance
    assert prov["trace_id"] == "c" and prov["reviewer"] == "bob" and prov["model_versions"] == ["itemknn", "pop"]
    assert prov["judge_version"] == "judge@v1" and prov["request_id"] == "r-c"
    assert [(s.set_name, s.version) for s in store.golden_sets()] == [("default", 1), ("default", 2)]
    with pytest.raises(ReviewError, match="no version 7"):
        store.golden_cases("default", 7)

    quality = golden_quality(store.golden_cases("default"), load_rubric())["slate_variety"]
    # judge labels: a fail(0.3), c pass(0.6); human: a pass, c fail -> total disagreement
    assert quality.n == 2 and quality.kappa == pytest.approx(-1.0) and quality.tpr == 0.0 and quality.tnr == 0.0
    assert not quality.may_gate
    fresh = golden_quality(
        store.golden_cases("default"),
        load_rubric(),
        judgments=[judgment("a", "slate_variety", 0.9), judgment("c", "slate_variety", 0.1)],
    )
    assert fresh["slate_variety"].kappa == pytest.approx(1.0)


def test_http_router_exposes_the_same_actions(store):
    store.enqueue([judgment("a", "relevance", 0.1)], [case("a")], review_below=0.5)
    app = FastAPI()
    app.state.auth = Authenticator.of({"web": (["read", "review", "publish"], "web-reviewer-key-0123")})
    app.include_router(review_router(store), prefix="/review")
    client = TestClient(app, headers={"X-API-Key": "web-reviewer-key-0123"})
    queue = client.get("/review/queue").json()
    assert queue["counts"] == {"pending": 1}
    item_id = queue["items"][0]["item_id"]
    assert client.post(f"/review/queue/{item_id}", json={"action": "correct"}).status_code == 422
    assert client.post("/review/queue/nope", json={"action": "accept"}).status_code == 404
    done = client.post(f"/review/queue/{item_id}", json={"action": "correct", "label": "pass"}).json()
    assert done["human_label"] == "pass" and done["status"] == "corrected" and done["reviewer"] == "web"
    assert client.post("/review/golden/web", json={"description": "from the API"}).json()["version"] == 1
    assert client.get("/review/golden/web").json()[0]["label"] == "pass"
    assert client.post("/review/golden/web", json={}).status_code == 409
