"""The tracer: context propagation, sampling, errors, the no-op path and the writer's queue policy."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from coachrec.tracing import NoopSpan, SpanKind, SpanRecord, Tracer, TraceStore, current_span
from coachrec.tracing.context import in_current_context
from coachrec.tracing.writer import BatchWriter, WriterClosedError


class ListSink:
    """Collects records synchronously (a real sink for tracer-only tests)."""

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []

    def submit(self, record: SpanRecord) -> bool:
        self.records.append(record)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True


def test_nesting_and_decorator() -> None:
    sink = ListSink()
    tracer = Tracer(sinks=[sink])

    @tracer.trace(kind=SpanKind.RANKER)
    def rank(items: list[int], k: int = 2) -> list[int]:
        assert current_span() is not None and current_span().name.endswith("rank")  # type: ignore[union-attr]
        return sorted(items)[:k]

    with tracer.trace_request(user_id="u", request_id="r") as root:
        assert rank([3, 1, 2]) == [1, 2]
    assert current_span() is None
    ranked, request = sink.records
    assert ranked.parent_span_id == root.span_id and ranked.kind == "RANKER"
    assert ranked.input_value() == {"items": [3, 1, 2]} and ranked.output_value() == [1, 2]
    assert request.name == "request" and request.request_id == "r"


def test_threads_with_copied_context() -> None:
    sink = ListSink()
    tracer = Tracer(sinks=[sink])

    def work(i: int) -> None:
        with tracer.span(f"worker-{i}", kind=SpanKind.RETRIEVER):
            pass

    with tracer.trace_request() as root, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(4)]
        [f.result() for f in futures]
        pool.submit(in_current_context(work), 9).result()
        pool.submit(work, 99).result()  # no context: a trace of its own
    workers = {r.name: r for r in sink.records if r.name.startswith("worker")}
    assert all(workers[f"worker-{i}"].parent_span_id == root.span_id for i in (0, 1, 2, 3, 9))
    assert workers["worker-99"].parent_span_id is None and workers["worker-99"].trace_id != root.trace_id


def test_asyncio_tasks_inherit_context() -> None:
    sink = ListSink()
    tracer = Tracer(sinks=[sink])

    @tracer.trace(kind=SpanKind.LLM)
    async def generate(prompt: str) -> str:
        await asyncio.sleep(0.001)
        return prompt.upper()

    async def request(user: str) -> str | None:
        with tracer.trace_request(user_id=user) as root:
            results = await asyncio.gather(*(asyncio.create_task(generate(user + str(i))) for i in range(3)))
            assert results[0] == user.upper() + "0"
            return root.span_id

    async def main() -> list[str | None]:
        return await asyncio.gather(request("a"), request("b"))

    roots = asyncio.run(main())
    for root_id, user in zip(roots, "ab", strict=False):
        children = [r for r in sink.records if r.parent_span_id == root_id]
        assert len(children) == 3 and {r.user_id for r in children} == {user}


def test_exception_sets_error_and_is_reraised() -> None:
    sink = ListSink()
    tracer = Tracer(sinks=[sink])
    with pytest.raises(KeyError), tracer.span("policy", kind=SpanKind.POLICY):
        raise KeyError("genre")
    (record,) = sink.records
    assert record.status == "ERROR" and record.error == "KeyError: 'genre'"
    with tracer.span("guard", kind=SpanKind.GUARDRAIL) as s:
        s.set_status("ERROR", "2 items failed the year constraint")
    assert sink.records[-1].status == "ERROR" and "year" in (sink.records[-1].error or "")


def test_sampling_is_per_trace() -> None:
    sink = ListSink()
    tracer = Tracer(sinks=[sink], sample_rate=0.3, seed=7)
    kept = 0
    for _ in range(1000):
        with tracer.trace_request(request_id="r") as root:
            assert root.request_id == "r"
            with tracer.span("child") as child:
                assert child.recording == root.recording
        kept += root.recording
    assert 230 < kept < 370 and len(sink.records) == 2 * kept
    none = Tracer(sinks=[sink], sample_rate=0.0)
    with none.trace_request() as root, none.span("x") as s:
        assert isinstance(s, NoopSpan) and not root.recording


def test_off_tracer_is_noop_and_cheap() -> None:
    tracer = Tracer()  # no store, no sinks
    assert not tracer.enabled
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        with tracer.span("x", kind=SpanKind.RANKER) as s:
            s.set_attribute("a", 1)
            s.set_output([1, 2])
    per_span_us = (time.perf_counter() - start) / n * 1e6
    assert per_span_us < 5, per_span_us


def test_unserializable_values_are_recorded_visibly() -> None:
    import numpy as np

    sink = ListSink()
    with Tracer(sinks=[sink]).span("s", input=np.arange(3)) as s:
        s.set_output({"obj": object(), "score": np.float32(0.5)})
    record = sink.records[0]
    assert record.input_value() == [0, 1, 2]
    output = record.output_value()
    assert output["score"] == 0.5 and output["obj"]["__repr__"].startswith("<object object")


def _slow_sink(delay: float, written: list[int]) -> callable[[Sequence[int]], None]:  # type: ignore[valid-type]
    def sink(batch: Sequence[int]) -> None:
        time.sleep(delay)
        written.extend(batch)

    return sink


def test_drop_mode_counts_every_drop() -> None:
    written: list[int] = []
    writer: BatchWriter[int] = BatchWriter(_slow_sink(0.05, written), max_queue=100, batch_size=50, on_full="drop")
    accepted = sum(writer.submit(i) for i in range(5_000))
    writer.flush()
    stats = writer.stats()
    assert stats.submitted == 5_000 and stats.dropped == 5_000 - accepted > 0
    assert stats.written == len(written) == accepted and stats.queued == 0
    writer.close()
    with pytest.raises(WriterClosedError):
        writer.submit(1)


def test_block_mode_loses_nothing() -> None:
    written: list[int] = []
    writer: BatchWriter[int] = BatchWriter(_slow_sink(0.01, written), max_queue=100, batch_size=50, on_full="block")
    threads = [
        threading.Thread(target=lambda k=k: [writer.submit(k * 1000 + i) for i in range(1000)]) for k in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    stats = writer.stats()
    assert sorted(written) == sorted(k * 1000 + i for k in range(3) for i in range(1000))
    assert stats.dropped == 0 and stats.blocked > 0


def test_failed_batches_are_counted() -> None:
    def broken(batch: Sequence[int]) -> None:
        raise OSError("disk full")

    writer: BatchWriter[int] = BatchWriter(broken, batch_size=10)
    for i in range(25):
        writer.submit(i)
    writer.flush()
    stats = writer.stats()
    assert stats.failed == 25 and stats.written == 0 and stats.last_error == "OSError: disk full"
    writer.close()


def test_store_drop_mode_exposes_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = TraceStore(tmp_path / "d.duckdb", max_queue=50, batch_size=50, on_full="drop")
    tracer = Tracer(store=store)
    for _ in range(20_000):
        with tracer.span("burst"):
            pass
    store.flush()
    stats = store.stats()
    assert store.count() + store.dropped == 20_000 == stats.submitted
    store.close()
