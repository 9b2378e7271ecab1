"""OpenTelemetry export: coachrec spans as OTLP, readable by Phoenix, Langfuse or Jaeger.

One conversion, `to_otel_span`, turns a `SpanRecord` (plus any evaluations of it) into an SDK
`ReadableSpan` that keeps our trace id, span id, parent and nanosecond timestamps. Two ways use
it: `export_otlp(store, endpoint)` ships stored traces, and `OTLPSink` sits on a live `Tracer`
next to (or instead of) the store.

Attributes follow the OpenTelemetry GenAI conventions (`gen_ai.operation.name`,
`gen_ai.request.model`, `gen_ai.usage.*`, `gen_ai.retrieval.documents`, evaluations as
`gen_ai.evaluation.result` events) and OpenInference (`openinference.span.kind`, `input.value`,
`output.value`, `llm.token_count.*`, `user.id`), which is what Phoenix reads.
"""

from __future__ import annotations

import atexit
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode

from coachrec import __version__ as _coachrec_version
from coachrec.tracing.model import SpanKind, SpanRecord
from coachrec.tracing.store import TimeLike, TraceStore
from coachrec.tracing.writer import BatchWriter, OnFull, WriterStats

SCOPE = InstrumentationScope("coachrec.tracing", _coachrec_version)

# OpenInference has no RANKER or POLICY kind: a ranker reorders candidates (a RERANKER to
# Phoenix), a policy stage is a step of the chain. Our own kind travels in `coachrec.span.kind`.
OPENINFERENCE_KIND = {
    SpanKind.RETRIEVER.value: "RETRIEVER",
    SpanKind.RERANKER.value: "RERANKER",
    SpanKind.RANKER.value: "RERANKER",
    SpanKind.POLICY.value: "CHAIN",
    SpanKind.LLM.value: "LLM",
    SpanKind.GUARDRAIL.value: "GUARDRAIL",
    SpanKind.TOOL.value: "TOOL",
    SpanKind.CHAIN.value: "CHAIN",
    SpanKind.EVALUATOR.value: "EVALUATOR",
}

# `gen_ai.operation.name` for the kinds the GenAI conventions cover; a span attribute of the
# same name (say "text_completion" on an LLM span) wins.
GENAI_OPERATION = {
    SpanKind.LLM.value: "chat",
    SpanKind.RETRIEVER.value: "retrieval",
    SpanKind.TOOL.value: "execute_tool",
    SpanKind.CHAIN.value: "invoke_workflow",
}

_STATUS = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR, "UNSET": StatusCode.UNSET}
_PRIMITIVES = (str, bool, int, float)


def _attribute_value(value: Any) -> Any:
    """OTLP attributes are primitives or homogeneous primitive lists; anything else goes as JSON."""
    if isinstance(value, _PRIMITIVES):
        return value
    homogeneous = isinstance(value, (list, tuple)) and value and all(type(v) is type(value[0]) for v in value)
    if homogeneous and isinstance(value[0], _PRIMITIVES):
        return list(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _retrieval_documents(output: Any) -> str | None:
    """`gen_ai.retrieval.documents` (a JSON list of {"id", "score"}) from a retriever's output.

    Accepts a list of ids, a list of {"id"/"item", "score"} objects, or {"items": [...],
    "scores": [...]}; returns None for any other shape rather than guessing.
    """
    if isinstance(output, Mapping) and isinstance(output.get("items"), list):
        items, scores = output["items"], output.get("scores")
        if isinstance(scores, list) and len(scores) == len(items):
            return json.dumps([{"id": str(i), "score": s} for i, s in zip(items, scores, strict=False)])
        return json.dumps([{"id": str(i)} for i in items])
    if isinstance(output, list) and output:
        if all(isinstance(d, Mapping) and ("id" in d or "item" in d) for d in output):
            docs = [
                {"id": str(d.get("id", d.get("item"))), **({"score": d["score"]} if "score" in d else {})}
                for d in output
            ]
            return json.dumps(docs)
        if all(isinstance(d, (str, int)) for d in output):
            return json.dumps([{"id": str(d)} for d in output])
    return None


def otel_attributes(record: SpanRecord) -> dict[str, Any]:
    """The OTLP attributes of one span (GenAI + OpenInference + coachrec namespaces)."""
    own = record.attribute_dict()
    attrs: dict[str, Any] = {key: _attribute_value(value) for key, value in own.items() if value is not None}
    attrs["openinference.span.kind"] = OPENINFERENCE_KIND.get(record.kind, "CHAIN")
    attrs["coachrec.span.kind"] = record.kind
    operation = own.get("gen_ai.operation.name") or GENAI_OPERATION.get(record.kind)
    if operation:
        attrs["gen_ai.operation.name"] = operation
    model = own.get("gen_ai.request.model") or own.get("model")
    if model:
        attrs["gen_ai.request.model"] = str(model)
        attrs["llm.model_name"] = str(model)
    if record.input is not None:
        attrs["input.value"] = record.input
        attrs["input.mime_type"] = "application/json"
    if record.output is not None:
        attrs["output.value"] = record.output
        attrs["output.mime_type"] = "application/json"
    if record.input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = record.input_tokens
        attrs["llm.token_count.prompt"] = record.input_tokens
    if record.output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = record.output_tokens
        attrs["llm.token_count.completion"] = record.output_tokens
    if record.input_tokens is not None or record.output_tokens is not None:
        attrs["llm.token_count.total"] = (record.input_tokens or 0) + (record.output_tokens or 0)
    if record.cost is not None:
        attrs["coachrec.cost"] = record.cost
        attrs["llm.cost.total"] = record.cost
    if record.kind == SpanKind.RETRIEVER.value and "gen_ai.retrieval.documents" not in attrs:
        documents = _retrieval_documents(record.output_value())
        if documents is not None:
            attrs["gen_ai.retrieval.documents"] = documents
    if record.user_id is not None:
        attrs["user.id"] = record.user_id
    if record.request_id is not None:
        attrs["coachrec.request_id"] = record.request_id
    if record.error is not None:
        attrs["error.type"] = record.error.split(":", 1)[0]
    return attrs


def _evaluation_event(evaluation: Mapping[str, Any]) -> Event:
    attrs: dict[str, Any] = {"gen_ai.evaluation.name": evaluation["name"]}
    if evaluation.get("score") is not None:
        attrs["gen_ai.evaluation.score.value"] = float(evaluation["score"])
    if evaluation.get("label") is not None:
        attrs["gen_ai.evaluation.score.label"] = evaluation["label"]
    if evaluation.get("explanation") is not None:
        attrs["gen_ai.evaluation.explanation"] = evaluation["explanation"]
    if evaluation.get("evaluator") is not None:
        attrs["coachrec.evaluator"] = evaluation["evaluator"]
    return Event("gen_ai.evaluation.result", attributes=attrs, timestamp=int(evaluation["created_ns"]))


def to_otel_span(record: SpanRecord, resource: Resource, evaluations: Sequence[Mapping[str, Any]] = ()) -> ReadableSpan:
    """One coachrec span as an OpenTelemetry `ReadableSpan`, ids and timestamps preserved."""
    flags = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
    trace_id = int(record.trace_id, 16)
    context = trace_api.SpanContext(trace_id, int(record.span_id, 16), is_remote=False, trace_flags=flags)
    parent = (
        None
        if record.parent_span_id is None
        else trace_api.SpanContext(trace_id, int(record.parent_span_id, 16), is_remote=False, trace_flags=flags)
    )
    return ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=otel_attributes(record),
        events=[_evaluation_event(e) for e in evaluations],
        kind=trace_api.SpanKind.INTERNAL,
        status=Status(_STATUS.get(record.status, StatusCode.UNSET), record.error),
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=SCOPE,
    )


def make_resource(service_name: str = "coachrec", attributes: Mapping[str, Any] | None = None) -> Resource:
    """The OTLP resource; Phoenix files spans under a project named by `openinference.project.name`."""
    return Resource.create(
        {"service.name": service_name, "openinference.project.name": service_name, **(attributes or {})}
    )


def _http_exporter(endpoint: str, headers: Mapping[str, str] | None, timeout: float) -> OTLPSpanExporter:
    """An OTLP/HTTP exporter; `http://host:port` gets the standard `/v1/traces` path appended."""
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    return OTLPSpanExporter(endpoint=url, headers=dict(headers or {}), timeout=timeout)


class OTLPExportError(RuntimeError):
    """The collector did not accept a batch of spans."""


def export_otlp(
    store: TraceStore,
    endpoint: str,
    *,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    trace_ids: Iterable[str] | None = None,
    service_name: str = "coachrec",
    headers: Mapping[str, str] | None = None,
    batch_size: int = 512,
    timeout: float = 10.0,
    exporter: SpanExporter | None = None,
) -> int:
    """Ship stored spans (and their evaluations, as events) to an OTLP/HTTP endpoint.

    Selects by start-time window and/or trace ids; returns the number of spans sent. Raises
    `OTLPExportError` naming the endpoint if the collector refuses a batch.
    """
    store.flush()
    if trace_ids is not None:
        records = [r for tid in trace_ids for r in store.trace(tid)]
    else:
        table = store.spans(since=since, until=until)
        records = [SpanRecord._make(row.values()) for row in table.to_pylist()]
    if not records:
        return 0
    evaluations: dict[str, list[dict[str, Any]]] = {}
    for evaluation in store.evaluations().to_pylist():
        evaluations.setdefault(evaluation["span_id"], []).append(evaluation)
    resource = make_resource(service_name)
    exporter = exporter or _http_exporter(endpoint, headers, timeout)
    try:
        for start in range(0, len(records), batch_size):
            spans = [
                to_otel_span(r, resource, evaluations.get(r.span_id, ())) for r in records[start : start + batch_size]
            ]
            if exporter.export(spans) is not SpanExportResult.SUCCESS:
                raise OTLPExportError(f"OTLP endpoint {endpoint} refused a batch of {len(spans)} spans (see log)")
    finally:
        exporter.shutdown()
    return len(records)


class OTLPSink:
    """A live tracer sink: finished spans go to an OTLP/HTTP collector from a background thread.

    `Tracer(store=store, sinks=[OTLPSink("http://127.0.0.1:6006")])` stores and exports each span.
    Same queue semantics as the store: block when full, or drop and count.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str = "coachrec",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_queue: int = 20_000,
        batch_size: int = 512,
        flush_interval: float = 1.0,
        on_full: OnFull = "drop",
        exporter: SpanExporter | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._resource = make_resource(service_name)
        self._exporter = exporter or _http_exporter(endpoint, headers, timeout)
        self._writer: BatchWriter[SpanRecord] = BatchWriter(
            self._export,
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=flush_interval,
            on_full=on_full,
            name="coachrec-otlp-writer",
        )
        self.submit = self._writer.submit
        atexit.register(self.close)

    def _export(self, batch: Sequence[SpanRecord]) -> None:
        result = self._exporter.export([to_otel_span(r, self._resource) for r in batch])
        if result is not SpanExportResult.SUCCESS:
            raise OTLPExportError(f"OTLP endpoint {self.endpoint} refused {len(batch)} spans")

    def flush(self, timeout: float | None = None) -> bool:
        return self._writer.flush(timeout)

    def stats(self) -> WriterStats:
        """Submitted, exported (`written`), dropped and failed span counts."""
        return self._writer.stats()

    def close(self) -> None:
        """Export what is queued, then shut the exporter down. Idempotent; also runs at exit."""
        if self._writer.closed:
            return
        self._writer.close()
        self._exporter.shutdown()
        atexit.unregister(self.close)
