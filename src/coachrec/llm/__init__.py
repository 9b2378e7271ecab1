"""The LLM layer: model files, backends (local llama.cpp and OpenAI-compatible HTTP), caching.

    from coachrec.llm import load_backend, ResponseCache
    llm = load_backend("small", cache=ResponseCache())       # after `coachrec models pull small`
    scores = llm.next_token_logprobs(prompt, ["A", "B", "C"])  # one forward pass
    llm.last_usage                                            # tokens and latency for the span

    LLMReranker(llm).rerank(history_titles, candidate_texts)  # one-pass letter reranker
    GroundedExplainer(catalog).explain(items, history)         # fact-checked reasons
    Router().route(signals(scores, len(history), request))     # none / small / escalate
"""

from coachrec.llm.backend import ChatMessage, Completion, LLMBackend, LLMError, LLMUnsupportedError, Usage
from coachrec.llm.cache import CachedBackend, ResponseCache
from coachrec.llm.catalog import CATALOG, ModelSpec, find_spec
from coachrec.llm.factory import load_backend
from coachrec.llm.http_backend import HTTPConfig, OpenAICompatBackend
from coachrec.llm.llama_cpp_backend import LlamaCppBackend, LlamaCppConfig
from coachrec.llm.pull import add_local, download_from_hub, pull
from coachrec.llm.cost import TierPrice, cost_report
from coachrec.llm.explain import ExplainConfig, Explanation, GroundedExplainer
from coachrec.llm.fake import FakeBackend
from coachrec.llm.faithfulness import Claim, ClaimChecker, Grounding
from coachrec.llm.rerank import LLMReranker, RerankConfig, RerankResult
from coachrec.llm.router import Route, Router, RouterConfig, Signals
from coachrec.llm.registry import (
    HashMismatchError,
    ModelEntry,
    ModelRegistry,
    ModelRegistryError,
    coachrec_home,
)

__all__ = [
    "Claim",
    "ClaimChecker",
    "ExplainConfig",
    "Explanation",
    "FakeBackend",
    "Grounding",
    "GroundedExplainer",
    "LLMReranker",
    "RerankConfig",
    "RerankResult",
    "Route",
    "Router",
    "RouterConfig",
    "Signals",
    "TierPrice",
    "cost_report",
    "CATALOG",
    "CachedBackend",
    "ChatMessage",
    "Completion",
    "HTTPConfig",
    "HashMismatchError",
    "LLMBackend",
    "LLMError",
    "LLMUnsupportedError",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "ModelEntry",
    "ModelRegistry",
    "ModelRegistryError",
    "ModelSpec",
    "OpenAICompatBackend",
    "ResponseCache",
    "Usage",
    "add_local",
    "coachrec_home",
    "download_from_hub",
    "find_spec",
    "load_backend",
    "pull",
]
