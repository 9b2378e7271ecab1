"""`GET /v1/monitor` over a served app: typed drift per column and the alarm; read scope; 4xx on
bad windows."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from coachrec.app import create_app
from coachrec.models import create
from coachrec.serve import FeedbackEvent, FeedbackLog, Pipeline, Service
from coachrec.serve.auth import Authenticator
from coachrec.tracing import Tracer, TraceStore
from test_serve_pipeline import GENRES, synthetic

SECRET = "monitor-key-0123456789"
FEEDER = "feeder-key-0123456789"


def test_the_monitor_route_reports_a_planted_shift_in_constraint_use(tmp_path):
    data = synthetic()
    store = TraceStore(tmp_path / "t.duckdb")
    pipeline = Pipeline.from_models([create("pop").fit(data)], data.catalog, tracer=Tracer(store))
    service = Service(pipeline, store, FeedbackLog(store.path))
    auth = Authenticator.of({"ops": (["read", "recommend"], SECRET), "feeder": (["ingest"], FEEDER)})
    app = create_app(service, auth=auth)
    users = data.users.ids.tolist()
    with TestClient(app) as client:
        for u in users[:40]:  # reference: no constraints
            assert client.post("/v1/recommend", json={"user_id": u, "k": 5}, headers={"X-API-Key": SECRET}).is_success
        store.flush()
        cut = time.time()
        time.sleep(1.0)
        for u in users[40:80]:  # current: every request asks for a genre
            body = {"user_id": u, "k": 5, "constraints": {"require_genres": [GENRES[0]]}}
            assert client.post("/v1/recommend", json=body, headers={"X-API-Key": SECRET}).status_code == 200
        service.record_feedback([FeedbackEvent("nope", "1", "click", position=0)])
        store.flush()

        def windows() -> tuple[float, dict[str, str]]:
            """Ages are relative to each request's arrival: recomputed per request, so a slow
            machine does not age the current requests out of their window between calls."""
            ago = time.time() - cut
            return ago, {"reference": f"{ago + 60:.2f}s..{ago:.2f}s", "current": f"{ago - 0.5:.2f}s..0s"}

        ago, params = windows()
        r = client.get("/v1/monitor", params=params, headers={"X-API-Key": SECRET})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reference"]["requests"] == 40 and body["current"]["requests"] == 40
        by_name = {c["column"]: c for c in body["columns"]}
        constraints = by_name["uses_constraints"]
        assert constraints["group"] == "inputs" and constraints["test"] == "z" and constraints["drifted"]
        assert constraints["p_value"] is not None and constraints["p_value"] < 1e-6
        assert body["alarm"]["drifted"] and "uses_constraints" in body["alarm"]["drifted_columns"]
        psi = client.get("/v1/monitor", params={**params, "test": "psi"}, headers={"X-API-Key": SECRET}).json()
        assert {c["test"] for c in psi["columns"]} == {"psi"}
        # scope, bad input and empty windows: 4xx naming the problem
        assert client.get("/v1/monitor", params=params).status_code == 401
        assert client.get("/v1/monitor", params=params, headers={"X-API-Key": FEEDER}).status_code == 403
        bad = client.get("/v1/monitor", params={"reference": "yesterday"}, headers={"X-API-Key": SECRET})
        assert bad.status_code == 422 and "reference" in bad.text
        # a window is the span between two ages: the reversed order reads the same span
        ago, params = windows()
        flipped = {**params, "reference": f"{ago:.2f}s..{ago + 60:.2f}s"}
        backwards = client.get("/v1/monitor", params=flipped, headers={"X-API-Key": SECRET})
        assert backwards.status_code == 200 and backwards.json()["reference"]["requests"] == 40
        empty = client.get(
            "/v1/monitor", params={"reference": "30d..20d", "current": "1h..0s"}, headers={"X-API-Key": SECRET}
        )
        assert empty.status_code == 404 and "reference window" in empty.text
        # an age before the epoch (schema-valid digits) is clamped to the epoch, not a 500
        ancient = {**windows()[1], "reference": "426902470992750039606884314h..0s"}
        since = client.get("/v1/monitor", params=ancient, headers={"X-API-Key": SECRET})
        assert since.status_code == 200 and since.json()["reference"]["since_ns"] == 0, since.text
        assert client.get("/v1/monitor", params={"test": "t-test"}, headers={"X-API-Key": SECRET}).status_code == 422
    service.close()
