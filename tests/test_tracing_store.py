"""The trace store: round trips, queries, metrics, evaluations, export and migrations (real DuckDB)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coachrec.tracing import SchemaVersionError, SpanKind, SpanRecord, SpanStatus, Tracer, TraceStore, TraceStoreError
from coachrec.tracing.schema import LATEST_VERSION, current_version, migrate


def _traced_request(tracer: Tracer, user: str, request: str) -> str:
    with tracer.trace_request("recommend", user_id=user, request_id=request, input={"k": 3}) as root:
        with tracer.span("retrieve", kind=SpanKind.RETRIEVER, input={"k": 100}) as s:
            s.set_output({"items": [3, 1, 2], "scores": [0.9, 0.5, 0.1]})
            s.set_attributes({"retriever": "itemknn", "n": 3})
        with tracer.span("explain", kind=SpanKind.LLM, input="why these?") as s:
            s.set_tokens(input=12, output=7)
            s.set_cost(0.002)
            s.set_output("because you liked X")
    assert root.trace_id is not None
    return root.trace_id


def test_round_trip_through_file(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    store = TraceStore(db)
    tid = _traced_request(Tracer(store=store), "u1", "r1")
    store.close()

    reopened = TraceStore(db, read_only=True)
    spans = reopened.trace(tid)
    assert [s.name for s in spans] == ["recommend", "retrieve", "explain"]
    root, retrieve, llm = spans
    assert root.parent_span_id is None and retrieve.parent_span_id == root.span_id == llm.parent_span_id
    assert {s.trace_id for s in spans} == {tid} and len(tid) == 32 and len(root.span_id) == 16
    assert all(s.user_id == "u1" and s.request_id == "r1" and s.status == "OK" for s in spans)
    assert retrieve.kind == "RETRIEVER" and retrieve.input_value() == {"k": 100}
    assert retrieve.output_value() == {"items": [3, 1, 2], "scores": [0.9, 0.5, 0.1]}
    assert retrieve.attribute_dict() == {"retriever": "itemknn", "n": 3}
    assert (llm.input_tokens, llm.output_tokens, llm.cost) == (12, 7, pytest.approx(0.002))
    assert root.start_ns <= retrieve.start_ns <= retrieve.end_ns <= llm.start_ns <= llm.end_ns <= root.end_ns
    assert reopened.trace_id_for_request("r1") == tid
    with pytest.raises(TraceStoreError, match="read-only"):
        reopened.add_span_metrics(root.span_id, {"ndcg@10": 0.5})
    reopened.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_value_round_trips(value: object) -> None:
    store = TraceStore(":memory:")
    with Tracer(store=store).span("step", input=value) as s:
        s.set_output(value)
    store.flush()
    (record,) = store.trace(s.trace_id)
    assert record.input_value() == value and record.output_value() == value
    store.close()


def test_non_finite_numbers_are_stored_as_null() -> None:
    """JSON has no NaN or infinity: a span's non-finite numbers are kept as null, nested too."""
    store = TraceStore(":memory:")
    with Tracer(store=store).span("step", input={"a": float("inf"), "b": [float("-inf"), 1.5]}) as s:
        s.set_output(float("nan"))
    store.flush()
    (record,) = store.trace(s.trace_id)
    assert record.input_value() == {"a": None, "b": [None, 1.5]} and record.output_value() is None
    store.close()


def test_queries_filter_by_every_field(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "q.duckdb")
    tracer = Tracer(store=store)
    t1 = _traced_request(tracer, "alice", "r1")
    t2 = _traced_request(tracer, "bob", "r2")
    with pytest.raises(RuntimeError), tracer.trace_request(user_id="bob", request_id="r3"):
        with tracer.span("guard", kind=SpanKind.GUARDRAIL):
            raise RuntimeError("item 7 violates the genre constraint")
    store.flush()

    assert store.spans(trace_id=t1).num_rows == 3
    assert store.spans(user_id="bob").num_rows == 5
    assert store.spans(kind=SpanKind.LLM).num_rows == 2
    assert store.spans(kind=["RETRIEVER", SpanKind.LLM]).num_rows == 4
    assert store.spans(name="retrieve", user_id="alice").column("trace_id").to_pylist() == [t1]
    errors = store.spans(status=SpanStatus.ERROR).to_pylist()
    assert {e["name"] for e in errors} == {"guard", "request"}
    assert all("violates the genre constraint" in e["error"] for e in errors)
    assert store.spans(since=dt.timedelta(hours=1)).num_rows == 8
    assert store.spans(until=dt.datetime.now() - dt.timedelta(hours=1)).num_rows == 0
    assert store.spans(request_id="r2", columns=["span_id"]).column_names == ["span_id"]
    summary = store.traces(user_id="bob").to_pylist()
    assert [t["request_id"] for t in summary] == ["r3", "r2"] and summary[1]["trace_id"] == t2
    assert summary[0]["errors"] == 2 and summary[1]["input_tokens"] == 12 and summary[1]["root"] == "recommend"
    with pytest.raises(ValueError, match="unknown span kind|is not a valid SpanKind"):
        store.spans(kind="RANKR")
    with pytest.raises(ValueError, match="unknown span columns"):
        store.spans(columns=["nope"])
    store.close()


def test_span_metrics_and_evaluations(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "m.duckdb")
    tid = _traced_request(Tracer(store=store), "u1", "req-9")
    store.flush()  # queries see written spans; flush makes the writer catch up
    retrieve = next(s for s in store.trace(tid) if s.kind == "RETRIEVER")
    store.add_span_metrics(retrieve.span_id, {"precision@10": 0.2, "ndcg@10": 0.41}, protocol="full ranking, clicks")
    metrics = store.span_metrics(request_id="req-9").to_pylist()
    assert {(m["name"], m["value"], m["kind"]) for m in metrics} == {
        ("precision@10", 0.2, "RETRIEVER"),
        ("ndcg@10", 0.41, "RETRIEVER"),
    }
    assert all(m["protocol"] == "full ranking, clicks" and m["trace_id"] == tid for m in metrics)
    eid = store.add_evaluation(retrieve.span_id, "relevance", score=0.8, label="good", evaluator="teacher-1.5b")
    (evaluation,) = store.evaluations(trace_id=tid).to_pylist()
    assert evaluation["evaluation_id"] == eid and evaluation["label"] == "good"
    with pytest.raises(KeyError, match="no span 'missing'"):
        store.add_span_metrics("missing", {"mrr": 1.0})
    with pytest.raises(ValueError, match="finite"):
        store.add_span_metrics(retrieve.span_id, {"mrr": float("nan")})
    with pytest.raises(ValueError, match="score, a label"):
        store.add_evaluation(retrieve.span_id, "relevance")
    store.close()


def test_parquet_export(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "p.duckdb")
    tid = _traced_request(Tracer(store=store), "u1", "r1")
    out = tmp_path / "out dir" / "it's spans.parquet"
    assert store.export_parquet(out) == 3
    table = pq.read_table(out)
    assert set(table.column("trace_id").to_pylist()) == {tid}
    assert table.schema.names == list(SpanRecord._fields)
    with pytest.raises(ValueError, match="table must be"):
        store.export_parquet(out, table="users")
    store.close()


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, target=1) == 1
    con.execute(
        "INSERT INTO spans VALUES ('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331', NULL, 'old', "
        "'CHAIN', 1, 2, 'OK', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'u', 'r')"
    )
    con.close()
    with pytest.raises(TraceStoreError, match="schema version 1"):
        TraceStore(db, read_only=True)
    store = TraceStore(db)
    assert current_version(store._cursor()) == LATEST_VERSION
    (old,) = store.trace("0af7651916cd43dd8448eb211c80319c")
    assert old.name == "old"
    store.add_span_metrics(old.span_id, {"mrr": 1.0})  # a table added by migration 2
    store.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    TraceStore(db).close()
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (?, 0)", [LATEST_VERSION + 1])
    con.close()
    with pytest.raises(SchemaVersionError, match="newer than this coachrec supports"):
        TraceStore(db)


def test_default_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COACHREC_DB", str(tmp_path / "env" / "traces.duckdb"))
    store = TraceStore()
    assert store.path == str(tmp_path / "env" / "traces.duckdb") and Path(store.path).exists()
    store.close()


def test_many_spans_one_trace_lookup_stays_fast(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "big.duckdb")
    tracer = Tracer(store=store)
    for i in range(500):
        with tracer.trace_request(user_id=f"u{i % 7}", request_id=f"r{i}"):
            for j in range(9):
                with tracer.span(f"s{j}", kind=SpanKind.RANKER) as s:
                    s.set_attribute("j", j)
    store.flush()
    assert store.count() == 5000
    tid = store.trace_id_for_request("r250")
    assert tid is not None
    start = time.perf_counter()
    assert len(store.trace(tid)) == 10
    assert time.perf_counter() - start < 0.25  # generous: CI machines are noisy; the bench measures
    store.close()
