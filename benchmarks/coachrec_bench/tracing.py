"""Tracing benchmark: our tracer and store against the OpenTelemetry SDK, measured in one run.

Spans carry 5 attributes and a 200-byte input and output (the issue's protocol). Figures:
caller cost per span (ours, store-backed, block and drop modes; OTel with a BatchSpanProcessor
and an in-memory exporter), what a fast burst loses (ours counts drops; OTel's loss is measured
by counting what reached its exporter), store ingest rate, the last hour of 50,000 spans, and one
trace by id (p50/p99).
"""

from __future__ import annotations

import datetime as dt
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from coachrec.tracing import SpanKind, SpanRecord, Tracer, TraceStore
from coachrec.tracing.model import new_span_id, new_trace_id
from coachrec_bench.results import row, write

PAYLOAD = "x" * 200
ATTRS = {"a1": 1, "a2": "two", "a3": 3.0, "a4": True, "a5": "five"}
DATASET = "synthetic spans: 5 attributes, 200-byte input and output"


def _our_loop(tracer: Tracer, n: int) -> float:
    """Seconds per span for `n` child spans under one request."""
    start = time.perf_counter()
    with tracer.trace_request(user_id="u1"):
        for _ in range(n):
            with tracer.span("step", kind=SpanKind.RANKER, input=PAYLOAD) as s:
                s.set_attribute("a1", 1)
                s.set_attribute("a2", "two")
                s.set_attribute("a3", 3.0)
                s.set_attribute("a4", True)
                s.set_attribute("a5", "five")
                s.set_output(PAYLOAD)
    return (time.perf_counter() - start) / n


def _otel_loop(tracer: Any, n: int) -> float:
    start = time.perf_counter()
    with tracer.start_as_current_span("request"):
        for _ in range(n):
            with tracer.start_as_current_span("step") as s:
                s.set_attribute("input.value", PAYLOAD)
                s.set_attribute("a1", 1)
                s.set_attribute("a2", "two")
                s.set_attribute("a3", 3.0)
                s.set_attribute("a4", True)
                s.set_attribute("a5", "five")
                s.set_attribute("output.value", PAYLOAD)
    return (time.perf_counter() - start) / n


def _otel() -> tuple[Any, Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # SDK defaults: queue 2048, batch 512
    return provider, provider.get_tracer("coachrec_bench"), exporter


def caller_cost(tmp: Path, n: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """Median µs per span over interleaved rounds, so machine load hits both sides alike."""
    block = TraceStore(tmp / "block.duckdb")
    drop = TraceStore(tmp / "drop.duckdb", on_full="drop")
    ours_block, ours_drop = Tracer(store=block), Tracer(store=drop)
    off = Tracer()
    provider, otel, _ = _otel()
    results: dict[str, list[float]] = {"ours_block": [], "ours_drop": [], "ours_off": [], "otel": []}
    _our_loop(ours_block, 2000), _otel_loop(otel, 2000)  # warm-up
    for _ in range(rounds):
        results["ours_block"].append(_our_loop(ours_block, n))
        block.flush()
        results["ours_drop"].append(_our_loop(ours_drop, n))
        drop.flush()
        results["ours_off"].append(_our_loop(off, n))
        results["otel"].append(_otel_loop(otel, n))
        provider.force_flush()
    dropped_in_cost_runs = drop.dropped
    block.close(), drop.close()
    provider.shutdown()
    out = {f"{k}_us_per_span": round(statistics.median(v) * 1e6, 2) for k, v in results.items()}
    out["ours_drop_mode_spans_dropped"] = dropped_in_cost_runs
    return out


def burst(tmp: Path, n: int = 100_000) -> dict[str, float]:
    """A fast burst with default queue sizes: how much each side loses, and ours' loss is counted."""
    store = TraceStore(tmp / "burst.duckdb", on_full="drop")
    _our_loop(Tracer(store=store), n)
    store.flush()
    stats = store.stats()
    stored = store.count()
    store.close()
    provider, otel, exporter = _otel()
    _otel_loop(otel, n)
    provider.force_flush()
    received = len(exporter.get_finished_spans()) - 1  # minus the request span
    provider.shutdown()
    return {
        "burst_spans": n,
        "ours_drop_mode_dropped_counted": stats.dropped,
        "ours_drop_mode_stored": stored - 1,
        "ours_drop_rate": round(stats.dropped / (n + 1), 4),
        "otel_received": received,
        "otel_drop_rate": round(1 - received / n, 4),
    }


def _records(n: int, now_ns: int, spans_per_trace: int = 10) -> tuple[list[SpanRecord], list[str]]:
    """`n` spans in traces of 10, started over the last 50 minutes."""
    records: list[SpanRecord] = []
    trace_ids: list[str] = []
    n_traces = n // spans_per_trace
    attributes = '{"a1":1,"a2":"two","a3":3.0,"a4":true,"a5":"five"}'
    payload = f'"{PAYLOAD}"'
    for t in range(n_traces):
        tid, root = new_trace_id(), new_span_id()
        trace_ids.append(tid)
        start = now_ns - int(3000e9 * (1 - t / n_traces))
        for j in range(spans_per_trace):
            span_id = root if j == 0 else new_span_id()
            records.append(
                SpanRecord(
                    tid,
                    span_id,
                    None if j == 0 else root,
                    f"step{j}",
                    "RANKER",
                    start + j * 1000,
                    start + j * 1000 + 800,
                    "OK",
                    None,
                    payload,
                    payload,
                    attributes,
                    None,
                    None,
                    None,
                    f"u{t % 500}",
                    f"r{t}",
                )
            )
    return records, trace_ids


def store_figures(tmp: Path, n: int = 50_000, ingest_n: int = 200_000) -> dict[str, float]:
    now = time.time_ns()
    records, _ = _records(ingest_n, now)
    store = TraceStore(tmp / "ingest.duckdb")
    gc.collect()
    start = time.perf_counter()
    for record in records:
        store.submit(record)
    store.flush()
    ingest = ingest_n / (time.perf_counter() - start)
    store.close()
    del records

    records, trace_ids = _records(n, now)
    store = TraceStore(tmp / "query.duckdb")
    store.write(records)
    del records
    window = []
    for _ in range(7):
        start = time.perf_counter()
        table = store.spans(since=dt.timedelta(hours=1))
        window.append(time.perf_counter() - start)
    assert table.num_rows == n
    lookups = []
    for tid in random.Random(0).sample(trace_ids, 500):
        start = time.perf_counter()
        assert len(store.trace(tid)) == 10
        lookups.append(time.perf_counter() - start)
    store.close()
    lookups.sort()
    return {
        "ingest_spans_per_s": round(ingest),
        "last_hour_rows": n,
        "last_hour_query_s_median": round(statistics.median(window), 4),
        "trace_by_id_p50_ms": round(lookups[len(lookups) // 2] * 1e3, 3),
        "trace_by_id_p99_ms": round(lookups[int(len(lookups) * 0.99) - 1] * 1e3, 3),
    }


def run() -> list[dict[str, Any]]:
    """Measure everything and return result rows (also written to benchmarks/results/tracing.json)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cost = caller_cost(tmp)
        loss = burst(tmp)
        store = store_figures(tmp)
    return [
        row(
            "tracing/caller-cost",
            DATASET,
            "µs per span in the caller, median of 5 interleaved rounds of 20,000 "
            "spans; OTel SDK: BatchSpanProcessor (defaults) + InMemorySpanExporter",
            cost,
        ),
        row(
            "tracing/burst",
            DATASET,
            "100,000 spans as fast as possible, default queue sizes; ours in drop mode "
            "(block mode never drops); OTel loss = spans missing at its exporter",
            loss,
        ),
        row(
            "tracing/store",
            DATASET,
            "DuckDB file; ingest of 200,000 spans through the writer incl. flush; "
            "last hour of 50,000 spans as Arrow (median of 7); one 10-span trace by id over 500 lookups",
            store,
        ),
    ]


def main() -> list[dict[str, Any]]:
    """Run, write `tracing.json` and print a table."""
    from rich.console import Console
    from rich.table import Table

    rows = run()
    path = write("tracing", rows)
    table = Table(title=f"tracing benchmark → {path}")
    table.add_column("row")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for r in rows:
        for key, value in r["metrics"].items():
            table.add_row(r["name"], key, f"{value:,}" if isinstance(value, (int, float)) else str(value))
    Console().print(table)
    return rows
