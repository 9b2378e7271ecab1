"""OTLP export received by real receivers on loopback.

The fast test runs a small OTLP/HTTP server that decodes the protobuf the exporter really sends
(with `opentelemetry-proto`); the slow one starts Arize Phoenix (from `$COACHREC_PHOENIX_BIN`, or
`phoenix` on PATH) and reads the spans back through its REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the tracing extra: pip install -e '.[tracing]'")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from coachrec.tracing import SpanKind, Tracer, TraceStore
from coachrec.tracing.otlp import OTLPSink, export_otlp


def _value(v: AnyValue) -> Any:
    field = v.WhichOneof("value")
    if field == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, field)


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.received.append(
                        {
                            "path": self.path,
                            "resource": resource,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "events": [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
                        }
                    )
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _record_request(tracer: Tracer) -> str:
    with tracer.trace_request("recommend", user_id="u42", request_id="req-1") as root:
        with tracer.span("retrieve", kind=SpanKind.RETRIEVER, input={"query": "space opera"}) as s:
            s.set_output({"items": [10, 20], "scores": [0.9, 0.4]})
        with tracer.span("rank", kind=SpanKind.RANKER) as s:
            s.set_output([20, 10])
        with tracer.span("rerank-llm", kind=SpanKind.LLM, input="rank these") as s:
            s.set_attributes({"model": "smollm2-135m", "temperature": 0.0, "candidates": [20, 10]})
            s.set_tokens(input=120, output=4)
            s.set_cost(0.0001)
            s.set_output("B A")
        try:
            with tracer.span("guard", kind=SpanKind.GUARDRAIL):
                raise ValueError("duplicate item 20")
        except ValueError:
            pass
    assert root.trace_id is not None
    return root.trace_id


def test_stored_traces_reach_a_real_otlp_receiver(tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]) -> None:
    endpoint, received = receiver
    store = TraceStore(tmp_path / "t.duckdb")
    tid = _record_request(Tracer(store=store))
    store.flush()
    retrieve = next(s for s in store.trace(tid) if s.name == "retrieve")
    store.add_evaluation(retrieve.span_id, "relevance", score=0.25, label="off-topic", explanation="not space opera")

    assert export_otlp(store, endpoint, service_name="coachrec-test") == 5
    by_name = {s["name"]: s for s in received}
    stored = {s.name: s for s in store.trace(tid)}
    assert set(by_name) == set(stored) and all(s["path"] == "/v1/traces" for s in received)
    for name, record in stored.items():
        sent = by_name[name]
        assert (sent["trace_id"], sent["span_id"], sent["parent_span_id"]) == (
            record.trace_id,
            record.span_id,
            record.parent_span_id,
        )
        assert (sent["start_ns"], sent["end_ns"]) == (record.start_ns, record.end_ns)
        assert sent["attributes"]["user.id"] == "u42" and sent["attributes"]["coachrec.request_id"] == "req-1"
        assert sent["resource"]["service.name"] == "coachrec-test"

    attrs = by_name["retrieve"]["attributes"]
    assert attrs["openinference.span.kind"] == "RETRIEVER" and attrs["gen_ai.operation.name"] == "retrieval"
    assert json.loads(attrs["gen_ai.retrieval.documents"]) == [{"id": "10", "score": 0.9}, {"id": "20", "score": 0.4}]
    assert json.loads(attrs["input.value"]) == {"query": "space opera"}
    ((event_name, event),) = by_name["retrieve"]["events"]
    assert event_name == "gen_ai.evaluation.result"
    assert event["gen_ai.evaluation.score.value"] == 0.25 and event["gen_ai.evaluation.score.label"] == "off-topic"

    llm = by_name["rerank-llm"]["attributes"]
    assert llm["gen_ai.operation.name"] == "chat" and llm["gen_ai.request.model"] == "smollm2-135m"
    assert (llm["gen_ai.usage.input_tokens"], llm["gen_ai.usage.output_tokens"]) == (120, 4)
    assert llm["candidates"] == [20, 10] and llm["output.value"] == '"B A"'
    assert by_name["rank"]["attributes"]["openinference.span.kind"] == "RERANKER"
    assert by_name["rank"]["attributes"]["coachrec.span.kind"] == "RANKER"
    assert by_name["guard"]["status"] == 2  # STATUS_CODE_ERROR
    assert by_name["guard"]["attributes"]["error.type"] == "ValueError"
    store.close()


def test_live_sink_exports_while_tracing(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    endpoint, received = receiver
    sink = OTLPSink(endpoint, flush_interval=0.05)
    tid = _record_request(Tracer(sinks=[sink]))
    assert sink.flush(timeout=10)
    assert {s["trace_id"] for s in received} == {tid} and len(received) == 5
    assert sink.stats().written == 5 and sink.stats().dropped == 0
    sink.close()


def test_refused_export_names_the_endpoint(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = TraceStore(tmp_path / "t.duckdb")
    _record_request(Tracer(store=store))
    with pytest.raises(Exception, match=f"127.0.0.1:{port}"):
        export_otlp(store, f"http://127.0.0.1:{port}", timeout=1)
    store.close()


def _phoenix_bin() -> str | None:
    return os.environ.get("COACHREC_PHOENIX_BIN") or shutil.which("phoenix")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(_phoenix_bin() is None, reason="Arize Phoenix not installed (set COACHREC_PHOENIX_BIN)")
def test_phoenix_receives_and_shows_coachrec_traces(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_HOST": "127.0.0.1",
    }
    log = (tmp_path / "phoenix.log").open("w")
    server = subprocess.Popen([_phoenix_bin(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)  # type: ignore[list-item]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "phoenix.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "Phoenix did not start within 120 s"
                time.sleep(0.5)
        store = TraceStore(tmp_path / "t.duckdb")
        tid = _record_request(Tracer(store=store))
        store.flush()
        retrieve = next(s for s in store.trace(tid) if s.name == "retrieve")
        store.add_evaluation(retrieve.span_id, "relevance", score=0.9, label="good")
        assert export_otlp(store, base, service_name="coachrec-phoenix-test") == 5

        spans: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(spans) < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"{base}/v1/projects/coachrec-phoenix-test/spans?limit=100") as r:
                    spans = json.load(r)["data"]
            except urllib.error.HTTPError as exc:  # 404 until Phoenix has created the project
                assert exc.code == 404, exc
        by_name = {s["name"]: s for s in spans}
        assert set(by_name) == {"recommend", "retrieve", "rank", "rerank-llm", "guard"}
        assert {s["context"]["trace_id"] for s in spans} == {tid}
        assert by_name["retrieve"]["span_kind"] == "RETRIEVER"
        assert by_name["retrieve"]["context"]["span_id"] == retrieve.span_id
        assert by_name["rerank-llm"]["span_kind"] == "LLM"
        assert by_name["rerank-llm"]["attributes"]["gen_ai.usage.input_tokens"] == 120
        assert by_name["guard"]["status_code"] == "ERROR"
        assert [e["name"] for e in by_name["retrieve"]["events"]] == ["gen_ai.evaluation.result"]
        store.close()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
