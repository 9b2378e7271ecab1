"""The HTTP API: recommend, feedback, traces, health; 4xx naming the field; API key."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from coachrec.app import create_app
from coachrec.models import create
from coachrec.review import ReviewStore
from coachrec.serve import FeedbackLog, Pipeline, Service
from coachrec.serve.auth import Authenticator
from coachrec.tracing import Tracer, TraceStore
from test_serve_pipeline import synthetic

SECRET = "s3cret-key-0123456789"
KEY = {"X-API-Key": SECRET}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = synthetic()
    store = TraceStore(tmp_path_factory.mktemp("api") / "t.duckdb")
    pipeline = Pipeline.from_models(
        [create("itemknn").fit(data), create("pop").fit(data)], data.catalog, tracer=Tracer(store)
    )
    service = Service(pipeline, store, FeedbackLog(store.path))
    review = ReviewStore(":memory:")
    with TestClient(create_app(service, auth=Authenticator.of({"ops": (["*"], SECRET)}), review=review)) as c:
        yield c
    review.close()
    service.close()


def test_recommend_feedback_traces_roundtrip(client) -> None:
    r = client.post(
        "/v1/recommend",
        json={"user_id": "4", "k": 5, "constraints": {"exclude_genres": ["Drama"], "ranges": {"year": {"min": 1960}}}},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["note"] is None
    assert all(i["reason"] and i["title"] for i in body["items"])
    rid = body["request_id"]
    events = [
        {"request_id": rid, "item": i["item"], "kind": "impression", "position": i["position"]} for i in body["items"]
    ]
    events += [{"request_id": rid, "item": body["items"][1]["item"], "kind": "watch", "value": 0.9, "position": 1}]
    f = client.post("/v1/feedback", json={"events": events}, headers=KEY)
    assert f.status_code == 200, f.text
    assert f.json()["accepted"] == 6 and f.json()["durable"]
    t = client.get(f"/v1/traces/{rid}", headers=KEY)  # a request id resolves to its trace
    assert t.status_code == 200
    spans = {s["name"]: s for s in t.json()["spans"]}
    assert spans["rank"]["metrics"]["recall@10"] == 1.0  # background task ran after the response
    assert len(t.json()["feedback"]) == 6
    listed = client.get("/v1/traces", params={"kind": "GUARDRAIL", "limit": 5}, headers=KEY).json()["traces"]
    assert any(row["trace_id"] == body["trace_id"] for row in listed)
    assert client.get("/health").json()["status"] == "ok"
    assert "/v1/recommend" in client.get("/openapi.json").json()["paths"]


def test_fewer_than_k_says_so(client) -> None:
    r = client.post(
        "/v1/recommend",
        json={"history": ["1"], "k": 20, "constraints": {"ranges": {"year": {"min": 2018}}}},
        headers=KEY,
    )
    assert r.status_code == 200
    assert len(r.json()["items"]) < 20 and "constraints allow only" in r.json()["note"]


def test_a_reversed_range_is_schema_valid_and_empty(client) -> None:
    r = client.post(
        "/v1/recommend",
        json={"history": ["1"], "constraints": {"ranges": {"year": {"min": 2000, "max": 1990}}}},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [] and "constraints allow only 0" in r.json()["note"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/recommend", {"user_id": "1", "k": 0}, "k"),
        ("/v1/recommend", {"user_id": "1", "k": "ten"}, "k"),
        ("/v1/recommend", {"k": 5}, "give a user_id or an anonymous history"),
        ("/v1/recommend", {"user_id": "1", "constraints": {"exclude_genres": ["Horor"]}}, "constraints.exclude_genres"),
        (
            "/v1/recommend",
            {"user_id": "1", "constraints": {"ranges": {"colour": {"min": 1}}}},
            "constraints.ranges.colour",
        ),
        ("/v1/recommend", {"user_id": "1", "colour": "red"}, "colour"),
        ("/v1/feedback", {"events": []}, "events"),
        ("/v1/feedback", {"events": [{"request_id": "r", "item": "1", "kind": "like"}]}, "events.0.kind"),
        ("/v1/feedback", {"events": [{"request_id": "r", "item": "1", "kind": "watch", "value": 3}]}, "events.0.value"),
        ("/v1/feedback", {"events": [{"request_id": "r", "item": "1", "kind": "impression"}]}, "position"),
        (
            "/v1/feedback",
            {"events": [{"request_id": "r", "item": "1", "kind": "click", "position": -1}]},
            "events.0.position",
        ),
    ],
)
def test_malformed_input_is_4xx_naming_the_field(client, path, body, field) -> None:
    r = client.post(path, json=body, headers=KEY)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.json()["detail"], r.json()


def test_unknown_user_is_404_naming_user_id(client) -> None:
    r = client.post("/v1/recommend", json={"user_id": "nobody"}, headers=KEY)
    assert r.status_code == 404 and "user_id" in r.json()["detail"]


def test_write_and_admin_endpoints_need_the_key(client) -> None:
    event = {"events": [{"request_id": "r", "item": "1", "kind": "click"}]}
    assert client.post("/v1/feedback", json=event).status_code == 401
    assert client.post("/v1/feedback", json=event, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/feedback", json=event, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    assert client.get("/v1/traces").status_code == 401
    assert client.get("/v1/traces/nope", headers=KEY).status_code == 404


def test_review_endpoints_are_mounted_behind_the_key(client) -> None:
    assert client.get("/v1/review/queue").status_code == 401
    r = client.get("/v1/review/queue", headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
    assert client.get("/v1/review/golden", headers=KEY).status_code == 200
    assert client.post("/v1/review/queue/nope", json={"action": "dance"}, headers=KEY).status_code == 422


def test_two_stores_in_one_folder_get_their_own_review_store(tmp_path) -> None:
    from coachrec.review import default_review_path, review_path_for

    a, b = review_path_for(tmp_path / "a.duckdb"), review_path_for(tmp_path / "b.duckdb")
    assert a != b and a.parent == b.parent == tmp_path and a.name == "a.review.duckdb"
    assert default_review_path().name == "traces.review.duckdb"


def test_a_repeated_query_parameter_is_422_naming_it(client) -> None:
    r = client.get("/v1/review/queue?criterion=a&criterion=b&limit=5", headers=KEY)
    assert r.status_code == 422 and "criterion" in r.json()["detail"] and "limit" not in r.json()["detail"]
    assert client.get("/v1/review/queue?criterion=a&limit=5", headers=KEY).status_code == 200
