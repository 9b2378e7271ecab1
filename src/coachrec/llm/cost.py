"""What an LLM call costs, and the per-tier sums `coachrec report cost` prints.

Hosted endpoints charge per token; a local model costs the CPU time it holds. `TierPrice` has
both, so one formula covers either: tokens times their price plus seconds times the compute
price. The defaults are assumptions to be replaced by the deployment's own figures: local
tiers priced at $0.05 per core-hour for 2 cores, no per-token charge. A cache hit costs nothing.

Every LLM call span carries `coachrec.llm.tier`, `gen_ai.request.model`, `gen_ai.usage.*`,
`coachrec.llm.latency_s`, `coachrec.llm.cached` and the cost column; the rerank stage span
carries the router's decision (`router.tier`), so requests routed to no LLM are counted too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from coachrec.llm.backend import Usage
from coachrec.tracing import SpanKind, TraceStore

TIER_ATTRIBUTE = "coachrec.llm.tier"
ROUTER_ATTRIBUTE = "router.tier"


@dataclass(frozen=True)
class TierPrice:
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0
    usd_per_second: float = 2 * 0.05 / 3600
    """Compute held by the call (local models): 2 cores at $0.05 per core-hour by default."""

    def cost(self, usage: Usage) -> float:
        if usage.cached:
            return 0.0
        return (
            usage.input_tokens * self.usd_per_1m_input / 1e6
            + usage.output_tokens * self.usd_per_1m_output / 1e6
            + usage.latency_s * self.usd_per_second
        )


def usage_attributes(usage: Usage, tier: str, cost: float) -> dict[str, Any]:
    """The span attributes of one LLM call (OpenTelemetry GenAI names where they exist)."""
    return {
        "gen_ai.request.model": usage.model,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "coachrec.llm.operation": usage.operation,
        "coachrec.llm.reused_input_tokens": usage.reused_input_tokens,
        "coachrec.llm.latency_s": round(usage.latency_s, 6),
        "coachrec.llm.cached": usage.cached,
        "coachrec.llm.cost_usd": cost,
        TIER_ATTRIBUTE: tier,
    }


@dataclass
class TierCost:
    tier: str
    requests: int = 0
    """Requests the router sent to this tier (from the rerank stage spans)."""
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def cost_report(store: TraceStore, since: timedelta | None = None) -> list[TierCost]:
    """Tokens, latency and cost per tier, summed over LLM call spans in the store, plus the
    number of requests the router sent to each tier ("none" included)."""
    store.flush()
    rows: dict[str, TierCost] = {}
    latencies: dict[str, list[float]] = {}
    calls = store.spans(
        kind=SpanKind.LLM, since=since, columns=["attributes", "input_tokens", "output_tokens", "cost"]
    ).to_pylist()
    for span in calls:
        attrs = _attrs(span["attributes"])
        tier = attrs.get(TIER_ATTRIBUTE)
        if tier is None:
            continue
        row = rows.setdefault(str(tier), TierCost(str(tier)))
        row.calls += 1
        row.cache_hits += bool(attrs.get("coachrec.llm.cached"))
        row.input_tokens += int(span["input_tokens"] or 0)
        row.output_tokens += int(span["output_tokens"] or 0)
        row.cost_usd += float(span["cost"] or 0.0)
        latency = float(attrs.get("coachrec.llm.latency_s", 0.0))
        row.latency_s += latency
        latencies.setdefault(str(tier), []).append(latency)
    routed = store.spans(kind=SpanKind.RERANKER, since=since, columns=["attributes"]).to_pylist()
    for span in routed:
        tier = _attrs(span["attributes"]).get(ROUTER_ATTRIBUTE)
        if tier is not None:
            rows.setdefault(str(tier), TierCost(str(tier))).requests += 1
    for tier, values in latencies.items():
        ms = np.asarray(values) * 1e3
        rows[tier].latency_p50_ms = float(np.percentile(ms, 50))
        rows[tier].latency_p95_ms = float(np.percentile(ms, 95))
    return sorted(rows.values(), key=lambda r: r.tier)


def _attrs(text: str | None) -> Mapping[str, Any]:
    return {} if not text else json.loads(text)
