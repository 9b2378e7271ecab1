"""The dashboard's queries and routes over a real store: traces served by a real pipeline on the
bundled MovieLens, judged by the teacher's program checks, queued for review (no browser here;
test_dashboard_browser.py drives Chromium)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coachrec.coach.registry import Registry
from coachrec.dashboard import dashboard_app, titles_of
from coachrec.dashboard.review_views import conflicts, golden_diff, reviewer_progress
from coachrec.dashboard.traces import QueryError, TraceFilter, trace_page, trace_view
from coachrec.models import create
from coachrec.policy import Constraints, Range
from coachrec.review import ReviewStore
from coachrec.serve import FeedbackLog, Pipeline, RecommendRequest
from coachrec.serve.auth import Authenticator
from coachrec.serve.feedback import FeedbackEvent, feedback_path_for
from coachrec.serve.pipeline import UnknownUserError
from coachrec.teacher import CatalogView, Judge, cases_from_store, failure_report, load_rubric, record
from coachrec.tracing import Tracer, TraceStore

KEYS = {
    "alice": (["read", "review", "publish"], "alice-key-0123456789"),
    "bob": (["read", "review"], "bob-key-0123456789ab"),
    "ops": (["*"], "ops-key-0123456789abc"),
    "viewer": (["read"], "viewer-key-0123456789"),
}


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name][1]}


@dataclass
class Filled:
    store: TraceStore
    feedback: FeedbackLog
    review: ReviewStore
    titles: dict[str, str]
    pipeline: Pipeline
    trace_ids: list[str]
    """In serving order; the first two are the same request served twice."""
    error_trace_id: str
    """A request for an unknown user: its trace ends in ERROR."""


def fill(folder: Path, data, n_users: int = 24) -> Filled:
    """Serve real requests (a third with constraints that leave fewer than k items), record
    feedback on a few, judge every trace with the program checks and queue the doubtful verdicts
    (plus an audit share) for review."""
    store = TraceStore(folder / "traces.duckdb")
    feedback = FeedbackLog(feedback_path_for(store.path))
    models = [create("itemknn").fit(data), create("pop").fit(data)]
    pipeline = Pipeline.from_models(models, data.catalog, tracer=Tracer(store))
    users = sorted(data.users.ids, key=int)[:n_users]
    requests = [RecommendRequest(user_id=users[0], k=10), RecommendRequest(user_id=users[0], k=10)]
    for n, user in enumerate(users[1:]):
        constraints = Constraints()
        if n % 3 == 1:
            constraints = Constraints(exclude_genres=("Drama", "Comedy"))
        elif n % 3 == 2:
            constraints = Constraints(
                ranges={"year": Range(min=2010)}, require_genres=("Horror", "Romance"), require_all_genres=True
            )
        requests.append(RecommendRequest(user_id=user, k=10, constraints=constraints))
    trace_ids = []
    for request in requests:
        result = pipeline.recommend(request)
        assert result.trace_id is not None
        trace_ids.append(result.trace_id)
        if len(trace_ids) % 4 == 0 and result.items:
            feedback.append(
                [
                    FeedbackEvent(result.request_id, result.items[0], "impression", position=0),
                    FeedbackEvent(result.request_id, result.items[0], "click", position=0),
                ]
            )
    with pytest.raises(UnknownUserError):
        pipeline.recommend(RecommendRequest(user_id="no-such-user"))
    store.flush()
    (error_trace_id,) = {
        r[0] for r in store._cursor().execute("SELECT trace_id FROM spans WHERE status = 'ERROR'").fetchall()
    }
    judge = Judge(load_rubric(), CatalogView(data.catalog))
    cases = cases_from_store(store, trace_ids)
    judgments = judge.judge(cases)
    record(store, judgments)
    review = ReviewStore(folder / "traces.review.duckdb")
    review.enqueue(judgments, cases, review_below=0.5, audit_rate=0.1, seed=1)
    titles = titles_of(pipeline.catalog.ids.tolist(), pipeline.catalog.titles.tolist())
    return Filled(store, feedback, review, titles, pipeline, trace_ids, error_trace_id)


@pytest.fixture(scope="module")
def filled(tmp_path_factory, ml_small):
    f = fill(tmp_path_factory.mktemp("dash"), ml_small)
    yield f
    f.review.close()
    f.feedback.close()
    f.store.close()


@pytest.fixture(scope="module")
def client(filled, tmp_path_factory):
    app = dashboard_app(
        filled.store,
        auth=Authenticator.of(KEYS),
        feedback=filled.feedback,
        review=filled.review,
        registry=Registry(tmp_path_factory.mktemp("registry")),
        titles=filled.titles,
    )
    with TestClient(app) as c:
        yield c


def test_keyset_pages_cover_every_trace_once_newest_first(filled) -> None:
    seen, cursor = [], None
    while True:
        page = trace_page(filled.store, TraceFilter(), cursor=cursor, limit=7)
        seen += [r["start_ns"] for r in page.rows]
        ids = [r["trace_id"] for r in page.rows]
        assert len(ids) == len(set(ids))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(filled.trace_ids) + 1 and seen == sorted(seen, reverse=True)


def test_filters_select_what_they_name(filled) -> None:
    store = filled.store
    mode_rows = trace_page(store, TraceFilter(failure_mode="short_slate"), limit=500).rows
    assert mode_rows and all("short_slate" in r["failure_modes"] for r in mode_rows)
    failed = {e["trace_id"] for e in store.evaluations(name="slate_complete").to_pylist() if e["label"] == "fail"}
    assert {r["trace_id"] for r in mode_rows} == failed
    user = filled.store.trace(filled.trace_ids[0])[0].user_id
    by_user = trace_page(store, TraceFilter(user_id=user), limit=500).rows
    assert {r["trace_id"] for r in by_user} == set(filled.trace_ids[:2])
    slowest = max(trace_page(store, TraceFilter(), limit=500).rows, key=lambda r: r["duration_ms"])
    assert [r["trace_id"] for r in trace_page(store, TraceFilter(min_ms=slowest["duration_ms"]), limit=500).rows] == [
        slowest["trace_id"]
    ]
    assert trace_page(store, TraceFilter(model="itemknn"), limit=500).rows
    assert not trace_page(store, TraceFilter(model="sasrec"), limit=500).rows
    assert not trace_page(store, TraceFilter(error="no such error text"), limit=500).rows
    errors = trace_page(store, TraceFilter(error="UNKNOWN user 'no-such"), limit=500).rows  # case-insensitive
    assert [r["trace_id"] for r in errors] == [filled.error_trace_id] and errors[0]["errors"] == 1
    assert [r["trace_id"] for r in trace_page(store, TraceFilter(status="ERROR"), limit=500).rows] == [
        filled.error_trace_id
    ]
    assert not trace_page(store, TraceFilter(error="100%_"), limit=500).rows  # LIKE wildcards are literal
    with pytest.raises(QueryError, match="kind"):
        TraceFilter(kind="NOPE")


def test_trace_view_lays_out_tree_slate_feedback_and_verdicts(filled) -> None:
    view = trace_view(filled.store, filled.feedback, filled.trace_ids[3])  # the 4th request got feedback
    assert view is not None
    assert view.nodes[0].span.name == "recommend" and view.nodes[0].depth == 0
    assert {n.span.name for n in view.nodes if n.depth == 2} >= {"retrieve.itemknn", "retrieve.pop"}
    assert len(view.slate) == 10 and [r["position"] for r in view.slate] == list(range(10))
    assert set(view.retrievers) == {"itemknn", "pop"}
    assert any(r["sources"]["itemknn"] is not None for r in view.slate)
    assert all(r["reason"] for r in view.slate)
    assert sorted(view.slate[0]["feedback"]) == ["click", "impression"]
    assert {v["criterion"] for v in view.verdicts} >= {"constraint_adherence", "slate_complete"}
    assert all(v["span_name"] for v in view.verdicts)
    by_request = trace_view(filled.store, filled.feedback, view.request_id or "")
    assert by_request is not None and by_request.trace_id == view.trace_id
    assert trace_view(filled.store, filled.feedback, "nope") is None


def test_pages_need_read_and_actions_their_scope(client, filled) -> None:
    assert client.get("/ui/traces", follow_redirects=False).status_code == 303  # to the sign-in page
    assert client.get("/ui/api/traces").status_code == 401
    a, b = filled.trace_ids[:2]
    pages = ["/ui/traces", f"/ui/traces/{a}", "/ui/failures", "/ui/review", "/ui/golden", "/ui/versions", "/ui/cost"]
    for path in [*pages, f"/ui/compare?a={a}&b={b}"]:
        r = client.get(path, headers=key("viewer"))
        assert r.status_code == 200, (path, r.text[:300])
        assert "cdn" not in r.text.lower() and "https://" not in r.text
    item = filled.review.items()[0]
    body = {"action": "accept"}
    assert client.post(f"/ui/api/review/{item.item_id}", json=body, headers=key("viewer")).status_code == 403
    assert client.post("/ui/api/golden/x", json={}, headers=key("bob")).status_code == 403
    assert client.post("/ui/api/registry/rollback", json={"note": "n"}, headers=key("alice")).status_code == 403
    rollback = client.post("/ui/api/registry/rollback", json={"note": "n"}, headers=key("ops"))
    assert rollback.status_code == 409 and "nothing to roll back" in rollback.json()["detail"]
    assert client.get("/ui/api/traces?min_ms=fast", headers=key("viewer")).status_code == 422
    assert client.get("/ui/api/traces?cursor=zzz", headers=key("viewer")).status_code == 422
    assert client.get("/ui/traces/nope", headers=key("viewer")).status_code == 404
    assert client.get("/ui/static/app.js").status_code == 200
    assert client.get("/ui/static/..%2Fapp.py").status_code == 404


def test_sign_in_cookie_carries_the_key(client) -> None:
    r = client.post("/ui/login", data={"key": "wrong-key-0123456789", "next": ""})
    assert r.status_code == 401 and "invalid API key" in r.text
    r = client.post("/ui/login", data={"key": KEYS["viewer"][1], "next": "/ui/failures"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/failures"
    for elsewhere in ("//evil.example/x", "/\\evil.example", "https://evil.example"):
        r = client.post("/ui/login", data={"key": KEYS["viewer"][1], "next": elsewhere}, follow_redirects=False)
        assert r.headers["location"] == "/ui/traces"  # never off this server
    assert client.get("/ui/api/failures").status_code == 200
    client.post("/ui/logout")
    assert client.get("/ui/api/failures").status_code == 401


def test_reviewer_is_the_key_and_conflicts_and_diff_show(client, filled) -> None:
    items = filled.review.items()
    assert len(items) >= 3
    a, b = items[0], items[1]
    assert (
        client.post(f"/ui/api/review/{a.item_id}", json={"action": "accept"}, headers=key("alice")).json()["reviewer"]
        == "alice"
    )
    v1 = client.post("/ui/api/golden/dash", json={"description": "first"}, headers=key("alice"))
    assert v1.status_code == 200 and v1.json()["version"] == 1
    flip = "pass" if b.judge_label == "fail" else "fail"
    out = client.post(f"/ui/api/review/{b.item_id}", json={"action": "correct", "label": flip}, headers=key("bob"))
    assert out.status_code == 200 and out.json()["reviewer"] == "bob"
    assert client.post("/ui/api/golden/dash", json={}, headers=key("alice")).json()["version"] == 2
    diff = golden_diff(filled.review, "dash")
    assert (diff.version, diff.previous, [c.trace_id for c in diff.added]) == (2, 1, [b.trace_id])
    assert diff.unchanged == 1 and not diff.removed
    assert client.post("/ui/api/golden/dash", json={}, headers=key("alice")).status_code == 409  # nothing new
    progress = {r["reviewer"]: r for r in reviewer_progress(filled.review)}
    assert progress["alice"]["accepted"] >= 1 and progress["bob"]["corrected"] >= 1
    # a second judge version queues the same case again; two reviewers label it differently
    again = filled.review.items(status="accepted")[0]
    row = filled.review._cursor().execute("SELECT * FROM review_queue WHERE item_id = ?", [again.item_id]).fetchone()
    assert row is not None
    copy = ["copy-" + again.item_id, *row[1:8], "judge@v2", *row[9:13], "pending", None, None, None, row[17] + 1, None]
    filled.review._cursor().execute(f"INSERT INTO review_queue VALUES ({', '.join('?' * len(copy))})", copy)
    other = "pass" if again.human_label == "fail" else "fail"
    client.post(f"/ui/api/review/copy-{again.item_id}", json={"action": "correct", "label": other}, headers=key("bob"))
    found = conflicts(filled.review)
    assert [(c["trace_id"], sorted(x["reviewer"] for x in c["labels"])) for c in found] == [
        (again.trace_id, sorted([again.reviewer or "", "bob"]))
    ]
    page = client.get("/ui/golden/dash?version=2", headers=key("viewer")).text
    assert "1 added" in page and b.trace_id[:10] in page


def test_failures_and_cost_read_the_stores(client, filled) -> None:
    data = client.get("/ui/api/failures", headers=key("viewer")).json()
    modes = {m["name"]: m for m in data["modes"]}
    assert "short_slate" in modes
    m = modes["short_slate"]
    assert sum(p["failed"] for p in m["over_time"]) == m["count"] and m["by_span"]
    ref = failure_report(filled.store)  # the teacher's own count, decoded in Python
    assert [(r.name, r.criterion, r.count, r.judged, r.span, list(r.examples), r.why) for r in ref.modes] == [
        (x["name"], x["criterion"], x["count"], x["judged"], x["span"], x["examples"][:3], x["why"])
        for x in data["modes"]
    ]
    assert (data["judged_traces"], data["judge_versions"]) == (ref.judged_traces, ref.judge_versions)
    cost = client.get("/ui/api/cost", headers=key("viewer")).json()
    assert sum(p["requests"] for p in cost["series"]["no LLM"]) == len(filled.trace_ids) + 1
    detail = client.get(f"/ui/api/traces/{filled.trace_ids[0]}", headers=key("viewer")).json()
    assert detail["trace_id"] == filled.trace_ids[0] and json.dumps(detail)  # JSON all the way down
    same = client.get(f"/ui/api/traces/{filled.trace_ids[0]}/same-request", headers=key("viewer")).json()
    assert [s["trace_id"] for s in same["traces"]] == [filled.trace_ids[1]]


def test_cli_serves_a_store_alone(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    store = TraceStore(tmp_path / "alone.duckdb")
    tracer = Tracer(store)
    with tracer.trace_request("recommend", user_id="7", input={"k": 1}) as root:
        with tracer.span("retrieve", kind="RETRIEVER") as span:
            span.set_output({"items": ["1"], "scores": [1.0]})
    store.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "COACHREC_API_KEYS": f"ann:read:{KEYS['viewer'][1]}", "COACHREC_REGISTRY": str(tmp_path / "r")}
    cli = str(Path(sys.executable).with_name("coachrec"))
    cmd = [cli, "dashboard", "--db", str(tmp_path / "alone.duckdb"), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ui/api/traces", headers=key("viewer"), timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "coachrec dashboard did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and [t["trace_id"] for t in r.json()["traces"]] == [root.trace_id]
        assert httpx.get(f"http://127.0.0.1:{port}/ui/api/traces", timeout=2).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(("chunk", "probes"), [(3, 2), (1000, 2), (2, 0)])
def test_span_filters_page_the_same_whichever_way_they_are_checked(filled, monkeypatch, chunk, probes) -> None:
    """Span conditions are probed on the newest root rows first, then semi-joined: both give the same pages."""
    from coachrec.dashboard import traces

    monkeypatch.setattr(traces, "PROBE_CHUNK", chunk)
    monkeypatch.setattr(traces, "PROBES", probes)
    spans = filled.store.spans(columns=["trace_id", "kind", "status", "name"]).to_pylist()
    for f, want in (
        (TraceFilter(kind="POLICY"), {s["trace_id"] for s in spans if s["kind"] == "POLICY"}),
        (TraceFilter(status="ERROR"), {filled.error_trace_id}),
        (TraceFilter(model="pop", kind="GUARDRAIL"), {s["trace_id"] for s in spans if s["name"] == "retrieve.pop"}),
    ):
        got, cursor = [], None
        while True:
            page = trace_page(filled.store, f, cursor=cursor, limit=4)
            got += [r["start_ns"] for r in page.rows if r["trace_id"] in want]
            assert all(r["trace_id"] in want for r in page.rows)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(got) == len(want) and got == sorted(got, reverse=True)
