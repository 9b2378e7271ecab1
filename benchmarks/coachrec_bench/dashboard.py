"""Dashboard benchmark: the trace list and a trace page over a store of 100k traces.

The store is built from real served requests: `--seed-requests` requests of ml-latest-small
users go through a real pipeline (item-kNN + popularity, the standard stages) and are judged
by the teacher's program checks; their spans and verdicts are then copied with fresh trace,
span and request ids, other user ids and start times spread over 30 days until the store holds
`--traces` traces (payloads, span layout and verdict mix are the served ones). Timings are
server-side, through the dashboard's routes in-process (FastAPI TestClient: routing, queries,
JSON or HTML rendering; no network), each repeated and reported as p50 / p95 / min with the
1-minute load average (on a shared machine the minimum is the closest to an idle one).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from coachrec_bench.results import row, write

DAY_NS = 86_400 * 10**9


def _build(folder: Path, traces: int, seed_requests: int, seed: int) -> tuple[Any, list[str], float]:
    from coachrec import datasets
    from coachrec.models import create
    from coachrec.policy import Constraints, Range
    from coachrec.serve import Pipeline, RecommendRequest
    from coachrec.teacher import CatalogView, Judge, cases_from_store, load_rubric, record
    from coachrec.tracing import SpanRecord, Tracer, TraceStore
    from coachrec.tracing.model import new_span_id, new_trace_id

    data = datasets.load("ml-latest-small")
    assert data.catalog is not None
    rng = random.Random(seed)
    source = TraceStore(":memory:")
    pipeline = Pipeline.from_models(
        [create("itemknn").fit(data), create("pop").fit(data)], data.catalog, tracer=Tracer(source)
    )
    users = list(data.users.ids)
    served = []
    for n in range(seed_requests):
        constraints = Constraints()
        if n % 4 == 1:
            constraints = Constraints(exclude_genres=("Drama",))
        elif n % 4 == 3:
            constraints = Constraints(
                ranges={"year": Range(min=2010)}, require_genres=("Horror", "Romance"), require_all_genres=True
            )
        result = pipeline.recommend(RecommendRequest(user_id=rng.choice(users), k=10, constraints=constraints))
        assert result.trace_id is not None
        served.append(result.trace_id)
    source.flush()
    cases = cases_from_store(source, served)
    judgments = Judge(load_rubric(), CatalogView(data.catalog)).judge(cases)
    record(source, judgments)
    templates = [source.trace(t) for t in served]
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for e in source.evaluations().to_pylist():
        verdicts.setdefault(e["trace_id"], []).append(e)
    source.close()

    store = TraceStore(folder / "traces.duckdb", batch_size=50_000)
    t0 = time.perf_counter()
    start = time.time_ns() - 30 * DAY_NS
    step = 30 * DAY_NS // traces
    batch: list[SpanRecord] = []
    evaluations: list[list[Any]] = []
    ids = []
    for n in range(traces):
        spans = templates[n % len(templates)]
        trace_id, request_id, user = new_trace_id(), new_trace_id(), rng.choice(users)
        shift = start + n * step + rng.randrange(step) - spans[0].start_ns
        new_ids = {s.span_id: new_span_id() for s in spans}
        for s in spans:
            batch.append(
                s._replace(
                    trace_id=trace_id,
                    span_id=new_ids[s.span_id],
                    parent_span_id=new_ids.get(s.parent_span_id) if s.parent_span_id else None,
                    start_ns=s.start_ns + shift,
                    end_ns=s.end_ns + shift,
                    user_id=user,
                    request_id=request_id,
                )
            )
        for e in verdicts.get(spans[0].trace_id, []):
            evaluations.append(
                [
                    new_trace_id(),
                    new_ids[e["span_id"]],
                    trace_id,
                    e["name"],
                    e["score"],
                    e["label"],
                    e["explanation"],
                    e["evaluator"],
                    e["attributes"],
                    e["created_ns"] + shift,
                ]
            )
        ids.append(trace_id)
        if len(batch) >= 50_000:
            store.write(batch)
            batch = []
    store.write(batch)
    import pyarrow as pa

    columns = ["evaluation_id", "span_id", "trace_id", "name", "score", "label", "explanation", "evaluator",
               "attributes", "created_ns"]  # fmt: skip
    table = pa.table(dict(zip(columns, (list(c) for c in zip(*evaluations, strict=True)), strict=True)))
    con = store._cursor()
    con.register("_bench_evaluations", table)
    con.execute("INSERT INTO evaluations SELECT * FROM _bench_evaluations")
    con.unregister("_bench_evaluations")
    return store, ids, time.perf_counter() - t0


def _open_or_build(folder: Path, traces: int, seed_requests: int, seed: int) -> tuple[Any, list[str], float | None]:
    """The store kept in `folder` by an earlier run with the same sizes, else a new one."""
    from coachrec.tracing import TraceStore

    stamp = folder / "built.txt"
    if stamp.exists() and stamp.read_text().split("\n", 1)[0] == f"{traces} {seed_requests} {seed}":
        return TraceStore(folder / "traces.duckdb"), stamp.read_text().split("\n")[1:], None
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("traces*.duckdb*"):
        old.unlink()
    store, ids, seconds = _build(folder, traces, seed_requests, seed)
    stamp.write_text("\n".join([f"{traces} {seed_requests} {seed}", *ids]))
    return store, ids, seconds


def _time(client: Any, url: str, headers: dict[str, str], repeat: int) -> dict[str, float]:
    client.get(url, headers=headers)  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url, headers=headers)
        samples.append((time.perf_counter() - t0) * 1e3)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:200]}")
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2),
        "min_ms": round(samples[0], 2),
        "load_1m": round(os.getloadavg()[0], 2),
        "n": repeat,
    }


def bench_dashboard(
    traces: int = typer.Option(100_000, help="traces in the store"),
    seed_requests: int = typer.Option(200, help="real served requests whose spans are copied"),
    repeat: int = typer.Option(30, help="timed requests per route"),
    seed: int = 0,
    keep: Path | None = typer.Option(None, "--keep", help="build the store in this folder, or reuse the one there"),
) -> None:
    """Dashboard routes over a 100k-trace DuckDB store: first page, filtered and deep pages, a trace page."""
    from fastapi.testclient import TestClient
    from rich.console import Console
    from rich.table import Table

    from coachrec.dashboard import dashboard_app
    from coachrec.review import ReviewStore
    from coachrec.serve.auth import Authenticator
    from coachrec.serve.feedback import FeedbackLog

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        store, ids, load_s = _open_or_build(folder, traces, seed_requests, seed)
        spans = store.count()
        size_mb = round(os.path.getsize(store.path) / 1e6, 1)
        feedback = FeedbackLog(store.path)
        review = ReviewStore(folder / "traces.review.duckdb")
        key = "bench-key-0123456789"
        app = dashboard_app(store, auth=Authenticator.of({"bench": (["read"], key)}), feedback=feedback, review=review)
        headers = {"X-API-Key": key}
        rows: list[dict[str, Any]] = []
        with TestClient(app) as client:
            first = client.get("/ui/api/traces", headers=headers).json()
            cursor = first["next_cursor"]
            for _ in range(19):  # page 21
                cursor = client.get(f"/ui/api/traces?cursor={cursor}", headers=headers).json()["next_cursor"]
            user = store.trace(ids[len(ids) // 2])[0].user_id
            routes = {
                "traces: first page (JSON, 50 rows)": "/ui/api/traces",
                "traces: first page (HTML)": "/ui/traces",
                "traces: page 21 by cursor": f"/ui/api/traces?cursor={cursor}",
                "traces: filter failure_mode=short_slate": "/ui/api/traces?failure_mode=short_slate",
                "traces: filter user": f"/ui/api/traces?user_id={user}",
                "traces: filter span kind POLICY and latency >= 10 ms": "/ui/api/traces?kind=POLICY&min_ms=10",
                "traces: filter error text (no match: full scan)": "/ui/api/traces?error=timeout",
                "traces: filter last 2 days": "/ui/api/traces?since=2d",
                "trace page (JSON)": f"/ui/api/traces/{ids[len(ids) // 3]}",
                "trace page (HTML)": f"/ui/traces/{ids[len(ids) // 3]}",
            }
            slow = {"failure modes page (JSON: every verdict counted)": "/ui/api/failures"}
            for name, url in {**routes, **slow}.items():
                metrics = _time(client, url, headers, repeat if name in routes else max(3, repeat // 10))
                rows.append(
                    row(
                        f"dashboard {name}",
                        f"{traces:,} traces ({spans:,} spans, {size_mb} MB DuckDB) copied from {seed_requests} served "
                        "ml-latest-small requests",
                        f"server-side, in-process TestClient, {metrics['n']} requests after one warm-up; p50/p95/min",
                        {**metrics, "url": url},
                    )
                )
        if load_s is not None:
            rows.append(
                row(
                    "dashboard store build",
                    f"{traces:,} traces",
                    "synchronous TraceStore.write of the copied spans (50k-span batches) plus evaluations",
                    {"seconds": round(load_s, 1), "spans": spans, "size_mb": size_mb},
                )
            )
        review.close()
        feedback.close()
        store.close()
    path = write("dashboard", rows)
    table = Table(title=f"dashboard benchmark → {path}")
    for col in ("route", "p50 ms", "p95 ms", "min ms", "load"):
        table.add_column(col, justify="left" if col == "route" else "right")
    for r in rows:
        if "p50_ms" in r["metrics"]:
            m = r["metrics"]
            table.add_row(
                r["name"], f"{m['p50_ms']:.1f}", f"{m['p95_ms']:.1f}", f"{m['min_ms']:.1f}", f"{m['load_1m']:.1f}"
            )
    Console().print(table)
    Console().print(f"store: {spans:,} spans, {size_mb} MB; built in {load_s if load_s is None else round(load_s)} s")
