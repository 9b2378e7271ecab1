"""The router follows its thresholds; spans carry tokens, cost and cache hits; report cost sums them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from coachrec.llm.cache import CachedBackend, ResponseCache
from coachrec.llm.cost import TierPrice, cost_report
from coachrec.llm.fake import FakeBackend
from coachrec.llm.router import Router, RouterConfig, Signals, signals
from coachrec.serve import RecommendRequest
from coachrec.serve.llm_stages import LLMServeConfig
from coachrec.tracing import SpanKind
from llm_helpers import llm_pipeline, synthetic

CONFIG = RouterConfig(skip_margin=0.3, escalate_margin=0.05, short_history=4)


@pytest.mark.parametrize(
    ("margin", "history", "text", "tier"),
    [
        (0.30, 10, False, "none"),  # confident retriever, nothing typed
        (0.29, 10, False, "small"),  # just under the skip threshold
        (0.90, 10, True, "small"),  # free text always reaches a model
        (0.04, 10, True, "escalate"),  # free text and an unsure retriever
        (0.05, 10, True, "small"),  # margin at the escalation threshold is not unsure
        (0.04, 3, False, "escalate"),  # short history and unsure
        (0.04, 4, False, "small"),  # history at the threshold is not short
    ],
)
def test_route_follows_thresholds(margin, history, text, tier):
    assert Router(CONFIG).route(Signals(margin, history, text)).tier == tier


def test_without_an_escalation_tier_the_small_model_answers():
    route = Router(RouterConfig(escalation=False)).route(Signals(0.0, 1, True))
    assert route.tier == "small" and "no escalation tier" in route.reason


def test_signals_margin_and_config_validation():
    assert signals([2.0, 1.5, 1.0], 7, " ").margin == pytest.approx(0.25)
    assert signals([2.0], 0, "hi").free_text and signals([2.0], 0, None).margin == 1.0
    with pytest.raises(ValueError, match="escalate_margin"):
        RouterConfig(skip_margin=0.1, escalate_margin=0.2)


def test_pipeline_routes_records_usage_and_cache_hits_skip_the_model(tmp_path):
    data = synthetic()
    small, big = FakeBackend("fake-small"), FakeBackend("fake-big")
    cached_small = CachedBackend(small, ResponseCache())
    prices = {
        "small": TierPrice(usd_per_1m_input=100.0, usd_per_second=0.0),
        "escalate": TierPrice(usd_per_1m_input=1000.0, usd_per_second=0.0),
    }
    config = LLMServeConfig(router=RouterConfig(skip_margin=1.0, escalate_margin=1.0, short_history=0), prices=prices)
    pipeline, store, _ = llm_pipeline(data, config, small=cached_small, escalate=big)
    plain = [pipeline.recommend(RecommendRequest(user_id="2", k=5)) for _ in range(2)]
    typed = pipeline.recommend(RecommendRequest(user_id="2", k=5, context="something scary"))
    assert small.calls == 1 and big.calls == 1  # the repeated request was a cache hit
    store.flush()

    def llm_span(result):
        return next(s for s in store.trace(result.trace_id) if s.kind == SpanKind.LLM.value)

    first, hit, escalated = llm_span(plain[0]), llm_span(plain[1]), llm_span(typed)
    a = first.attribute_dict()
    assert (
        a["coachrec.llm.tier"] == "small" and a["gen_ai.request.model"] == "fake-small" and not a["coachrec.llm.cached"]
    )
    assert first.input_tokens == a["gen_ai.usage.input_tokens"] > 100 and first.cost == pytest.approx(
        first.input_tokens * 100 / 1e6
    )
    assert hit.attribute_dict()["coachrec.llm.cached"] and hit.cost == 0.0
    assert (
        escalated.attribute_dict()["coachrec.llm.tier"] == "escalate"
        and escalated.attribute_dict()["gen_ai.request.model"] == "fake-big"
    )
    rerank = next(s for s in store.trace(typed.trace_id) if s.name == "llm.rerank").attribute_dict()
    assert rerank["router.tier"] == "escalate" and rerank["router.free_text"] is True

    report = {r.tier: r for r in cost_report(store)}
    assert report["small"].requests == 2 and report["small"].calls == 2 and report["small"].cache_hits == 1
    assert report["escalate"].input_tokens == escalated.input_tokens
    assert report["small"].cost_usd == pytest.approx(first.cost)


def test_report_cost_cli(tmp_path):
    from coachrec.cli import app
    from coachrec.tracing import Tracer, TraceStore

    db = tmp_path / "t.duckdb"
    store = TraceStore(db)
    tracer = Tracer(store)
    with tracer.trace_request("recommend"):
        with tracer.span("llm.rerank", kind=SpanKind.RERANKER, attributes={"router.tier": "none"}):
            pass
    store.close()
    out = CliRunner().invoke(app, ["report", "cost", "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [
        {
            "tier": "none",
            "requests": 1,
            "calls": 0,
            "cache_hits": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "latency_s": 0.0,
            "latency_p50_ms": 0.0,
            "latency_p95_ms": 0.0,
            "cost_usd": 0.0,
        }
    ]


def test_a_failing_model_keeps_the_retriever_order_and_marks_the_span():
    from coachrec.llm import LLMError

    class Broken(FakeBackend):
        def next_token_logprobs(self, prompt, candidates):
            raise LLMError("model crashed")

    data = synthetic()
    config = LLMServeConfig(router=RouterConfig(skip_margin=1.0))
    pipeline, store, _ = llm_pipeline(data, config, small=Broken("broken"))
    result = pipeline.recommend(RecommendRequest(user_id="3", k=5))
    store.flush()
    spans = {s.name: s for s in store.trace(result.trace_id)}
    assert spans["llm.small"].status == "ERROR" and "model crashed" in spans["llm.small"].error
    assert spans["llm.rerank"].output_value()["items"] == spans["policy.constraints"].output_value()["items"]
    assert len(result.items) == 5
