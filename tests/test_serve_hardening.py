"""A real uvicorn server on loopback: every bad input is a 4xx naming the problem, scopes hold,
reasons leak neither a stored history nor an excluded item, feedback retries are idempotent."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from coachrec.serve.auth import Authenticator
from coachrec.serve.disclosure import WITHHELD
from coachrec.serve.limits import RateLimit
from serve_helpers import KEYS, headers, synthetic_server

OPS = headers("ops")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with synthetic_server(tmp_path_factory.mktemp("hardening")) as (url, service):
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, service


def raw(client: httpx.Client, method: str, path: str, body: str, key: str = "ops") -> httpx.Response:
    return client.request(method, path, content=body.encode("utf-8", "surrogatepass"), headers=JSON | headers(key))


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [  # the 500s of the issue, each now a 422 naming the field
        ("POST", "/v1/feedback", '{"events":[{"request_id":"r","item":"1","kind":"click","position":2147483648}]}',
         "events.0.position"),
        ("POST", "/v1/feedback", '{"events":[{"request_id":"r","item":"1","kind":"click","time":1e11}]}',
         "events.0.time"),
        ("POST", "/v1/feedback", '{"events":[{"request_id":"r","item":"1","kind":"click","time":Infinity}]}',
         "events.0.time"),
        ("GET", "/v1/traces?since_minutes=1e13", "", "since_minutes"),
        ("GET", "/v1/traces?since_minutes=inf", "", "since_minutes"),
        ("POST", "/v1/recommend", '{"history":["1","\\ud800"]}', "history"),
        ("POST", "/v1/recommend", '{"context":"hi \\ud800"}', "context"),
        ("POST", "/v1/recommend", '{"context":[{"speaker":"seeker","text":"a\\u0000b"}]}', "context.0.text"),
        ("GET", "/v1/review/queue?limit=-1", "", "limit"),
        ("POST", "/v1/recommend", '{"user_id":"1","constraints":{"exclude_seen":0}}', "constraints.exclude_seen"),
        ("POST", "/v1/recommend", '{"user_id":"1","k":"10"}', "k"),
        ("POST", "/v1/recommend", '{"user_id":"' + "u" * 201 + '"}', "user_id"),
        ("POST", "/v1/recommend", json.dumps({"history": ["1"] * 10_001}), "history"),
        ("POST", "/v1/recommend", '{"history":["1"]', "body"),
        ("POST", "/v1/review/queue/x", '{"action":"note","note":"n","reviewer":"mallory"}', "reviewer"),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_field(server, method, path, body, field) -> None:
    client, _ = server
    r = raw(client, method, path, body)
    assert r.status_code == 422, r.text
    assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()


def test_no_failed_span_and_health_ok_after_bad_input(server) -> None:
    client, service = server
    raw(client, "POST", "/v1/recommend", '{"history":["\\ud800"]}')
    assert client.post("/v1/recommend", json={"user_id": "1"}, headers=OPS).status_code == 200
    service.store.flush()
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["spans"]["failed"] == 0, health


def test_bodies_over_the_limit_are_413_declared_or_streamed(server) -> None:
    client, _ = server
    big = b'{"history": [' + b'"1",' * 700_000 + b'"1"]}'
    assert client.post("/v1/recommend", content=big, headers=JSON | OPS).status_code == 413

    def chunks():  # no Content-Length: the server stops reading at the limit
        yield b'{"history": ['
        for _ in range(100):
            yield b'"1",' * 10_000
        yield b'"1"]}'

    r = client.post("/v1/recommend", content=chunks(), headers=JSON | OPS)
    assert r.status_code == 413 and "over" in r.json()["detail"]


def test_a_body_without_a_json_content_type_is_not_parsed(server) -> None:
    client, _ = server
    r = client.post("/v1/recommend", content=b'{"user_id": "1"}', headers={"content-type": "text/plain"} | OPS)
    assert r.status_code == 422


def test_a_foreign_host_header_is_refused(server) -> None:
    client, _ = server
    assert client.get("/health", headers={"host": "evil.example:80"}).status_code == 400  # DNS rebinding
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200


def test_each_route_needs_its_scope(server) -> None:
    client, _ = server
    rec = client.post("/v1/recommend", json={"user_id": "1", "k": 3}, headers=headers("frontend"))
    assert rec.status_code == 200
    event = {"events": [{"request_id": rec.json()["request_id"], "item": "1", "kind": "click"}]}
    assert client.post("/v1/recommend", json={"user_id": "1"}).status_code == 401  # recommend is guarded too
    assert client.post("/v1/feedback", json=event, headers=headers("frontend")).status_code == 403
    assert client.post("/v1/feedback", json=event, headers=headers("collector")).status_code == 200
    assert client.get("/v1/traces", headers=headers("collector")).status_code == 403
    assert client.get("/v1/traces", headers=headers("alice")).status_code == 200
    assert client.post("/v1/recommend", json={"user_id": "1"}, headers=headers("alice")).status_code == 403
    assert client.post("/v1/review/golden/x", json={}, headers=headers("alice")).status_code == 403  # no publish


def history_titles(service, user_id: str) -> list[str]:
    from coachrec.serve import RecommendRequest

    history, _ = service.pipeline.history_of(RecommendRequest(user_id=user_id))
    return service.pipeline.catalog.titles[history].tolist()


def test_reasons_quote_a_stored_history_only_to_a_reader(server) -> None:
    client, service = server
    titles = history_titles(service, "4")
    body = {"user_id": "4", "k": 10}
    as_ops = client.post("/v1/recommend", json=body, headers=OPS).json()["items"]
    as_frontend = client.post("/v1/recommend", json=body, headers=headers("frontend")).json()["items"]
    assert [i["item"] for i in as_ops] == [i["item"] for i in as_frontend]  # same slate
    assert any(t in i["reason"] for i in as_ops for t in titles)  # a reader sees "similar to <title>"
    assert not any(t in i["reason"] for i in as_frontend for t in titles)
    assert any(i["reason"] == WITHHELD for i in as_frontend)
    own = client.post("/v1/recommend", json={"history": ["1", "2"], "k": 5}, headers=headers("frontend")).json()
    assert any("similar to Film" in i["reason"] for i in own["items"])  # a caller's own history may be quoted
    r = client.post("/v1/recommend", json=body | {"constraints": {"exclude_seen": False}}, headers=headers("frontend"))
    assert r.status_code == 403 and "exclude_seen" in r.json()["detail"]


def test_reasons_never_name_an_item_the_constraints_exclude(server) -> None:
    client, service = server
    catalog = service.pipeline.catalog
    titles = history_titles(service, "4")
    quoted = {
        t
        for i in client.post("/v1/recommend", json={"user_id": "4", "k": 10}, headers=OPS).json()["items"]
        for t in titles
        if i["reason"] == f"similar to {t}"
    }
    assert quoted
    excluded = sorted(quoted)[0]
    item = catalog.decode(np.asarray([catalog.titles.tolist().index(excluded)]))[0]  # that history item's id
    body = {"user_id": "4", "k": 10, "constraints": {"exclude_items": [item]}}
    items = client.post("/v1/recommend", json=body, headers=OPS).json()["items"]
    assert not any(i["reason"] == f"similar to {excluded}" for i in items)


def test_a_feedback_retry_with_the_same_idempotency_key_stores_nothing_new(server) -> None:
    client, service = server
    events = {"events": [{"request_id": "idem", "item": "1", "kind": "click", "position": 0}]}
    key = OPS | {"Idempotency-Key": "batch-1"}
    first = client.post("/v1/feedback", json=events, headers=key).json()
    count = service.feedback.count()
    again = client.post("/v1/feedback", json=events, headers=key).json()
    assert again["event_ids"] == first["event_ids"] and again["replayed"] and not first["replayed"]
    assert service.feedback.count() == count
    other = {"events": [{"request_id": "idem", "item": "2", "kind": "click"}]}
    r = client.post("/v1/feedback", json=other, headers=key)
    assert r.status_code == 409 and "different batch" in r.json()["detail"]


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(tmp_path) -> None:
    auth = Authenticator(Authenticator.of(KEYS).keys, rate_limit=RateLimit(per_second=0.5, burst=2))
    with synthetic_server(tmp_path, auth=auth) as (url, _):
        codes = [httpx.get(f"{url}/v1/traces", headers=headers("alice")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = httpx.get(f"{url}/v1/traces", headers=headers("alice"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert httpx.get(f"{url}/v1/traces", headers=OPS).status_code == 200  # buckets are per key
