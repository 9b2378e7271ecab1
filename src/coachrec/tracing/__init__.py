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

from coachrec.tracing.context import current_span
from coachrec.tracing.model import SpanKind, SpanRecord, SpanStatus
from coachrec.tracing.schema import SchemaVersionError
from coachrec.tracing.span import NoopSpan, Span
from coachrec.tracing.store import TraceStore, TraceStoreError, default_db_path
from coachrec.tracing.tracer import SpanSink, Tracer

__all__ = [
    "NoopSpan",
    "SchemaVersionError",
    "Span",
    "SpanKind",
    "SpanRecord",
    "SpanSink",
    "SpanStatus",
    "TraceStore",
    "TraceStoreError",
    "Tracer",
    "current_span",
    "default_db_path",
]
