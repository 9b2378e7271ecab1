"""LLM stages of the serving pipeline: a routed one-pass reranker and a grounded explainer.

`attach_llm(pipeline, catalog, config)` inserts `LLMRerank` right after the constraint filter
(so the LLM only ever sees allowed items and the diversity, exploration and guardrail stages
still run on its output) and replaces the `explain` stage by `GroundedExplain`.

Each reranked request records on its RERANKER span the router's decision and signals; the model
call is a child LLM span with `gen_ai.request.model`, `gen_ai.usage.*`, latency, cache hit and
cost. A failing model call is recorded on that span and the request keeps the retriever order.
The explain span records every unsupported claim found (and whether it was dropped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from coachrec.data import Catalog
from coachrec.llm.backend import LLMBackend, LLMError
from coachrec.llm.cache import ResponseCache
from coachrec.llm.cost import TierPrice, usage_attributes
from coachrec.llm.explain import ExplainConfig, GroundedExplainer
from coachrec.llm.factory import load_backend
from coachrec.llm.llama_cpp_backend import LlamaCppConfig
from coachrec.llm.rerank import LLMReranker, RerankConfig, candidate_text
from coachrec.llm.router import Router, RouterConfig, signals
from coachrec.models import BaseRecommender
from coachrec.models.itemknn import ItemKNN
from coachrec.serve.candidates import Candidates, RequestContext
from coachrec.serve.pipeline import Pipeline
from coachrec.serve.retrievers import RecommenderRetriever
from coachrec.serve.stages import AnySpan, Retrieve
from coachrec.tracing import SpanKind, SpanStatus


@dataclass(frozen=True)
class LLMServeConfig:
    """`small`/`escalate`: model specs for `load_backend` (role, registry name, GGUF path or
    URL); `escalate=None` disables escalation. `cache`: sqlite file of the response cache (None:
    in memory). `explain_with_llm`: let the small model phrase reasons (k generations per
    request: slow on CPU, so off by default)."""

    small: str = "small"
    escalate: str | None = None
    router: RouterConfig = RouterConfig()
    rerank: RerankConfig = RerankConfig()
    explain: ExplainConfig = ExplainConfig()
    explain_with_llm: bool = False
    cache: str | None = None
    n_ctx: int = 2048
    prices: Mapping[str, TierPrice] = field(default_factory=lambda: {"small": TierPrice(), "escalate": TierPrice()})


class TierBackends:
    """Backends per tier, opened on first use and shared by the stages (thread-safe)."""

    def __init__(self, loaders: Mapping[str, Callable[[], LLMBackend]]) -> None:
        self._loaders = dict(loaders)
        self._open: dict[str, LLMBackend] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: LLMServeConfig) -> TierBackends:
        cache = ResponseCache(Path(config.cache)) if config.cache else ResponseCache()
        llama = LlamaCppConfig(n_ctx=config.n_ctx)
        specs = {"small": config.small, "escalate": config.escalate}

        def loader(spec: str) -> Callable[[], LLMBackend]:
            return lambda: load_backend(spec, llama=llama, cache=cache)

        return cls({tier: loader(spec) for tier, spec in specs.items() if spec})

    @property
    def tiers(self) -> set[str]:
        return set(self._loaders)

    def get(self, tier: str) -> LLMBackend:
        with self._lock:
            if tier not in self._open:
                if tier not in self._loaders:
                    raise LLMError(f"no backend configured for LLM tier {tier!r}; have {sorted(self._loaders)}")
                self._open[tier] = self._loaders[tier]()
            return self._open[tier]

    def close(self) -> None:
        with self._lock:
            for backend in self._open.values():
                backend.close()
            self._open.clear()


class LLMRerank:
    """Routes the request, then reorders the top candidates with the tier's one-pass reranker.

    The reordered head keeps the head's score values, reassigned in the new order, so later
    stages that read scores (MMR diversity) see the LLM's order on the retriever's scale.
    """

    kind = SpanKind.RERANKER
    waits_on_llm = True

    def __init__(
        self,
        backends: TierBackends,
        router: Router | None = None,
        config: RerankConfig | None = None,
        prices: Mapping[str, TierPrice] | None = None,
        name: str = "llm.rerank",
    ) -> None:
        self.backends = backends
        self.router = router or Router()
        self.config = config or RerankConfig()
        self.prices = dict(prices or {})
        self.name = name
        self._rerankers: dict[str, LLMReranker] = {}
        self.understood_confidence = 0.7
        """A request whose text the `understand` stage read at this confidence or more is routed
        as one without text (the LLM runs only when the candidates' scores are close)."""

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        head = min(len(candidates), self.config.max_candidates)
        if head < 2:
            span.set_attributes({"router.tier": "none", "router.reason": f"{head} candidate(s): nothing to rerank"})
            return candidates
        intent = ctx.intent
        request = intent.request_text if intent is not None and intent.request_text else ctx.context
        # text the understanding stage read with confidence is already in the candidates: the
        # router then treats the request as it would one without text (rerank only if unsure)
        understood = intent is not None and intent.confidence >= self.understood_confidence
        route = self.router.route(signals(candidates.score[:head], len(ctx.history), None if understood else request))
        span.set_attributes(
            {
                "router.tier": route.tier,
                "router.reason": route.reason,
                **{f"router.{k}": v for k, v in route.signals.as_dict().items()},
            }
        )
        if intent is not None:
            span.set_attribute("router.understood", understood)
        if route.tier == "none":
            return candidates
        titles = ctx.catalog.titles
        names = ctx.catalog.index.genre_names
        rows = ctx.catalog.index.genres[candidates.idx[:head]]
        texts = [
            candidate_text(str(titles[i]), [names[g] for g in np.flatnonzero(r) if not names[g].startswith("(")])
            for i, r in zip(candidates.idx[:head].tolist(), rows, strict=False)
        ]
        history = [str(t) for t in titles[ctx.history[-self.config.max_history :]]] if self.config.max_history else []
        with ctx.tracer.span(f"llm.{route.tier}", kind=SpanKind.LLM) as call:
            try:
                reranker = self._reranker(route.tier)
                result = reranker.rerank(history, texts, candidates.score[:head].tolist(), request)
            except LLMError as exc:
                call.record_exception(exc)
                span.set_attribute("llm.fallback", "retriever order kept: " + str(exc))
                return candidates
            usage = result.usage
            if usage is not None:
                cost = self.prices.get(route.tier, TierPrice()).cost(usage)
                call.set_attributes(usage_attributes(usage, route.tier, cost))
                call.set_tokens(usage.input_tokens, usage.output_tokens)
                call.set_cost(cost)
            call.set_attribute("history_used", result.history_used)
            if call.recording:
                call.set_input({"prompt": result.prompt})
                call.set_output(
                    {"order": result.order[:head].tolist(), "logprobs": np.round(result.llm_logprobs, 4).tolist()}
                )
        out = candidates.take(np.concatenate([result.order, np.arange(len(result.order), len(candidates))]))
        out.score = out.score.copy()
        out.score[:head] = np.sort(candidates.score[:head])[::-1]
        span.set_attribute("reranked", head)
        return out

    def _reranker(self, tier: str) -> LLMReranker:
        if tier not in self._rerankers:
            self._rerankers[tier] = LLMReranker(self.backends.get(tier), self.config)
        return self._rerankers[tier]


class GroundedExplain:
    """Per-item reasons from grounded facts, each checked for unsupported claims.

    "Because you watched X" comes from the retriever that contributed most to the item: item-kNN's
    most similar recent history item, or RUM's item-level attention. Explored items keep the
    exploration reason (a fact of the policy, not of the item)."""

    kind = SpanKind.TOOL
    waits_on_llm = True

    def __init__(
        self,
        explainer: GroundedExplainer,
        retrieve: Retrieve | None = None,
        use_llm: bool = False,
        name: str = "explain",
    ) -> None:
        self.explainer = explainer
        self.models: dict[str, BaseRecommender] = {}
        for r in retrieve.retrievers if retrieve is not None else []:
            if isinstance(r, RecommenderRetriever):
                self.models[r.name] = r.model
        self.use_llm = use_llm
        self.name = name

    def __call__(self, ctx: RequestContext, candidates: Candidates, span: AnySpan) -> Candidates:
        if not len(candidates):
            candidates.reasons = []
            return candidates
        because = self._because(ctx, candidates)
        explanations = self.explainer.explain(candidates.idx.tolist(), ctx.history, because, use_llm=self.use_llm)
        reasons = [e.text for e in explanations]
        if candidates.explored is not None:
            for row in np.flatnonzero(candidates.explored):
                reasons[row] = "something new: shown to explore beyond your usual picks"
        unsupported = [
            {
                "item": ctx.catalog.decode(np.array([e.item]))[0],
                "claims": [f"{c.kind}:{c.value}" for c in e.unsupported],
                "action": e.source,
            }
            for e in explanations
            if e.unsupported
        ]
        flagged = [e for row, e in enumerate(explanations) if e.source == "llm-flagged" and reasons[row] == e.text]
        span.set_attributes(
            {
                "explain.sources": {
                    s: sum(e.source == s for e in explanations) for s in {e.source for e in explanations}
                },
                "faithfulness.unsupported": len(unsupported),
            }
        )
        if unsupported:
            span.set_attribute("faithfulness.claims", unsupported)
        if flagged:
            span.set_status(SpanStatus.ERROR, f"{len(flagged)} reason(s) with unsupported claims shown (flag mode)")
        usages = [e.usage for e in explanations if e.usage is not None]
        if usages:
            span.set_tokens(sum(u.input_tokens for u in usages), sum(u.output_tokens for u in usages))
        candidates.reasons = reasons
        return candidates

    def _because(self, ctx: RequestContext, candidates: Candidates) -> dict[int, int]:
        """Item -> the history item its main retriever credits (item-kNN similarity, RUM attention)."""
        out: dict[int, int] = {}
        history = ctx.history[-self.explainer.config.recent :]
        if not len(history) or not self.models:
            return out
        best = candidates.normalized_sources().argmax(axis=1)
        for r, source in enumerate(candidates.source_names):
            model = self.models.get(source)
            rows = np.flatnonzero(best == r)
            if model is None or not len(rows):
                continue
            idx = candidates.idx[rows]
            if isinstance(model, ItemKNN):
                sims = model.sim[history][:, idx].toarray()
                top = sims.argmax(axis=0)
                for j, item in enumerate(idx.tolist()):
                    if sims[top[j], j] > 0:
                        out[item] = int(history[top[j]])
            elif getattr(getattr(model, "config", None), "memory", None) == "item" and hasattr(model, "explain"):
                raw_history = ctx.catalog.decode(history)
                for item, raw in zip(idx.tolist(), ctx.catalog.decode(idx), strict=False):
                    weights = model.explain(raw_history, raw)
                    if weights:
                        out[item] = int(ctx.catalog.items.encode([weights[0][0]])[0])
        return out


def attach_llm(
    pipeline: Pipeline, catalog: Catalog, config: LLMServeConfig | None = None, backends: TierBackends | None = None
) -> TierBackends:
    """Insert the LLM reranker after the constraint filter and swap in the grounded explainer.

    `catalog` is the data catalog the pipeline serves (realigned to the models' items here).
    Returns the tier backends (close them with the service)."""
    config = config or LLMServeConfig()
    backends = backends or TierBackends.from_config(config)
    names = [s.name for s in pipeline.stages]
    if "policy.constraints" not in names or "explain" not in names:
        raise ValueError(
            f"attach_llm needs the standard stages 'policy.constraints' and 'explain'; the pipeline has {names}"
        )
    router = Router(replace(config.router, escalation=config.router.escalation and "escalate" in backends.tiers))
    rerank = LLMRerank(backends, router, config.rerank, config.prices)
    items = pipeline.catalog.items
    aligned = catalog if catalog.items is items else Catalog(catalog.frame, items)
    explainer = GroundedExplainer(aligned, backends.get("small") if config.explain_with_llm else None, config.explain)
    retrieve = next((s for s in pipeline.stages if isinstance(s, Retrieve)), None)
    pipeline.stages.insert(names.index("policy.constraints") + 1, rerank)
    pipeline.stages[pipeline.stages.index(next(s for s in pipeline.stages if s.name == "explain"))] = GroundedExplain(
        explainer, retrieve, use_llm=config.explain_with_llm
    )
    return backends
