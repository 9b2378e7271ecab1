"""Tracing: every request is a trace of spans, stored in DuckDB and exportable over OTLP.

    from coachrec.tracing import SpanKind, Tracer, TraceStore

    store = TraceStore()                       # $COACHREC_DB or .coachrec/traces.duckdb
    tracer = Tracer(store=store, sample_rate=1.0)
    with tracer.trace_request(user_id="u1") as root:
        with tracer.span("retrieve", kind=SpanKind.RETRIEVER, input={"k": 100}) as s:
            s.set_output([1, 2, 3])
            s.set_attribute("retriever", "sasrec")
    store.flush()
    store.trace(root.trace_id)                 # list[SpanRecord]

OTLP export lives in `coachrec.tracing.otlp` (it needs the `tracing` extra's OpenTelemetry SDK).
"""

from coachrec.tracing.context import current_span, in_current_context
from coachrec.tracing.model import SpanKind, SpanRecord, SpanStatus, new_span_id, new_trace_id
from coachrec.tracing.schema import LATEST_VERSION, SchemaVersionError
from coachrec.tracing.span import NoopSpan, SampledOutSpan, Span
from coachrec.tracing.store import TraceStore, TraceStoreError, default_db_path
from coachrec.tracing.tracer import SpanSink, Tracer
from coachrec.tracing.writer import WriterClosedError, WriterStats

__all__ = [
    "LATEST_VERSION",
    "NoopSpan",
    "SampledOutSpan",
    "SchemaVersionError",
    "Span",
    "SpanKind",
    "SpanRecord",
    "SpanSink",
    "SpanStatus",
    "TraceStore",
    "TraceStoreError",
    "Tracer",
    "WriterClosedError",
    "WriterStats",
    "current_span",
    "default_db_path",
    "in_current_context",
    "new_span_id",
    "new_trace_id",
]
