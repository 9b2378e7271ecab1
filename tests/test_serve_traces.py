"""Traces cannot hurt feedback or callers: a poison span fails alone, a full queue waits a bounded
time then drops and counts, retention bounds the store, feedback lives in its own file."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence

from coachrec.serve.feedback import FeedbackEvent, feedback_path_for
from coachrec.tracing import SpanKind
from coachrec.tracing.model import SpanRecord
from coachrec.tracing.store import Retention, TraceStore
from coachrec.tracing.writer import BatchWriter
from serve_helpers import synthetic_service


def span(i: int, *, start_ns: int | None = None, name: str = "s") -> SpanRecord:
    start = time.time_ns() if start_ns is None else start_ns
    return SpanRecord(
        f"t{i}", f"s{i}", None, name, SpanKind.CHAIN.value, start, start + 1, "OK",
        None, None, None, None, None, None, None, "u", f"r{i}",
    )  # fmt: skip


def test_a_poison_span_fails_alone_and_the_rest_of_its_batch_lands(tmp_path) -> None:
    service = synthetic_service(tmp_path)
    try:
        store = service.store
        for i in range(20):
            store.submit(span(i, name="bad\ud800name" if i == 7 else "s"))  # not encodable as UTF-8
        store.flush()
        stats = store.stats()
        assert stats.failed == 1 and stats.written == 20 - 1 + 0 and "UnicodeEncodeError" in (stats.last_error or "")
        assert store.count() == 19 and not store.trace("t7") and store.trace("t8")
        health = service.health()
        assert health["status"] == "degraded" and "failed (1)" in health["problem"]
    finally:
        service.close()


def test_a_full_queue_waits_a_bounded_time_then_drops_and_counts() -> None:
    release = threading.Event()

    def stuck(batch: Sequence[int]) -> None:
        release.wait(10)

    writer: BatchWriter[int] = BatchWriter(stuck, max_queue=2, batch_size=2, flush_interval=0.01, max_wait=0.2)
    try:
        writer.submit(0)
        writer.submit(1)  # a full batch: the thread takes it and is stuck in the sink
        time.sleep(0.1)
        writer.submit(2)
        writer.submit(3)  # the queue is full again
        t0 = time.monotonic()
        assert writer.submit(4) is False  # waited for room, none came: dropped, not blocked forever
        waited = time.monotonic() - t0
        assert 0.15 <= waited < 2.0
        stats = writer.stats()
        assert stats.dropped == 1 and stats.blocked == 1 and stats.troubled_since(60)
    finally:
        release.set()
        writer.close()
    assert writer.stats().written == 4


def test_retention_deletes_spans_by_age_and_count(tmp_path) -> None:
    store = TraceStore(tmp_path / "t.duckdb", retention=Retention(max_age=dt.timedelta(days=1), max_spans=5))
    now = time.time_ns()
    day = 86_400 * 10**9
    store.write([span(i, start_ns=now - 3 * day + i) for i in range(3)])  # too old
    store.write([span(10 + i, start_ns=now - 1000 + i) for i in range(8)])  # recent; 3 over the count
    store.add_span_metrics("s10", {"ndcg@10": 0.5})
    assert store.apply_retention() == 6
    assert store.count() == 5 and store.deleted == 6
    kept = sorted(store.spans(columns=["span_id"])["span_id"].to_pylist())
    assert kept == [f"s{10 + i}" for i in range(3, 8)]  # the newest five
    assert store.span_metrics(span_id="s10").num_rows == 0  # its metrics went with it
    store.close()


def test_feedback_lives_in_its_own_file_beside_the_traces(tmp_path) -> None:
    service = synthetic_service(tmp_path)
    try:
        assert service.feedback.path == feedback_path_for(service.store.path) == str(tmp_path / "t.feedback.duckdb")
        service.record_feedback([FeedbackEvent("r", "1", "click", position=0)])
        assert service.feedback.count() == 1
    finally:
        service.close()
    import duckdb

    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "spans" in tables and "serve_feedback" not in tables


def test_feedback_an_older_version_kept_in_the_trace_file_is_adopted_once(tmp_path) -> None:
    from coachrec.serve import FeedbackLog
    from coachrec.serve.service import adopt_legacy_feedback

    store = TraceStore(tmp_path / "t.duckdb")
    legacy = FeedbackLog(store.path)  # where feedback lived before it had its own file
    ids = legacy.append([FeedbackEvent("r", "1", "click", position=0), FeedbackEvent("r", "2", "rating", value=4.0)])
    feedback = FeedbackLog(feedback_path_for(store.path))
    assert adopt_legacy_feedback(store, feedback) == 2
    assert sorted(feedback.events("r")["event_id"].to_pylist()) == sorted(ids)
    assert adopt_legacy_feedback(store, feedback) == 0  # once: the file is no longer empty
    feedback.close()
    legacy.close()
    store.close()
